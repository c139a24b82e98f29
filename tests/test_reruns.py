"""Issue #23 item 1: a pipeline re-run with the same ROI count (reordered ROIs, a new verdict) is told from a hand
edit by the fingerprint of the ROIs in every record (``roicurate.rois.roi_fingerprint``): ``status`` says
"re-run", ``apply`` keeps the earlier curation's files aside under dated names and backs up the new run's verdict,
``revert`` never puts a verdict on ROIs it was not made for. Records made before the fingerprint stay as they were."""
import json
import shutil

import numpy as np
import pytest
from conftest import tree_hashes

from roicurate import RoicurateError
from roicurate.api.restoring import unit_status
from roicurate.plaindata import load_npy
from roicurate.rois import RoiSet, roi_fingerprint
from roicurate_plugins.caiman import CaimanSource
from roicurate_plugins.suite2p import Suite2pSource
from test_suite2p import curate

src = Suite2pSource()


def rerun_suite2p(folder, seed=1):
    """What a Suite2p re-run with the same ROI count leaves: stat.npy's ROIs in another order (so the same count,
    other geometry per index) and a new iscell.npy for them (Suite2p's classifier ran again)."""
    stat = load_npy(folder / "stat.npy")
    order = np.random.default_rng(seed).permutation(len(stat))
    np.save(folder / "stat.npy", stat[order], allow_pickle=True)
    iscell = np.load(folder / "iscell.npy")
    p = np.random.default_rng(seed).random(len(stat))
    np.save(folder / "iscell.npy", np.stack([(p > 0.5).astype(np.float64), p], 1).astype(iscell.dtype))
    return order


def test_fingerprint_follows_geometry_not_order_of_reading():
    rs = RoiSet.from_pixels((8, 9), [[1, 2], [3]], [[4, 5], [6]], [[1.0, 0.5], [2.0]])
    same = RoiSet.from_pixels((8, 9), [np.array([1, 2], np.int64), [3]], [[4, 5], [6]], [[1.0, 0.5], [2.0]])
    assert roi_fingerprint(rs) == roi_fingerprint(same)
    for other in (RoiSet.from_pixels((8, 9), [[3], [1, 2]], [[6], [4, 5]], [[2.0], [1.0, 0.5]]),   # reordered
                  RoiSet.from_pixels((8, 9), [[1, 2], [3]], [[4, 5], [6]], [[1.0, 0.6], [2.0]]),   # reweighted
                  RoiSet.from_pixels((9, 9), [[1, 2], [3]], [[4, 5], [6]], [[1.0, 0.5], [2.0]])):  # frame
        assert roi_fingerprint(other) != roi_fingerprint(rs)


def test_suite2p_record_names_the_rois(copy_example):
    plane = copy_example("plane0")
    curate(plane)
    rec = json.loads((plane / "roicurate.json").read_text())
    assert rec["roi_sha256"] == roi_fingerprint(src.read(plane))


def test_suite2p_rerun_status_says_rerun(copy_example):
    plane = copy_example("plane0")
    curate(plane)
    rerun_suite2p(plane)
    row = unit_status(src, plane)
    assert row["state"] == "re-run", row
    from roicurate.api.lines import status_line
    assert "re-run" in status_line(row).lower()


def test_suite2p_apply_after_rerun_keeps_the_earlier_curation_aside(copy_example):
    plane = copy_example("plane0")
    curate(plane)
    earlier = {n: (plane / n).read_bytes() for n in ("roicurate.json", "iscell_suite2p.npy")}
    rerun_suite2p(plane)
    new_run = (plane / "iscell.npy").read_bytes()
    curate(plane, seed=3)                                     # no --force: a re-run is not a hand edit
    aside = {p.name: p.read_bytes() for p in plane.glob("*_before-rerun-*")}
    assert sorted(earlier.values()) == sorted(aside.values()), sorted(aside)
    assert all(n.startswith(("roicurate_before-rerun-", "iscell_suite2p_before-rerun-")) for n in aside)
    assert (plane / "iscell_suite2p.npy").read_bytes() == new_run           # the new run's verdict is the backup
    assert not list(plane.glob("iscell_edited-*"))                          # not taken for hand edits
    assert unit_status(src, plane)["state"] == "curated"
    src.revert(plane)
    assert (plane / "iscell.npy").read_bytes() == new_run                   # revert gives the new run's verdict
    assert len(list(plane.glob("*_before-rerun-*"))) == 2                   # the earlier curation is never deleted


@pytest.mark.parametrize("force", [False, True])
def test_suite2p_revert_after_rerun_refuses_and_changes_nothing(copy_example, force):
    plane = copy_example("plane0")
    curate(plane)
    rerun_suite2p(plane)
    before = tree_hashes(plane)
    with pytest.raises(RoicurateError) as e:
        src.revert(plane, force=force)
    msg = str(e.value)
    assert "\n" not in msg and str(plane / "stat.npy") in msg and "nothing changed" in msg, msg
    assert tree_hashes(plane) == before


def test_suite2p_record_without_fingerprint_is_read_as_before(copy_example):
    """A record written before the fingerprint: never a false re-run claim; a re-run still reads as edits (as
    before this change), and apply still refuses it without --force."""
    plane = copy_example("plane0")
    curate(plane)
    rec = json.loads((plane / "roicurate.json").read_text())
    del rec["roi_sha256"]
    (plane / "roicurate.json").write_text(json.dumps(rec))
    assert unit_status(src, plane)["state"] == "curated"
    rerun_suite2p(plane)
    assert unit_status(src, plane)["state"] == "edited since"
    with pytest.raises(RoicurateError):
        src.check_writable(plane)


def test_suite2p_folder_rerun_with_combined(copy_example, tiny_model):
    """A whole suite2p/ folder (two planes + combined/) curated, re-run by Suite2p (planes and combined/), curated
    again without --force; combined/ follows the planes and its earlier record is kept aside too."""
    from roicurate.api import apply, status
    s2p = copy_example()
    apply(s2p, model=tiny_model)
    for name in ("plane0", "plane1"):
        rerun_suite2p(s2p / name, seed=5)
    combined = load_npy(s2p / "combined" / "stat.npy")     # Suite2p's combine step ran again: other ROIs, in order
    np.save(s2p / "combined" / "stat.npy", combined[::-1], allow_pickle=True)
    np.save(s2p / "combined" / "iscell.npy", np.concatenate([np.load(s2p / p / "iscell.npy")
                                                             for p in ("plane0", "plane1")]))
    assert {r.state for r in status(s2p)} == {"re-run"}
    apply(s2p, model=tiny_model)
    for name in ("plane0", "plane1", "combined"):
        assert list((s2p / name).glob("roicurate_before-rerun-*.json")), name
    assert {r.state for r in status(s2p)} == {"curated"}


def test_suite2p_rerun_with_another_roi_count_is_curated_afresh(copy_example):
    """With the fingerprint a re-run with fewer ROIs is a re-run too (a record without it: refused, as before,
    tests/test_safety_suite2p.py)."""
    plane = copy_example("plane0")
    curate(plane)
    stat = load_npy(plane / "stat.npy")
    np.save(plane / "stat.npy", stat[:-4], allow_pickle=True)
    np.save(plane / "iscell.npy", np.load(plane / "iscell_suite2p.npy")[:-4])
    for f in ("F.npy", "Fneu.npy", "spks.npy"):
        np.save(plane / f, np.load(plane / f)[:-4])
    assert unit_status(src, plane)["state"] == "re-run"
    before = tree_hashes(plane)
    with pytest.raises(RoicurateError, match="stat.npy"):
        src.revert(plane, force=True)
    assert tree_hashes(plane) == before
    new_run = (plane / "iscell.npy").read_bytes()
    curate(plane)
    assert (plane / "iscell_suite2p.npy").read_bytes() == new_run


# ---- CaImAn: the record is in the file, so a re-run (a new cnm.save()) leaves a backup of another save ----------
caiman = CaimanSource()


def curate_caiman(path, seed=0, force=False):
    from test_caiman import curation_for as caiman_curation
    rs = caiman.read(path)
    caiman.check_writable(path, force=force)
    return caiman.write(path, rs, caiman_curation(len(rs), seed), force=force)


@pytest.fixture
def caiman_rerun(copy_caiman, caiman_files):
    """A CaImAn file curated by roicurate, then replaced by a new CaImAn run with as many components (another
    seed: other components, CaImAn's own new verdict)."""
    path = copy_caiman("evaluated")
    curate_caiman(path)
    shutil.copyfile(caiman_files["evaluated_seed1"], path)
    return path


def test_caiman_record_names_the_components(copy_caiman):
    import h5py
    path = copy_caiman("evaluated")
    curate_caiman(path)
    with h5py.File(path, "r") as f:
        assert f["estimates"].attrs["roicurate_roi_sha256"] == roi_fingerprint(caiman.read(path))


def test_caiman_rerun_status_apply_revert(caiman_rerun):
    path = caiman_rerun
    backup = caiman.backup_path(path)
    assert unit_status(caiman, path)["state"] == "re-run"
    before = tree_hashes(path.parent)
    with pytest.raises(RoicurateError) as e:           # the old backup is not this file's original
        caiman.revert(path, force=True)
    assert "\n" not in str(e.value) and "re-ran" in str(e.value) and "nothing changed" in str(e.value)
    assert tree_hashes(path.parent) == before
    earlier, new_run = backup.read_bytes(), path.read_bytes()
    note = curate_caiman(path)                           # no --force: a re-run is not a re-save by hand
    kept = list(path.parent.glob("*.roicurate-backup-stale-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == earlier and kept[0].name in note
    assert backup.read_bytes() == new_run and unit_status(caiman, path)["state"] == "curated"
    caiman.revert(path)
    assert path.read_bytes() == new_run and kept[0].exists()


def test_caiman_resave_with_the_same_components_is_still_refused(copy_caiman):
    """Same components, other content (re-saved by hand): not a re-run; apply refuses without --force as before,
    and status says the record is missing with the advice apply accepts."""
    import h5py
    path = copy_caiman("evaluated")
    original = path.read_bytes()
    curate_caiman(path)
    path.write_bytes(original)
    with h5py.File(path, "r+") as f:
        f["estimates"].attrs["note"] = "re-saved"
    row = unit_status(caiman, path)
    assert row["state"] == "record missing" and "--force" in row["detail"], row
    with pytest.raises(RoicurateError, match="re-saved"):
        caiman.check_writable(path)
    curate_caiman(path, force=True)                      # the advice status gave works
