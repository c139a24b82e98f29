"""Issue #16 fault injection in real processes: racing applies (a pause injected between check and write),
concurrent reverts, a busy lock, kill -9 and SIGTERM at random times, a full disk (a size-limited tmpfs, as
root), a failing rename. Afterwards every file is Suite2p's / CaImAn's original or a curated file with a
verified backup, and a revert gives the original back byte for byte."""
import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tree_hashes

from roicurate import RoicurateError
from roicurate.safeio import NothingToRevert
from roicurate_plugins.caiman import CaimanSource
from roicurate_plugins.suite2p import Suite2pSource
from test_caiman import EVALUATED, sha

WRITER = Path(__file__).with_name("_safety_writer.py")
ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"suite2p": Suite2pSource(), "caiman": CaimanSource()}


def start(op, kind, path, seed=0, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **{k: str(v) for k, v in env.items()})
    return subprocess.Popen([sys.executable, str(WRITER), op, kind, str(path), str(seed)], env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


@pytest.fixture(params=["suite2p", "caiman"])
def unit(request, copy_dataset, datasets, tmp_path):
    """(kind, path, folder) of a fresh copy: a suite2p/ folder with two planes + combined/, or a CaImAn file."""
    if request.param == "suite2p":
        path = copy_dataset("sim/s2p_sim2/suite2p")
        return "suite2p", path, path
    path = tmp_path / "data" / "cnmf_refit_evaluated.hdf5"
    path.parent.mkdir()
    shutil.copyfile(datasets / EVALUATED, path)
    return "caiman", path, path.parent


def wait_until_locked(folder, timeout=30):
    """Return once another process holds roicurate's lock on ``folder`` (a writer is inside its pause)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                time.sleep(0.05)
            except BlockingIOError:
                return
    finally:
        os.close(fd)
    raise AssertionError(f"no writer took the lock on {folder}")


def temps(folder):
    return [p for p in Path(folder).rglob("*.tmp")]


def assert_original_after_revert(kind, path, folder, before):
    try:
        SOURCES[kind].revert(path)
    except NothingToRevert:
        pass
    assert not temps(folder)
    assert tree_hashes(folder) == before


# ---- races (item 3) -----------------------------------------------------------------------------------------
def test_two_applies_race_and_revert_restores_the_original(unit):
    kind, path, folder = unit
    before = tree_hashes(folder)
    a = start("apply", kind, path, 1, ROICURATE_TEST_PAUSE_AFTER_CHECK=0.6)
    b = start("apply", kind, path, 2, ROICURATE_TEST_PAUSE_AFTER_CHECK=0.6)
    for p in (a, b):
        rc, out, err = finish(p)
        assert rc == 0, err                    # the second one waited for the lock, then found our own write
    assert_original_after_revert(kind, path, folder, before)


def test_the_losing_run_says_busy(unit):
    kind, path, folder = unit
    before = tree_hashes(folder)
    a = start("apply", kind, path, 1, ROICURATE_TEST_PAUSE_AFTER_CHECK=1.5)
    wait_until_locked(folder / "plane0" if kind == "suite2p" else folder)
    b = start("apply", kind, path, 2, ROICURATE_LOCK_WAIT=0.2)
    rc, out, err = finish(b)
    assert rc == 1 and "busy" in err and len(err.strip().splitlines()) == 1, err
    assert finish(a)[0] == 0
    assert_original_after_revert(kind, path, folder, before)


def test_concurrent_reverts(unit):
    kind, path, folder = unit
    before = tree_hashes(folder)
    assert finish(start("apply", kind, path))[0] == 0
    procs = [start("revert", kind, path, ROICURATE_TEST_PAUSE_AFTER_CHECK=0.5) for _ in range(2)]
    outs = [finish(p) for p in procs]
    assert all(rc == 0 for rc, _, _ in outs), outs
    assert sum("nothing to revert" in out for _, out, _ in outs) == 1, outs
    assert tree_hashes(folder) == before and not temps(folder)


# ---- kill -9 and SIGTERM at random times (items 7, 9) ----------------------------------------------------------
def test_kill_9_at_random_times(unit):
    kind, path, folder = unit
    before = tree_hashes(folder)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    for i in range(4):
        p = start("loop", kind, path, i)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        p.kill()
        p.communicate()
        # the next run cleans the dead run's temp files, verifies, and restores the original byte for byte
        try:
            SOURCES[kind].revert(path)
        except NothingToRevert:
            pass
        except RoicurateError as e:
            pytest.fail(f"seed {seed}, kill {i}: {e}")
        assert not temps(folder), f"seed {seed}, kill {i}"
        assert tree_hashes(folder) == before, f"seed {seed}, kill {i}"


def test_sigterm_cleans_up(unit):
    kind, path, folder = unit
    before = tree_hashes(folder)
    a = start("apply", kind, path, 1, ROICURATE_TEST_PAUSE_AFTER_CHECK=5)
    wait_until_locked(folder / "plane0" if kind == "suite2p" else folder)
    a.send_signal(signal.SIGTERM)
    rc, out, err = finish(a)
    assert rc == 1 and "interrupted by SIGTERM" in err and len(err.strip().splitlines()) == 1, err
    assert tree_hashes(folder) == before and not temps(folder)


# ---- a failing write is undone (item 8) -----------------------------------------------------------------------
def test_failed_rename_undoes_the_backup_and_record(copy_dataset, monkeypatch):
    plane = copy_dataset("sim/s2p_sim2/suite2p/plane0")
    src = SOURCES["suite2p"]
    rs = src.read(plane)
    before = tree_hashes(plane)
    real = os.replace

    def fail_on_iscell(a, b):                  # the record and the backup are in place when iscell.npy fails
        if Path(b).name == "iscell.npy":
            raise OSError(28, "No space left on device", str(b))
        return real(a, b)
    monkeypatch.setattr(os, "replace", fail_on_iscell)
    from test_suite2p import curation_for
    with pytest.raises(RoicurateError) as e:
        src.write(plane, rs, curation_for(34))
    monkeypatch.undo()
    assert "No space left" in str(e.value) and "nothing changed" in str(e.value) and "\n" not in str(e.value)
    assert tree_hashes(plane) == before


# ---- a full disk: a size-limited tmpfs (root only) -------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a size-limited tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def fill(folder, leave):
    """Fill the disk until only about ``leave`` bytes are free."""
    with open(folder / "filler", "wb") as f:
        chunk = b"\0" * (1 << 16)
        while True:
            st = os.statvfs(folder)
            if st.f_bavail * st.f_frsize <= leave + len(chunk):
                break
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break


@pytest.mark.parametrize("kind", ["suite2p", "caiman"])
def test_disk_full_is_one_line_and_changes_nothing(kind, small_disk, datasets):
    if kind == "suite2p":
        path = small_disk / "plane0"
        shutil.copytree(datasets / "sim/s2p_sim2/suite2p/plane0", path)
        for f in path.iterdir():
            os.chmod(f, 0o644)
    else:
        path = small_disk / "cnmf_refit_evaluated.hdf5"
        shutil.copyfile(datasets / EVALUATED, path)
        os.chmod(path, 0o644)
    fill(small_disk, 0 if kind == "suite2p" else 6 << 20)     # CaImAn: room for less than one copy
    before = tree_hashes(small_disk)
    rc, out, err = finish(start("apply", kind, path))
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "free space" in err, (rc, err)   # not SIGSEGV (139)
    assert tree_hashes(small_disk) == before and not temps(small_disk)
    (small_disk / "filler").unlink()
    original = sha(path / "iscell.npy" if kind == "suite2p" else path)
    assert finish(start("apply", kind, path))[0] == 0
    SOURCES[kind].revert(path)
    assert sha(path / "iscell.npy" if kind == "suite2p" else path) == original
