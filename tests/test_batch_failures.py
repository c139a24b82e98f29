"""Issue #23 case 4: a batch (``apply --recursive``, several paths) stopped by a failure at write time ends
consistent: the unit that failed is undone, the units written before it stay written, combined/ is rebuilt for
every suite2p/ folder touched, the undo line for exactly what was written is printed before the one-line error,
and running it gives every original back byte for byte. A batch that cannot fit on its filesystem is refused before
its first write. Case 8 (part): a revert whose last step (removing the backup) fails says what is true.

The failures are injected in-process into the real write sequence (a fault injection, not a stand-in for a format):
ENOSPC from the atomic write of the second session's plane1, the free-space check of the second CaImAn file, a
statvfs that reports a nearly full filesystem, an unlink that fails with EBUSY."""
import errno
import os
import shlex
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_run, save_tiny_model, tree_hashes

import roicurate.safeio
import roicurate.sources
from roicurate_plugins.caiman import CaimanSource


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {kind: save_tiny_model(folder / kind, kind) for kind in ("suite2p", "caiman")}


def undo_args(output):
    """The arguments of the printed undo line (``roicurate revert ...``)."""
    lines = [line for line in output.splitlines() if "undo with: roicurate revert " in line
             and not line.startswith("roicurate: error")]
    assert len(lines) == 1, output
    return shlex.split(lines[0].split("undo with: roicurate ", 1)[1])


def error_line(result, *words):
    """The run ended with exit 1 and one error line, the last line of its output, naming ``words``."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("roicurate: error: ") and result.output.rstrip().endswith(err[0])
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def assert_combined_matches(suite2p):
    rows = np.concatenate([np.load(suite2p / p / "iscell.npy") for p in ("plane0", "plane1")])
    assert np.array_equal(np.load(suite2p / "combined" / "iscell.npy"), rows)


def test_recursive_batch_stopped_at_write_time(copy_example, models, tmp_path, monkeypatch):
    a, b = copy_example(name="root/a/suite2p"), copy_example(name="root/b/suite2p")
    original = tree_hashes(tmp_path / "root")
    real = roicurate.safeio.atomic_write_bytes

    def full_disk(path, data):                   # the second session's plane1: the disk is full at its iscell.npy
        if str(path) == str(b / "plane1" / "iscell.npy"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)
    monkeypatch.setattr(roicurate.safeio, "atomic_write_bytes", full_disk)
    r = cli_run("apply", "--recursive", tmp_path / "root", "--model", models["suite2p"], ok=False)
    error_line(r, "No space left on device", str(b / "plane1" / "iscell.npy"), "stopped there", "3 planes")
    for plane in (a / "plane0", a / "plane1", b / "plane0"):       # written before the failure: still written
        assert (plane / "roicurate.json").exists(), plane
    assert tree_hashes(b / "plane1") == {k[len("b/suite2p/plane1/"):]: v for k, v in original.items()
                                         if k.startswith("b/suite2p/plane1/")}
    for suite2p in (a, b):                        # combined/ follows the planes, in both sessions
        assert_combined_matches(suite2p)
    assert undo_args(r.stdout) == ["revert", str(a / "plane0"), str(a / "plane1"), str(b / "plane0")]
    assert r.stdout.index("undo with") < r.output.index("roicurate: error")
    monkeypatch.undo()
    cli_run(*undo_args(r.stdout))
    assert tree_hashes(tmp_path / "root") == original


def test_combined_that_cannot_be_rebuilt_still_gets_the_undo_line(copy_example, models, monkeypatch):
    suite2p = copy_example()
    original = tree_hashes(suite2p)
    real = roicurate.safeio.atomic_write_bytes

    def full_disk(path, data):                   # both planes are written; combined/ finds the disk full
        if Path(path).parent.name == "combined":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)
    monkeypatch.setattr(roicurate.safeio, "atomic_write_bytes", full_disk)
    r = cli_run("apply", suite2p, "--model", models["suite2p"], ok=False)
    error_line(r, "No space left on device", "combined", "left as it was", "2 planes written stay written")
    assert all((suite2p / p / "roicurate.json").exists() for p in ("plane0", "plane1"))
    assert tree_hashes(suite2p / "combined") == {k[len("combined/"):]: v for k, v in original.items()
                                                 if k.startswith("combined/")}
    assert undo_args(r.stdout) == ["revert", str(suite2p / "plane0"), str(suite2p / "plane1")]
    monkeypatch.undo()
    cli_run(*undo_args(r.stdout))
    assert tree_hashes(suite2p) == original


def test_multi_path_caiman_batch_stopped_at_write_time(copy_caiman, models, monkeypatch):
    first, second = copy_caiman("evaluated"), copy_caiman("evaluated_seed1")
    original = {f: f.read_bytes() for f in (first, second)}
    real = roicurate.sources.check_free_space

    def nearly_full(folder, nbytes, what):       # the second file's own check, under its lock, finds no room
        return real(folder, 1 << 60 if second.name in what else nbytes, what)
    monkeypatch.setattr(roicurate.sources, "check_free_space", nearly_full)
    r = cli_run("apply", first, second, "--model", models["caiman"], ok=False)
    error_line(r, str(second.parent), "not enough free space", "stopped there", "1 file")
    assert CaimanSource().recorded(first) is not None and second.read_bytes() == original[second]
    assert sorted(p.name for p in second.parent.iterdir()) == sorted([first.name, second.name,
                                                                      CaimanSource().backup_path(first).name])
    assert undo_args(r.stdout) == ["revert", str(first)]
    monkeypatch.undo()
    cli_run(*undo_args(r.stdout))
    assert {f: f.read_bytes() for f in (first, second)} == original
    assert sorted(p.name for p in second.parent.iterdir()) == sorted([first.name, second.name])


def fake_statvfs(free):
    st = namedtuple("statvfs", "f_bavail f_frsize")
    return lambda path: st(free, 1)


@pytest.mark.parametrize("kind", ["suite2p", "caiman"])
def test_a_batch_that_cannot_fit_is_refused_before_its_first_write(kind, copy_example, copy_caiman, models,
                                                                   tmp_path, monkeypatch):
    if kind == "suite2p":
        paths = [copy_example()]
        size = (paths[0] / "plane0" / "iscell.npy").stat().st_size
        free = 3 * size + (1 << 20) + (32 << 10)  # each plane's own check passes; the two planes together do not
    else:
        paths = [copy_caiman("evaluated"), copy_caiman("evaluated_seed1")]
        size = max(p.stat().st_size for p in paths)
        free = 2 * size + (8 << 20) + size // 2  # each file's temp copy and backup fit; both backups do not
    original = tree_hashes(tmp_path)
    monkeypatch.setattr(os, "statvfs", fake_statvfs(free))
    r = cli_run("apply", *paths, "--model", models[kind], ok=False)
    error_line(r, "not enough free space for the 2 units this batch writes", "nothing written")
    assert tree_hashes(tmp_path) == original
    monkeypatch.setattr(os, "statvfs", fake_statvfs(1 << 40))           # with room, the same batch is written
    cli_run("apply", *paths, "--model", models[kind])


@pytest.mark.parametrize("force", [False, True])
def test_revert_whose_backup_cannot_be_removed_says_the_file_was_restored(copy_caiman, models, monkeypatch, force):
    path = copy_caiman("evaluated")
    original = path.read_bytes()
    cli_run("apply", path, "--model", models["caiman"])
    backup = CaimanSource().backup_path(path)
    if force:                                     # a hand edit since: --force keeps it beside the file
        import h5py
        with h5py.File(path, "r+") as f:
            f.attrs["edited_by_hand"] = 1
    real = os.unlink

    def busy(p, *args, **kwargs):
        if str(p) == str(backup):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(p))
        return real(p, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", busy)
    r = cli_run("revert", path, *(["--force"] if force else []), ok=False)
    line = error_line(r, f"restored from {backup.name}", "could not be removed", "Device or resource busy")
    assert "nothing changed" not in line
    assert path.read_bytes() == original and backup.exists()
    kept = sorted(path.parent.glob("*roicurate-edited*"))
    assert len(kept) == force and (not force or "edits kept in" in line)
    monkeypatch.undo()
    r = cli_run("revert", path)                   # a second revert finishes: the backup goes
    assert path.read_bytes() == original and not backup.exists()
    assert len(sorted(path.parent.glob("*roicurate-edited*"))) == force
