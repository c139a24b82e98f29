"""Issue #23 item 3: an I/O error inside h5py's / pynwb's write of the temp copy (a full disk on pwrite, EIO on
ftruncate) is one line naming the file and the errno, with every file byte-identical and no temp file left; no
traceback, no late ``Can't decrement id ref count``, no crash at exit.

Two ways of making the write fail: (a) ``strace -e inject`` on the real command in a subprocess (the real syscalls
of the real libraries; skipped where strace is missing), at the first, a middle and the last pwrite64 of the run;
(b) in-process, ``os.pwrite`` raising ENOSPC from its N-th call on (no strace needed)."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_model, tree_hashes

from roicurate import RoicurateError

ROOT = Path(__file__).resolve().parents[1]
STRACE = shutil.which("strace")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("io_models")
    return {kind: save_tiny_model(folder / kind, kind) for kind in ("suite2p", "caiman")}


@pytest.fixture(params=["caiman", "nwb"])
def target(request, caiman_files, tmp_path, models):
    """(path of a writable file in its own folder, model card)."""
    folder = tmp_path / "data"
    folder.mkdir()
    if request.param == "caiman":
        path = folder / "cnm.hdf5"
        shutil.copyfile(caiman_files["evaluated"], path)
        os.chmod(path, 0o644)
        return path, models["caiman"]
    pytest.importorskip("pynwb")
    from test_nwb import write_suite2p_layout
    path = folder / "ophys.nwb"
    write_suite2p_layout(path)
    return path, models["suite2p"]


def run_apply(path, model, prefix=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ROICURATE_LOAD_PLUGINS="")
    cmd = [*prefix, sys.executable, "-m", "roicurate", "-q", "apply", str(path), "--model", str(model),
           "--threshold", "0.5"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


_COUNTS = {}


def count_calls(path, model, tmp_path, call):
    """How many ``call`` syscalls one successful apply makes (on a scratch copy; counted once per file kind)."""
    key = (path.suffix, call)
    if key not in _COUNTS:
        _COUNTS[key] = _count_calls(path, model, tmp_path, call)
    return _COUNTS[key]


def _count_calls(path, model, tmp_path, call):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    copy = scratch / path.name
    shutil.copyfile(path, copy)
    log = tmp_path / "count.log"
    r = run_apply(copy, model, [STRACE, "-f", "-o", str(log), "-e", f"trace={call}"])
    assert r.returncode == 0, r.stderr
    return sum(f"{call}(" in line for line in log.read_text().splitlines())


def assert_one_line_nothing_changed(r, path, name, before):
    err = r.stderr.strip()
    assert r.returncode == 1, (r.returncode, err)          # not a crash (139) nor a traceback's 1 with 40 lines
    assert "Traceback" not in r.stderr and "decrement" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, err
    assert str(path.name) in err and name in err and "nothing changed" in err, err
    assert tree_hashes(path.parent) == before
    assert not list(path.parent.glob(".*.tmp")), list(path.parent.iterdir())


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
@pytest.mark.parametrize("fault", ["first", "middle", "last", "ftruncate"])
def test_injected_syscall_error_is_one_line(target, fault, tmp_path):
    path, model = target
    call, err = ("ftruncate", "EIO") if fault == "ftruncate" else ("pwrite64", "ENOSPC")
    n = count_calls(path, model, tmp_path, call)
    assert n >= 1
    when = {"first": 1, "middle": max(1, n // 2), "last": n, "ftruncate": 1}[fault]
    before = tree_hashes(path.parent)
    r = run_apply(path, model, [STRACE, "-f", "-o", "/dev/null", "-e", f"trace={call}",
                                "-e", f"inject={call}:error={err}:when={when}+"])
    assert_one_line_nothing_changed(r, path, err, before)
    assert run_apply(path, model).returncode == 0          # and the file is fine for the next run


# a fresh process (re-imports, so the monkeypatch reaches every caller), os.pwrite failing from its N-th call on
FAILING_PWRITE = """
import errno, os, runpy, sys
n, real, count = int(sys.argv.pop(1)), os.pwrite, [0]
def pwrite(fd, data, offset):
    count[0] += 1
    if count[0] >= n:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, data, offset)
os.pwrite = pwrite
sys.argv[0] = "roicurate"
runpy.run_module("roicurate", run_name="__main__")
"""


@pytest.mark.parametrize("n", [1, 3])
def test_failing_pwrite_in_process_is_one_line(target, n):
    path, model = target
    before = tree_hashes(path.parent)
    r = subprocess.run([sys.executable, "-c", FAILING_PWRITE, str(n), "-q", "apply", str(path), "--model", str(model),
                        "--threshold", "0.5"], env=dict(os.environ, PYTHONPATH=str(ROOT), ROICURATE_LOAD_PLUGINS=""),
                       capture_output=True, text=True, timeout=300)
    assert_one_line_nothing_changed(r, path, "ENOSPC", before)


def test_writing_copy_names_the_file_and_errno(tmp_path):
    """The guard itself: a failed write is remembered, the library's later calls succeed, one CopyWriteError."""
    from roicurate.fileguard import CopyWriteError, writing_copy
    from roicurate.safeio import os_error_line
    tmp = tmp_path / "copy.bin"
    tmp.write_bytes(b"x" * 10)
    real = os.pwrite

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(CopyWriteError) as e:
        with writing_copy(tmp, tmp_path / "user.hdf5") as raw:
            os.pwrite = full
            try:
                assert raw.write(b"abc") == 3 and raw.tell() == 3     # the library is told it worked
                raw.truncate(2)
            finally:
                os.pwrite = real
    line = os_error_line(e.value, "x")
    assert line == f"{tmp_path / 'user.hdf5'}: could not write the updated copy: No space left on device (ENOSPC)"
    assert isinstance(e.value, OSError) and not isinstance(e.value, RoicurateError)
