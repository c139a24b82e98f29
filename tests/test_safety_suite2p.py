"""Issue #16 on real Suite2p output (the bundled example): corrupt, stale and unrecorded backups, hand edits, hostile pickles, wrapping
pixel coordinates, immutable files, "nothing to revert", session folders. Each bad case ends in one line naming
the file, with every file byte-identical."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import cli_run, one_line_error, tree_hashes

from roicurate import RoicurateError
from roicurate.safeio import NothingToRevert
from roicurate_plugins.suite2p import Suite2pSource
from test_suite2p import curate, curation_for

PLANE = "plane0"            # of the bundled example: 34 ROIs
OTHER = "plane1"            # 27 ROIs: another recording's valid iscell.npy
src = Suite2pSource()



@pytest.fixture
def curated(copy_example):
    """A plane after one apply, with the bytes of Suite2p's own iscell.npy."""
    plane = copy_example(PLANE)
    original = (plane / "iscell.npy").read_bytes()
    curate(plane, seed=1)
    return plane, original


# ---- revert trusts nothing (item 1) -------------------------------------------------------------------
BAD_BACKUPS = {
    "truncated": lambda p, d: (p / "iscell_suite2p.npy").write_bytes((p / "iscell_suite2p.npy").read_bytes()[:100]),
    "garbage": lambda p, d: (p / "iscell_suite2p.npy").write_bytes(os.urandom(800)),
    "1-D bool": lambda p, d: np.save(p / "iscell_suite2p.npy", np.ones(34, bool)),
    "50 rows": lambda p, d: np.save(p / "iscell_suite2p.npy", np.ones((50, 2))),
    "other recording": lambda p, d: shutil.copyfile(d / OTHER / "iscell.npy", p / "iscell_suite2p.npy"),
    "same shape, other values": lambda p, d: np.save(p / "iscell_suite2p.npy", np.zeros((34, 2))),
}


@pytest.mark.parametrize("case", list(BAD_BACKUPS))
def test_bad_backup_is_refused_and_nothing_changes(case, curated, example_suite2p):
    plane, _ = curated
    BAD_BACKUPS[case](plane, example_suite2p)
    before = tree_hashes(plane)
    one_line_error(lambda: src.revert(plane), "iscell_suite2p.npy")
    one_line_error(lambda: src.check_writable(plane, force=True), "iscell_suite2p.npy")
    one_line_error(lambda: src.write(plane, src.read(plane), curation_for(34), force=True), "iscell_suite2p.npy")
    r = cli_run("revert", plane, "--force", ok=False)
    assert r.exit_code == 1 and "iscell_suite2p.npy" in r.output and "Traceback" not in r.output
    assert tree_hashes(plane) == before


def test_backup_without_record_is_an_unknown_state(curated):
    plane, original = curated
    (plane / "roicurate.json").unlink()
    edited = np.load(plane / "iscell.npy")
    edited[:, 0] = 1 - edited[:, 0]
    np.save(plane / "iscell.npy", edited)                 # hand edits: a plain apply must not overwrite them
    before = tree_hashes(plane)
    for force in (False, True):
        one_line_error(lambda: src.check_writable(plane, force=force), "no record")
        one_line_error(lambda: src.revert(plane, force=force), "no record")
    assert tree_hashes(plane) == before


def test_stale_backup_after_a_suite2p_rerun_is_refused_before_any_write(curated):
    """A record from before the ROI fingerprint (tests/test_reruns.py: with it, a re-run is curated afresh)."""
    plane, original = curated
    rec = json.loads((plane / "roicurate.json").read_text())
    del rec["roi_sha256"]
    (plane / "roicurate.json").write_text(json.dumps(rec))
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    np.save(plane / "stat.npy", stat[:-4])                 # Suite2p re-run: 30 ROIs now, the backup has 34 rows
    np.save(plane / "iscell.npy", np.load(plane / "iscell_suite2p.npy")[:-4])
    for f in ("F.npy", "Fneu.npy", "spks.npy"):
        np.save(plane / f, np.load(plane / f)[:-4])
    before = tree_hashes(plane)
    rs = src.read(plane)
    one_line_error(lambda: src.write(plane, rs, curation_for(30), force=True), "34 rows", "stale")
    one_line_error(lambda: src.revert(plane, force=True), "34 rows", "stale")
    assert tree_hashes(plane) == before


def test_missing_backup_with_a_record_is_refused(curated):
    plane, _ = curated
    (plane / "iscell_suite2p.npy").unlink()
    before = tree_hashes(plane)
    one_line_error(lambda: src.check_writable(plane, force=True), "missing")
    one_line_error(lambda: src.revert(plane, force=True), "missing")
    assert tree_hashes(plane) == before


# ---- hand edits (item 2) ------------------------------------------------------------------------------
def flip(plane):
    iscell = np.load(plane / "iscell.npy")
    iscell[:5, 0] = 1 - iscell[:5, 0]                      # as the Suite2p GUI saves a flip: the whole file
    np.save(plane / "iscell.npy", iscell)
    return (plane / "iscell.npy").read_bytes()


def kept_edits(plane):
    return sorted(plane.glob("iscell_edited-*.npy"))


def test_revert_over_hand_edits_refuses_then_force_keeps_them(curated):
    plane, original = curated
    edits = flip(plane)
    before = tree_hashes(plane)
    one_line_error(lambda: src.revert(plane), "--force")
    r = cli_run("revert", plane, ok=False)
    assert r.exit_code == 1 and "--force" in r.output
    assert tree_hashes(plane) == before
    r = cli_run("revert", plane, "--force")
    assert "hand edits kept in" in r.output
    (kept,) = kept_edits(plane)
    assert kept.read_bytes() == edits and (plane / "iscell.npy").read_bytes() == original
    assert not (plane / "iscell_suite2p.npy").exists() and not (plane / "roicurate.json").exists()


def test_cli_apply_force_says_where_the_edits_are(curated, tiny_model):
    plane, original = curated
    edits = flip(plane)
    r = cli_run("apply", plane, "--model", tiny_model, ok=False)
    assert r.exit_code == 1 and "--force" in r.output
    r = cli_run("apply", plane, "--model", tiny_model, "--force")
    (kept,) = kept_edits(plane)
    assert f"hand edits kept in {kept}" in r.output and kept.read_bytes() == edits
    cli_run("revert", plane)
    assert (plane / "iscell.npy").read_bytes() == original


def test_apply_force_over_hand_edits_keeps_them_beside(curated):
    plane, original = curated
    edits = flip(plane)
    one_line_error(lambda: src.check_writable(plane), "--force")
    note = src.write(plane, src.read(plane), curation_for(34, 7), force=True)
    (kept,) = kept_edits(plane)
    assert str(kept) in note and kept.read_bytes() == edits
    assert json.loads((plane / "roicurate.json").read_text())["edits_kept"] == [kept.name]
    assert (plane / "iscell_suite2p.npy").read_bytes() == original      # the backup is still Suite2p's
    src.revert(plane)
    assert (plane / "iscell.npy").read_bytes() == original


def test_second_revert_says_nothing_to_revert_and_exits_0(copy_example, hash_tree):
    session = copy_example("", "s2p_sim2/suite2p").parent     # the session folder around suite2p/
    before = hash_tree(session)
    for plane in src.expand(session):                     # the session folder is searched for its suite2p/
        curate(plane)
    src.finish_batch(src.expand(session))
    r = cli_run("revert", session)
    assert "plane0" in r.output and "plane1" in r.output and "combined" in r.output
    assert hash_tree(session) == before
    r = cli_run("revert", session)
    assert r.exit_code == 0 and "nothing to revert" in r.output
    with pytest.raises(NothingToRevert):
        src.revert(session / "suite2p")
    r = cli_run("revert", session / "missing", ok=False)
    assert r.exit_code == 1 and "does not exist" in r.output


def test_interrupted_revert_is_finished_by_the_next_run(curated):
    plane, original = curated
    rec = json.loads((plane / "roicurate.json").read_text())
    (plane / "iscell.npy").write_bytes(original)          # a revert killed after restoring and removing the backup
    (plane / "iscell_suite2p.npy").unlink()
    assert rec["backup_sha256"]
    src.check_writable(plane)                             # the original is in place: a new apply may start
    assert "already Suite2p's" in src.revert(plane)
    assert not (plane / "roicurate.json").exists() and (plane / "iscell.npy").read_bytes() == original


# ---- hostile files (items 6, 11) --------------------------------------------------------------------------
class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("target", ["stat.npy", "ops.npy"])
def test_hostile_pickle_runs_no_code(target, copy_example, tmp_path, tiny_model):
    plane = copy_example(PLANE)
    marker = tmp_path / "pwned"
    if target == "stat.npy":
        stat = np.load(plane / "stat.npy", allow_pickle=True)
        stat[3]["skew"] = Payload(marker)
        np.save(plane / "stat.npy", stat)
    else:
        ops = np.load(plane / "ops.npy", allow_pickle=True).item()
        ops["evil"] = Payload(marker)
        np.save(plane / "ops.npy", ops)
    before = tree_hashes(plane)
    msg = one_line_error(lambda: src.read(plane), target, "refused: the pickle references", "system")
    assert "not plain data" in msg
    r = cli_run("apply", plane, "--dry-run", "--model", tiny_model, ok=False)
    assert r.exit_code == 1 and "refused" in r.output and "Traceback" not in r.output
    assert not marker.exists()
    assert tree_hashes(plane) == before


@pytest.mark.parametrize("key, offset", [("ypix", 2 ** 32), ("xpix", 2 ** 32), ("ypix", -2 ** 32)])
def test_wrapping_pixel_coordinates_are_refused(key, offset, copy_example):
    plane = copy_example(PLANE)
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    stat[2][key] = stat[2][key].astype(np.int64) + offset  # int32 would wrap this back into the frame
    np.save(plane / "stat.npy", stat)
    one_line_error(lambda: src.read(plane), "stat.npy", "ROI 2", "outside")


# ---- files that cannot be replaced (item 9) ---------------------------------------------------------------
def chattr(flag, path):
    try:
        r = subprocess.run(["chattr", flag, str(path)], capture_output=True)
    except FileNotFoundError:
        return False
    return r.returncode == 0


@pytest.mark.parametrize("name", ["iscell.npy", "roicurate.json"])
def test_immutable_file_is_refused_before_the_backup_is_written(name, copy_example, tmp_path):
    plane = copy_example(PLANE)
    if name == "roicurate.json":
        curate(plane)
    if not chattr("+i", plane / name):
        pytest.skip("chattr +i needs root and a filesystem that supports it")
    try:
        before = tree_hashes(plane)
        one_line_error(lambda: src.check_writable(plane, force=True), name, "immutable")
        one_line_error(lambda: src.write(plane, src.read(plane), curation_for(34), force=True), name)
        if name == "roicurate.json":
            one_line_error(lambda: src.revert(plane), name)
        assert tree_hashes(plane) == before
    finally:
        chattr("-i", plane / name)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_iscell_is_refused(copy_example):
    plane = copy_example(PLANE)
    os.chmod(plane / "iscell.npy", 0o444)
    before = tree_hashes(plane)
    one_line_error(lambda: src.check_writable(plane), "iscell.npy", "read-only")
    assert tree_hashes(plane) == before
