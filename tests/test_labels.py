"""`roicurate label` and where training labels come from: the label protocol on copies of the shared datasets' real
masks and truth (marked ``datasets``), and a model's own verdict on the bundled example."""
import json
import shutil

import numpy as np
import pytest
from conftest import cli_run as run

from roicurate import RoicurateError
from roicurate.training.data import load_labelled

FIELDS = ("label", "matched_gt", "assigned_gt", "assigned_iou", "best_gt", "best_iou")


def copy_files(datasets, tmp_path, rel, files):
    """Copy only ``files`` of recording ``rel`` (keeps the dataset layout, so labels.json is found)."""
    for f in files:
        dst = tmp_path / rel / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(datasets / rel / f, dst)
    return tmp_path / rel


@pytest.mark.parametrize("rel, unit, truth, key", [
    ("sim/s2p_sim1", "suite2p/plane0", "truth/regions.json", "suite2p/plane0/stat.npy"),
    ("sim/caiman_sim3", "caiman/cnmf_refit_evaluated.hdf5", "truth/regions.json", "caiman/cnmf_refit_evaluated.hdf5"),
    ("real/abo275/501484643", "caiman/estimates.hdf5", "truth/regions.json", "caiman/estimates.hdf5"),
])
@pytest.mark.datasets
def test_label_reproduces_dataset_labels(datasets, tmp_path, rel, unit, truth, key):
    """The label protocol of the datasets (Suite2p lam > 0, CaImAn 0.2 x max, Hungarian, IoU 0.5, somata only)."""
    files = [f"{unit}/{f}" for f in ("stat.npy", "iscell.npy", "ops.npy")] if "suite2p" in unit else [unit]
    files += [truth] + (["truth/classes.json"] if (datasets / rel / "truth/classes.json").exists() else [])
    rec = copy_files(datasets, tmp_path, rel, files)
    before = {f: (rec / f).read_bytes() for f in files}
    r = run("label", rec / unit, "--truth", rec / truth)
    ref = json.loads((datasets / rel / "labels.json").read_text())["rois"][key]
    assert f"{ref['n_label1']} matched one-to-one to a cell at IoU >= 0.5" in r.output
    own = rec / unit / "roicurate_labels.json" if "suite2p" in unit else \
        rec / unit.replace(".hdf5", ".roicurate_labels.json")
    mine = json.loads(own.read_text())
    for f in FIELDS + (("assigned_class",) if "assigned_class" in ref else ()):
        assert mine[f] == ref[f], f
    assert {f: (rec / f).read_bytes() for f in files} == before     # the pipeline's files are untouched


@pytest.mark.datasets
def test_label_multiplane_folder_one_truth_per_plane(datasets, tmp_path):
    rec = copy_files(datasets, tmp_path, "sim/s2p_sim2",
                     [f"suite2p/plane{i}/{f}" for i in (0, 1) for f in ("stat.npy", "iscell.npy", "ops.npy")]
                     + [f"truth/plane{i}/{f}" for i in (0, 1) for f in ("regions.json", "classes.json")])
    r = run("label", rec / "suite2p", "--truth", rec / "truth/plane0/regions.json", ok=False)
    assert r.exit_code != 0 and "2 ROI sets" in r.output and not (rec / "suite2p/plane0/roicurate_labels.json").exists()
    run("label", rec / "suite2p", "--truth", rec / "truth/plane0/regions.json", "--truth", rec / "truth/plane1/regions.json")
    ref = json.loads((datasets / "sim/s2p_sim2/labels.json").read_text())["rois"]
    for i in (0, 1):
        mine = json.loads((rec / f"suite2p/plane{i}/roicurate_labels.json").read_text())
        assert mine["label"] == ref[f"suite2p/plane{i}/stat.npy"]["label"]


@pytest.mark.datasets
def test_own_labels_come_first_and_stale_labels_are_refused(datasets, tmp_path):
    """Labels at IoU 0.7 written by `label` win over the dataset's labels.json (IoU 0.5) in train/evaluate."""
    rec = copy_files(datasets, tmp_path, "sim/s2p_sim1",
                     ["labels.json", "truth/regions.json", "truth/classes.json"]
                     + [f"suite2p/plane0/{f}" for f in ("stat.npy", "iscell.npy", "ops.npy")])
    plane = rec / "suite2p/plane0"
    (rs,) = load_labelled([plane])
    ref = json.loads((rec / "labels.json").read_text())["rois"]["suite2p/plane0/stat.npy"]
    assert rs.labels.tolist() == ref["label"] and rs.recording == "s2p_sim1"
    run("label", plane, "--truth", rec / "truth/regions.json", "--iou-threshold", "0.7")
    (rs,) = load_labelled([plane])
    expect = [int(g >= 0 and v >= 0.7 and c == "soma")
              for g, v, c in zip(ref["assigned_gt"], ref["assigned_iou"], ref["assigned_class"])]
    assert rs.labels.tolist() == expect != ref["label"]
    assert rs.origin["label_source"].endswith("roicurate_labels.json") and rs.recording == "s2p_sim1"

    stat = np.load(plane / "stat.npy", allow_pickle=True)
    for k in ("ypix", "xpix", "lam"):
        stat[0][k] = stat[0][k][1:]
    np.save(plane / "stat.npy", stat)
    with pytest.raises(RoicurateError, match="other ROI masks"):
        load_labelled([plane])


def test_roicurate_own_verdict_is_not_a_label(copy_example, tiny_model):
    """After `apply`, iscell.npy is a model's output: not a label, until a human edits it (Suite2p GUI)."""
    plane = copy_example("plane0")
    run("apply", plane, "--model", tiny_model)
    with pytest.raises(RoicurateError, match="no labelled ROIs"):
        load_labelled([plane])
    iscell = np.load(plane / "iscell.npy")
    iscell[0, 0] = 1 - iscell[0, 0]          # one click in the GUI
    np.save(plane / "iscell.npy", iscell)
    (rs,) = load_labelled([plane])
    assert rs.origin["label_source"] == "pipeline verdict" and rs.labels.tolist() == iscell[:, 0].astype(int).tolist()
