"""Issue #16 on CaImAn files in cnm.save()'s layout (caiman_files.py): corrupt, foreign and unrecorded backups, hand edits, an independent backup,
wrapping indices, immutable files. Each bad case ends in one line naming the file, with every file unchanged."""
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from conftest import cli_run, one_line_error, tree_hashes

from roicurate import RoicurateError
from roicurate_plugins.caiman import CaimanSource
from test_caiman import EVALUATED, N, curation_for, sha

OTHER = "evaluated_seed1"     # another recording (as many components, other data)
src = CaimanSource()



@pytest.fixture
def curated(copy_caiman):
    p = copy_caiman(EVALUATED)
    original = sha(p)
    src.write(p, src.read(p), curation_for(N))
    return p, p.with_name("cnmf_refit_evaluated.roicurate-backup.hdf5"), original


def test_backup_is_an_independent_copy(curated):
    p, backup, original = curated
    assert sha(backup) == original
    assert os.stat(backup).st_ino != os.stat(p).st_ino and os.stat(backup).st_nlink == 1
    with h5py.File(p, "r") as f:
        assert f["estimates"].attrs["roicurate_backup_sha256"] == original


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


BAD_BACKUPS = {
    "truncated": lambda b, d: truncate(b),
    "garbage": lambda b, d: b.write_bytes(os.urandom(4096)),
    "other recording": lambda b, d: shutil.copyfile(d[OTHER], b),
    "same components, other data": None,       # the real file with one value changed: only the sha256 tells
}


@pytest.mark.parametrize("case", list(BAD_BACKUPS))
def test_bad_backup_is_refused_and_nothing_changes(case, curated, caiman_files):
    p, backup, _ = curated
    if BAD_BACKUPS[case]:
        BAD_BACKUPS[case](backup, caiman_files)
    else:
        with h5py.File(backup, "r+") as f:
            f["estimates/SNR_comp"][0] += 1
    before = tree_hashes(p.parent)
    one_line_error(lambda: src.revert(p, force=True), backup.name)
    one_line_error(lambda: src.write(p, src.read(p), curation_for(N, 3), force=True), backup.name)
    r = cli_run("revert", p, ok=False)
    assert r.exit_code == 1 and backup.name in r.output and "Traceback" not in r.output
    assert tree_hashes(p.parent) == before
    assert h5py.is_hdf5(str(p))


def test_backup_without_record_is_refused(curated, caiman_files):
    p, backup, original = curated
    shutil.copyfile(caiman_files[EVALUATED], p)
    os.chmod(p, 0o644)                     # the record is gone with the file's attributes
    with h5py.File(p, "r+") as f:
        f["estimates/SNR_comp"][1] += 1
    before = tree_hashes(p.parent)
    one_line_error(lambda: src.revert(p, force=True), "no roicurate record")
    one_line_error(lambda: src.check_writable(p), "differs from its backup")
    assert tree_hashes(p.parent) == before
    current = sha(p)                                             # --force: the old backup is set aside, not lost
    note = src.write(p, src.read(p), curation_for(N), force=True)
    (aside,) = p.parent.glob("cnmf_refit_evaluated.roicurate-backup-stale-*.hdf5")
    assert aside.name in note and sha(aside) == original and sha(backup) == current
    src.revert(p)
    assert sha(p) == current


def test_missing_backup_with_a_record_is_refused(curated):
    p, backup, _ = curated
    backup.unlink()
    before = tree_hashes(p.parent)
    one_line_error(lambda: src.revert(p, force=True), "missing")
    one_line_error(lambda: src.check_writable(p, force=True), "missing")
    assert tree_hashes(p.parent) == before


def refilter(p):
    with h5py.File(p, "r+") as f:                                # re-filtered in CaImAn after roicurate wrote
        del f["estimates/idx_components"]
        f["estimates/idx_components"] = np.arange(10)
    return sha(p)


def test_revert_over_hand_edits_refuses_then_force_keeps_them(curated):
    p, backup, original = curated
    edited = refilter(p)
    before = tree_hashes(p.parent)
    one_line_error(lambda: src.revert(p), "--force")
    assert tree_hashes(p.parent) == before
    r = cli_run("revert", p, "--force")
    (kept,) = p.parent.glob("cnmf_refit_evaluated.roicurate-edited-*.hdf5")
    assert kept.name in r.output and sha(kept) == edited
    assert sha(p) == original and not backup.exists()
    r = cli_run("revert", p)
    assert r.exit_code == 0 and "nothing to revert" in r.output


def test_apply_force_over_hand_edits_keeps_them(curated):
    p, backup, original = curated
    edited = refilter(p)
    one_line_error(lambda: src.check_writable(p), "--force")
    note = src.write(p, src.read(p), curation_for(N, 5), force=True)
    (kept,) = p.parent.glob("cnmf_refit_evaluated.roicurate-edited-*.hdf5")
    assert kept.name in note and sha(kept) == edited and sha(backup) == original
    src.revert(p)
    assert sha(p) == original


def test_interrupted_first_apply_is_adopted(caiman_files, tmp_path):
    p = tmp_path / "cnmf_refit_evaluated.hdf5"
    shutil.copyfile(caiman_files[EVALUATED], p)
    os.chmod(p, 0o644)
    backup = p.with_name("cnmf_refit_evaluated.roicurate-backup.hdf5")
    shutil.copyfile(p, backup)                    # killed after the backup was made, before the file was replaced
    original = sha(p)
    assert "already CaImAn's original" in src.revert(p)
    assert not backup.exists() and sha(p) == original
    shutil.copyfile(p, backup)
    src.write(p, src.read(p), curation_for(N))
    assert sha(backup) == original
    src.revert(p)
    assert sha(p) == original


def test_wrapping_component_indices_are_refused(caiman_files, tmp_path):
    p = tmp_path / "x.hdf5"
    shutil.copyfile(caiman_files[EVALUATED], p)
    os.chmod(p, 0o644)
    with h5py.File(p, "r+") as f:
        idx = f["estimates/A/indices"][()].astype(np.int64)
        idx[0] += 2 ** 32
        del f["estimates/A/indices"]
        f["estimates/A/indices"] = idx
    before = sha(p)
    one_line_error(lambda: src.read(p), "x.hdf5")
    assert sha(p) == before


def test_immutable_file_is_refused_before_the_backup_is_written(caiman_files, tmp_path):
    p = tmp_path / "cnmf_refit_evaluated.hdf5"
    shutil.copyfile(caiman_files[EVALUATED], p)
    os.chmod(p, 0o644)
    if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a filesystem that supports it")
    try:
        one_line_error(lambda: src.check_writable(p), "immutable")
        one_line_error(lambda: src.write(p, src.read(p), curation_for(N)), "immutable")
        assert os.listdir(tmp_path) == [p.name]
    finally:
        subprocess.run(["chattr", "-i", str(p)])
