"""Issue #23 item 8 (the safeio part): a temp file's second name is never left behind with success (EBUSY on its
unlink), a symbolic link is refused with one line instead of being turned into a regular file, and a file another
process holds open for writing (HDF5 file locking off) is refused instead of being replaced under it."""
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_run, tree_hashes

from roicurate import RoicurateError, fileguard
from roicurate.safeio import create_new

ROOT = Path(__file__).resolve().parents[1]


def busy_second_link(monkeypatch, always=True):
    """os.unlink of a temp file that still has a second name fails with EBUSY (as strace's inject made it)."""
    real = os.unlink

    def unlink(path, *args, **kwargs):
        p = str(path)
        if p.endswith(".tmp") and os.path.exists(p) and os.stat(p).st_nlink > 1:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), p)
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)


def temps(folder):
    return sorted(p.name for p in Path(folder).rglob("*.tmp"))


def test_busy_unlink_leaves_no_second_link_after_success(copy_example, tiny_model, monkeypatch):
    plane = copy_example("plane0")
    busy_second_link(monkeypatch)
    cli_run("apply", plane, "--model", tiny_model / "tiny.json", "--threshold", "0.5")
    assert (plane / "iscell_suite2p.npy").exists()
    assert temps(plane) == []
    assert all(p.stat().st_nlink == 1 for p in plane.iterdir() if p.is_file())


def test_busy_unlink_without_renameat2_is_reported_not_silent(tmp_path, monkeypatch):
    """Where the filesystem has no RENAME_NOREPLACE (link + unlink), an unlink that keeps failing is an error and
    the new name is taken back: never a stray second link with success."""
    busy_second_link(monkeypatch)
    monkeypatch.setattr(fileguard, "_renameat2", lambda: None)
    with pytest.raises(OSError) as e:
        create_new(tmp_path / "backup.npy", b"data")
    assert e.value.errno == errno.EBUSY and "was not created" in str(e.value)
    assert not (tmp_path / "backup.npy").exists() and temps(tmp_path) == []


def test_create_new_never_replaces(tmp_path):
    (tmp_path / "a").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        create_new(tmp_path / "a", b"new")
    assert (tmp_path / "a").read_bytes() == b"old" and temps(tmp_path) == []


def test_symlinked_iscell_is_refused_and_stays_a_link(copy_example, tiny_model, tmp_path):
    plane = copy_example("plane0")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (plane / "iscell.npy").rename(elsewhere / "iscell.npy")
    (plane / "iscell.npy").symlink_to(elsewhere / "iscell.npy")
    before = tree_hashes(plane), tree_hashes(elsewhere)
    r = cli_run("apply", plane, "--model", tiny_model / "tiny.json", ok=False)
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "symbolic link" in lines[0] and "iscell.npy" in lines[0], r.output
    assert (plane / "iscell.npy").is_symlink()
    assert (tree_hashes(plane), tree_hashes(elsewhere)) == before and temps(plane) == []


def test_symlinked_caiman_file_is_refused(copy_caiman, tiny_model, tmp_path):
    real = copy_caiman("evaluated")
    link = tmp_path / "link" / "cnm.hdf5"
    link.parent.mkdir()
    link.symlink_to(real)
    from roicurate_plugins.caiman import CaimanSource
    with pytest.raises(RoicurateError, match="symbolic link"):
        CaimanSource().check_writable(link)
    assert link.is_symlink()


HOLDER = """
import sys, time, h5py
f = h5py.File(sys.argv[1], sys.argv[2])
print("ready", flush=True)
time.sleep(120)
"""


def hold(path, mode):
    """A process that holds ``path`` open with h5py in ``mode``, HDF5 file locking off."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE"))
    assert p.stdout.readline().strip() == "ready"
    return p


def test_open_writer_is_refused_with_one_line(copy_caiman, monkeypatch):
    """Without file locking nothing else tells: the holder's later writes would go to the replaced inode."""
    from roicurate_plugins.caiman import CaimanSource
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    path = copy_caiman("evaluated")
    holder = hold(path, "r+")              # (HDF5 marks the file open for writing: compare from here)
    before = tree_hashes(path.parent)
    try:
        assert [pid for pid, _ in fileguard.open_writers(path)] == [holder.pid]
        with pytest.raises(RoicurateError) as e:
            CaimanSource().check_writable(path)
        msg = str(e.value)
        assert "\n" not in msg and "open for writing" in msg and f"pid {holder.pid}" in msg and path.name in msg
        assert tree_hashes(path.parent) == before
    finally:
        holder.kill()
        holder.wait()
    CaimanSource().check_writable(path)            # once it is closed, fine


def test_open_reader_is_not_a_writer(copy_caiman, monkeypatch):
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    path = copy_caiman("evaluated")
    holder = hold(path, "r")
    try:
        assert fileguard.open_writers(path) == []
    finally:
        holder.kill()
        holder.wait()


def test_open_writer_refused_by_apply_end_to_end(copy_example, tiny_model, tmp_path):
    """The same for a Suite2p plane: a process writing iscell.npy (np.save into an open file) stops apply."""
    plane = copy_example("plane0")
    before = tree_hashes(plane)
    p = subprocess.Popen([sys.executable, "-c", "import sys, time\nf = open(sys.argv[1], 'r+b')\nprint('ready', "
                          "flush=True)\ntime.sleep(120)", str(plane / "iscell.npy")], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        r = cli_run("apply", plane, "--model", tiny_model / "tiny.json", ok=False)
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "open for writing" in r.output, \
            r.output
        assert tree_hashes(plane) == before
    finally:
        p.kill()
        p.wait()
    time.sleep(0.1)
    cli_run("apply", plane, "--model", tiny_model / "tiny.json")
    assert np.load(plane / "iscell.npy").shape[1] == 2
