"""Issue #16 fault injection in real processes running the real command line (``python -m roicurate apply`` /
``revert`` with a small real model, the code path users run): racing applies (a pause injected between check and
write), concurrent reverts, a busy lock, kill -9 at seeded random steps of the write sequence and SIGTERM, a full disk
(a size-limited tmpfs, as root), a failing rename. Afterwards every file is Suite2p's / CaImAn's original or a
curated file with a verified backup, and a revert gives the original back byte for byte."""
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
from conftest import save_tiny_model, tree_hashes

from roicurate import RoicurateError
from roicurate.safeio import NothingToRevert
from roicurate_plugins.caiman import CaimanSource
from roicurate_plugins.suite2p import Suite2pSource
from test_caiman import EVALUATED, sha

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"suite2p": Suite2pSource(), "caiman": CaimanSource()}

# A process that runs ``roicurate`` itself (``python -m roicurate``, through runpy) on PATH:
#   apply   roicurate -q apply PATH --model MODEL --threshold T(seed)
#   revert  roicurate -q revert PATH
#   loop    apply, revert, apply, revert ... forever (the threshold changes each time), after printing "ready"
# Everything the command needs is imported first (and no .pyc is written: importlib's own os.replace would count as
# a step), so that ROICURATE_TEST_WAIT=1 ("ready", then wait for a line on stdin) lets a test start the command at a
# moment it chooses. With ROICURATE_TEST_COUNT=1 every os.fsync, os.replace and os.link the command makes is counted
# (the calls that make up roicurate's write and revert sequences: temp file, fsync, rename, folder fsync,
# no-replace link); with KILL_AT_STEP=k it stops at the k-th, before doing it, and says so: a kill then lands at a
# known point inside the sequence, never by luck. "steps N" at exit counts the steps of a whole run.
DRIVER = """
import atexit, os, runpy, sys, time
sys.dont_write_bytecode = True
op, kind, path, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import torch, roicurate.cli, roicurate.api.applying, roicurate.curation, roicurate.models, roicurate.plugins  # noqa
import roicurate.api.restoring  # noqa
model = os.environ["ROICURATE_TEST_MODEL_" + kind.upper()]

def roicurate(*args):
    sys.argv = ["roicurate", *map(str, args)]
    try:
        runpy.run_module("roicurate", run_name="__main__")
    except SystemExit as e:
        return e.code or 0
    return 0

def apply(i):
    return roicurate("-q", "apply", path, "--model", model, "--threshold", 0.3 + 0.1 * (i % 5))

if os.environ.get("ROICURATE_TEST_COUNT"):
    kill_at, steps = int(os.environ.get("KILL_AT_STEP", "0")), [0]
    def counted(name, real):
        def call(*args, **kwargs):
            steps[0] += 1
            if steps[0] == kill_at:
                print(f"paused before step {steps[0]}: os.{name}", flush=True)
                time.sleep(600)
            return real(*args, **kwargs)
        return call
    for name in ("fsync", "replace", "link"):
        setattr(os, name, counted(name, getattr(os, name)))
    atexit.register(lambda: print(f"steps {steps[0]}", flush=True))
if os.environ.get("ROICURATE_TEST_WAIT"):
    print("ready", flush=True)
    sys.stdin.readline()
if op == "apply":
    sys.exit(apply(seed))
if op == "revert":
    sys.exit(roicurate("-q", "revert", path))
print("ready", flush=True)
i = seed
while True:
    rc = apply(i) or roicurate("-q", "revert", path)
    if rc:
        sys.exit(rc)
    i += 1
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """ROICURATE_TEST_MODEL_SUITE2P / _CAIMAN: small real models (an untrained cnn2 saved with its card)."""
    folder = tmp_path_factory.mktemp("fault_models")
    return {f"ROICURATE_TEST_MODEL_{kind.upper()}": save_tiny_model(folder / kind, kind) for kind in SOURCES}


@pytest.fixture(autouse=True)
def _models_env(models, monkeypatch):
    for name, card in models.items():
        monkeypatch.setenv(name, str(card))


def start(op, kind, path, seed=0, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), ROICURATE_LOAD_PLUGINS="", **{k: str(v) for k, v in env.items()})
    return subprocess.Popen([sys.executable, "-c", DRIVER, op, kind, str(path), str(seed)], env=e, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def read_until(proc, prefix):
    """The first line of ``proc``'s stdout that starts with ``prefix`` (the command's own lines come before it)."""
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    return ""


@pytest.fixture(params=["suite2p", "caiman"])
def unit(request, copy_example, caiman_files, tmp_path):
    """(kind, path, folder) of a fresh copy: a suite2p/ folder with two planes + combined/, or a CaImAn file."""
    if request.param == "suite2p":
        path = copy_example()
        return "suite2p", path, path
    path = tmp_path / "data" / "cnmf_refit_evaluated.hdf5"
    path.parent.mkdir()
    shutil.copyfile(caiman_files[EVALUATED], path)
    os.chmod(path, 0o644)
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
    b = start("apply", kind, path, 2, ROICURATE_LOCK_WAIT=0.2, ROICURATE_TEST_WAIT=1)
    assert b.stdout.readline().strip() == "ready"          # imported: starts in a moment once told to
    a = start("apply", kind, path, 1, ROICURATE_TEST_PAUSE_AFTER_CHECK=4)
    wait_until_locked(folder / "plane0" if kind == "suite2p" else folder)
    b.stdin.write("go\n")
    b.stdin.flush()
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


# ---- kill -9 inside the write sequence, and SIGTERM (items 7, 9) ------------------------------------------------
KILL_SEED = 20                 # which steps are killed: a fixed seed, so a failure names a step that reproduces it


def start_counted(op, kind, path, seed=0, **env):
    """``start`` with the command's write steps counted (DRIVER: ROICURATE_TEST_COUNT, KILL_AT_STEP)."""
    return start(op, kind, path, seed, ROICURATE_TEST_COUNT=1, **env)


def steps_of(op, kind, path):
    rc, out, err = finish(start_counted(op, kind, path))
    assert rc == 0, err
    return int(out.strip().splitlines()[-1].split()[1])


def test_kill_9_inside_the_write_sequence(unit):
    kind, path, folder = unit
    before = tree_hashes(folder)
    n_apply = steps_of("apply", kind, path)                 # one apply, then one revert: the loop's cycle
    n_revert = steps_of("revert", kind, path)
    assert tree_hashes(folder) == before and n_apply >= 4 and n_revert >= 2, (n_apply, n_revert)
    rng = random.Random(KILL_SEED)
    # steps 1..n_apply are apply's, then revert's: two of each, at seeded random positions
    kill_steps = rng.sample(range(1, n_apply + 1), 2) + rng.sample(range(n_apply + 1, n_apply + n_revert + 1), 2)
    changed = []
    for step in kill_steps:
        p = start_counted("loop", kind, path, KILL_AT_STEP=step)
        assert p.stdout.readline().strip() == "ready"
        line = read_until(p, "paused before step")
        assert line.startswith(f"paused before step {step}:"), (step, line, p.stderr.read() if p.poll() else "")
        p.kill()                                            # SIGKILL while paused inside the sequence
        p.communicate()
        assert p.returncode == -signal.SIGKILL
        changed.append(tree_hashes(folder) != before or bool(temps(folder)))
        # the next run cleans the dead run's temp files, verifies, and restores the original byte for byte
        try:
            SOURCES[kind].revert(path)
        except NothingToRevert:
            pass
        except RoicurateError as e:
            pytest.fail(f"kill at step {step} of {n_apply}+{n_revert}: {e}")
        assert not temps(folder), f"kill at step {step}"
        assert tree_hashes(folder) == before, f"kill at step {step}"
    assert any(changed), f"no kill left a half-written state: steps {kill_steps}"


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
def test_failed_rename_undoes_the_backup_and_record(copy_example, monkeypatch):
    plane = copy_example("plane0")
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
def test_disk_full_is_one_line_and_changes_nothing(kind, small_disk, example_suite2p, caiman_files):
    if kind == "suite2p":
        path = small_disk / "plane0"
        shutil.copytree(example_suite2p / "plane0", path)
        for f in path.iterdir():
            os.chmod(f, 0o644)
    else:
        path = small_disk / "cnmf_refit_evaluated.hdf5"
        shutil.copyfile(caiman_files[EVALUATED], path)
        os.chmod(path, 0o644)
    fill(small_disk, 0 if kind == "suite2p" else int(0.4 * path.stat().st_size))   # CaImAn: less than one copy
    before = tree_hashes(small_disk)
    rc, out, err = finish(start("apply", kind, path))
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "free space" in err, (rc, err)   # not SIGSEGV (139)
    assert tree_hashes(small_disk) == before and not temps(small_disk)
    (small_disk / "filler").unlink()
    original = sha(path / "iscell.npy" if kind == "suite2p" else path)
    assert finish(start("apply", kind, path))[0] == 0
    SOURCES[kind].revert(path)
    assert sha(path / "iscell.npy" if kind == "suite2p" else path) == original
