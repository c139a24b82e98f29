"""Four-class models (roicurate_plugins/fourclass.py) and the core's K-class support: class rules, training with
cross-entropy, per-class evaluation, class probabilities written beside the pipeline's verdict (Suite2p
roicurate_classes.npy, CaImAn estimates/roicurate_class_probability), --also-accept, revert
byte for byte, and the report's per-class section. Real files on disk: the bundled Suite2p example and labelled
CaImAn recordings built by the tests (conftest.caiman_sessions); the checks on the real datasets' labels are
marked ``datasets``."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import cli_run as run

from roicurate.plugins import default_model
from roicurate.crops import CropSpec
from roicurate.curation import curate
from roicurate.labels import apply_class_rule, check_class_rule
from roicurate.models import Classifier, save_model
from roicurate.plugins import model_specs, sources
from roicurate.training.data import load_labelled
from roicurate_plugins.fourclass import CLASSES, SIM_CLASS_RULE, vgg13_4c

sklearn_metrics = pytest.importorskip("sklearn.metrics")

REFIT = "caiman/cnmf_refit_evaluated.hdf5"
TINY = ("--arch", "vgg13-4c", "--build", "width=0.125", "--build", "fc=16", "--epochs", "1", "--batch-size", "32")


def expected_classes(record):
    """The simulations' four classes, recomputed from labels.json without the rule machinery."""
    gt, iou, cls = (np.array(record[k], dtype=object) for k in ("assigned_gt", "assigned_iou", "assigned_class"))
    iou = iou.astype(float)
    has = gt.astype(int) >= 0
    soma, proc = has & (cls == "soma"), has & (cls == "process")
    out = np.full(len(gt), CLASSES.index("noise"))
    out[proc & (iou >= 0.1)] = CLASSES.index("process")
    out[soma & (iou >= 0.1)] = CLASSES.index("doubtful")
    out[soma & (iou >= 0.5)] = CLASSES.index("neuron")
    return out


@pytest.fixture(scope="module")
def trained(caiman_sessions, tmp_path_factory):
    """A tiny vgg13-4c trained end to end by `roicurate train` (1 epoch) on caiman_sim1, validated on caiman_sim2."""
    out = tmp_path_factory.mktemp("fourclass") / "m"
    r = run("train", *[caiman_sessions[i] / REFIT for i in (1, 2)], *TINY,
            "--val", "caiman_sim2", "--out", out, "--name", "tiny4")
    return out, r.output


@pytest.fixture(scope="module")
def untrained_s2p(tmp_path_factory):
    """An untrained four-class network saved as a Suite2p model (64x64 crops), for the writers."""
    torch.manual_seed(1)
    kw = {"size": 64, "width": 0.125, "fc": 16}
    card = {"arch": "vgg13-4c", "build_kwargs": kw, "pipeline": "suite2p", "crop": CropSpec(64, binarize=0.0).to_dict(),
            "classes": list(CLASSES), "positive_class": "neuron", "threshold": 0.3, "class_rule": SIM_CLASS_RULE}
    folder = tmp_path_factory.mktemp("s2p4")
    save_model(folder, "s2p4", vgg13_4c(**kw), card)
    return folder


def test_registered_with_class_names_and_default_models_stay_binary():
    specs = model_specs()
    for name in ("vgg13-4c", "vgg16-4c", "vgg19-4c", "resnet50-4c", "cnn2-4c", "caiman-vgg16-4c"):
        assert specs[name].classes == CLASSES and specs[name].class_rule["classes"] == list(CLASSES)
    assert default_model("caiman") == "caiman-cnn2" and default_model("suite2p") == "suite2p-resnet50"
    out = run("models").output
    assert "vgg16-4c" in out and "neuron,doubtful,process,noise" in out
    for depth, arch in ((13, "vgg13-4c"), (16, "vgg16-4c"), (19, "vgg19-4c")):
        net = specs[arch].build(size=50)
        weight_layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(weight_layers) == depth and net(torch.zeros(2, 1, 50, 50)).shape == (2, 4)
        assert specs[arch].build(size=64)(torch.zeros(1, 1, 64, 64)).shape == (1, 4)


def test_class_rule_reproduces_the_built_simulation_labels(caiman_sessions):
    for i in (1, 3):
        rec = json.loads((caiman_sessions[i] / "labels.json").read_text())["rois"][REFIT]
        got = apply_class_rule(check_class_rule(SIM_CLASS_RULE), rec)
        assert np.array_equal(got, expected_classes(rec)) and len(set(got.tolist())) == 4
        assert np.array_equal(got == 0, np.asarray(rec["label"]) == 1)
    (rs,) = load_labelled([caiman_sessions[3] / REFIT], class_rule=SIM_CLASS_RULE)
    assert rs.origin["label_classes"] == list(CLASSES) and rs.origin["label_positive"] == "neuron"
    with pytest.raises(Exception, match="'positive' must be one of"):
        check_class_rule(dict(SIM_CLASS_RULE, positive="cell"))


@pytest.mark.datasets
def test_class_rule_reproduces_the_simulation_labels(datasets):
    for sim in ("caiman_sim1", "caiman_sim3", "s2p_sim3"):
        d = json.loads((datasets / "sim" / sim / "labels.json").read_text())
        rec = d["rois"][REFIT if sim.startswith("caiman") else "suite2p/plane0/stat.npy"]
        got = apply_class_rule(check_class_rule(SIM_CLASS_RULE), rec)
        assert np.array_equal(got, expected_classes(rec))
        # the neuron class is exactly the datasets' cell label (soma at IoU >= 0.5)
        assert np.array_equal(got == 0, np.asarray(rec["label"]) == 1)
    (rs,) = load_labelled([datasets / "sim/caiman_sim3" / REFIT], class_rule=SIM_CLASS_RULE)
    assert rs.origin["label_classes"] == list(CLASSES) and rs.origin["label_positive"] == "neuron"
    (real,) = load_labelled([datasets / "real/abo275/527048992/caiman/estimates.hdf5"], class_rule=SIM_CLASS_RULE,
                            use_pipeline_labels=False)
    assert "label_classes" not in real.origin and set(np.unique(real.labels)) == {0, 1}   # cell / not cell only
    with pytest.raises(Exception, match="'positive' must be one of"):
        check_class_rule(dict(SIM_CLASS_RULE, positive="cell"))


def test_training_end_to_end(trained, caiman_sessions):
    out, output = trained
    card = json.loads((out / "tiny4.json").read_text())
    assert card["classes"] == list(CLASSES) and card["positive_class"] == "neuron"
    assert card["class_rule"] == SIM_CLASS_RULE
    assert card["calibration"]["classes"] and card["calibration"]["folded"]
    assert card["training"]["class_balance"].startswith("cross-entropy")
    d = json.loads((caiman_sessions[1] / "labels.json").read_text())
    counts = np.bincount(expected_classes(d["rois"][REFIT]), minlength=4)
    val = json.loads((caiman_sessions[2] / "labels.json").read_text())["rois"][REFIT]
    assert card["training"]["class_counts"]["train"] == dict(zip(CLASSES, counts.tolist()))
    assert card["training"]["history"][0]["val_accuracy"] is not None
    cm = np.array(card["validation"]["classes"]["pooled"]["confusion_matrix"])
    assert cm.shape == (4, 4) and cm.sum() == len(val["label"])
    assert card["training"]["class_counts"]["validation"]["neuron"] == sum(val["label"])
    assert "macro-F1" in output and "validation precision" in output


def test_evaluate_confusion_matrix_matches_scikit_learn(trained, caiman_sessions, caiman_files, tmp_path):
    out, _ = trained
    r = run("evaluate", caiman_sessions[3] / REFIT, "--model", out, "--out", tmp_path / "e")
    assert "macro-F1" in r.output and "predicted as:" in r.output and (tmp_path / "e/confusion.png").exists()
    m = json.loads((tmp_path / "e/metrics.json").read_text())
    import csv
    rows = list(csv.DictReader(open(tmp_path / "e/scores.csv")))
    y = np.array([int(r["class_label"]) for r in rows])
    p = np.array([int(r["predicted_class"]) for r in rows])
    proba = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    assert np.array_equal(p, proba.argmax(1)) and np.allclose(proba.sum(1), 1)
    pooled = m["classes"]["pooled"]
    assert pooled["confusion_matrix"] == sklearn_metrics.confusion_matrix(y, p, labels=range(4)).tolist()
    assert pooled["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    f1 = sklearn_metrics.f1_score(y, p, labels=range(4), average=None, zero_division=0)
    for k, c in enumerate(CLASSES):
        assert (pooled["per_class"][c]["f1"] or 0) == pytest.approx(f1[k])
    # binary metrics stay neuron vs the rest: the label column is exactly "class == neuron"
    assert [int(r["label"]) for r in rows] == (y == 0).astype(int).tolist()
    # recordings labelled cell / not cell only (here by CaImAn's own verdict): binary numbers, no class numbers
    r = run("evaluate", caiman_files["shape_only"], "--model", out)
    assert "macro-F1" not in r.output and "roc_auc" in r.output


def test_suite2p_class_probabilities_keep_processes_and_revert(copy_example, hash_tree, untrained_s2p, tiny_model):
    s2p = copy_example()
    original = hash_tree(s2p)
    run("apply", s2p, "--model", untrained_s2p)
    accepted = {}
    for plane in ("plane0", "plane1"):
        p = s2p / plane
        proba, iscell = np.load(p / "roicurate_classes.npy"), np.load(p / "iscell.npy")
        rec = json.loads((p / "roicurate.json").read_text())
        assert proba.dtype == np.float64 and proba.shape == (len(iscell), 4) and np.allclose(proba.sum(1), 1)
        assert np.array_equal(iscell[:, 1], proba[:, 0])                       # column 1 = P(neuron)
        assert np.array_equal(iscell[:, 0] > 0, proba[:, 0] >= 0.3)
        assert rec["classes"] == list(CLASSES) and rec["class_probabilities"] == "roicurate_classes.npy"
        accepted[plane] = int(iscell[:, 0].sum())
    # --also-accept process: accepted = P(neuron) + P(process) >= threshold; iscell's probability stays P(neuron)
    r = run("apply", s2p, "--model", untrained_s2p, "--also-accept", "process")
    assert "on P(neuron + process)" in r.output
    more = 0
    for plane in ("plane0", "plane1"):
        proba, iscell = np.load(s2p / plane / "roicurate_classes.npy"), np.load(s2p / plane / "iscell.npy")
        assert np.array_equal(iscell[:, 0] > 0, proba[:, 0] + proba[:, 2] >= 0.3)
        assert np.array_equal(iscell[:, 1], proba[:, 0])
        more += int(iscell[:, 0].sum()) - accepted[plane]
        assert json.loads((s2p / plane / "roicurate.json").read_text())["accepted_classes"] == ["neuron", "process"]
    assert more > 0
    # unknown classes are refused before anything is written
    before = hash_tree(s2p)
    r = run("apply", s2p, "--model", untrained_s2p, "--also-accept", "dendrite", ok=False)
    assert r.exit_code == 1 and "has no class 'dendrite'" in r.output and len(r.output.strip().splitlines()) == 1
    r = run("apply", s2p, "--model", tiny_model, "--also-accept", "process", ok=False)
    assert r.exit_code == 1 and "has no class 'process'" in r.output
    assert hash_tree(s2p) == before
    # a two-class model afterwards leaves no stale class file
    run("apply", s2p, "--model", tiny_model)
    assert not (s2p / "plane0/roicurate_classes.npy").exists()
    run("apply", s2p, "--model", untrained_s2p)
    run("revert", s2p)
    assert hash_tree(s2p) == original


def test_caiman_class_dataset_attribute_and_revert(trained, caiman_sessions, tmp_path):
    out, _ = trained
    f = tmp_path / "cnmf_refit_evaluated.hdf5"
    shutil.copyfile(caiman_sessions[3] / REFIT, f)
    f.chmod(0o644)
    n = len(sources()["caiman"].read(f))
    original = f.read_bytes()
    run("apply", f, "--model", out)
    clf = Classifier.load(str(out))
    with h5py.File(f, "r") as h:
        est = h["estimates"]
        proba = est["roicurate_class_probability"][()]
        assert proba.shape == (n, 4) and np.allclose(proba.sum(1), 1)
        assert json.loads(est.attrs["roicurate_classes"]) == list(CLASSES)
        assert np.array_equal(est["roicurate_probability"][()], proba[:, 0])
        assert np.array_equal(est["idx_components"][()], np.flatnonzero(proba[:, 0] >= clf.threshold))
    # --also-accept process over it needs no --force (the verdict is still roicurate's own) and stays "intact"
    run("apply", f, "--model", out, "--also-accept", "process", "--threshold", "0.5")
    with h5py.File(f, "r") as h:
        est = h["estimates"]
        p = est["roicurate_class_probability"][()]
        assert np.array_equal(est["idx_components"][()], np.flatnonzero(p[:, 0] + p[:, 2] >= 0.5))
        assert json.loads(est.attrs["roicurate_accept"]) == ["neuron", "process"]
    assert sources()["caiman"].recorded(f)["intact"]
    assert sources()["caiman"].recorded(f)["also_accept"] == ["process"]
    run("revert", f)
    assert f.read_bytes() == original


@pytest.mark.datasets
def test_bundled_model_beats_the_majority_class_on_a_held_out_simulation(datasets):
    clf = Classifier.load("caiman-vgg16-4c")
    assert "caiman_sim3" not in " ".join(clf.card["training"]["recordings"] + clf.card["training"]["validation_recordings"])
    (rs,) = load_labelled([datasets / "sim/caiman_sim3" / REFIT], class_rule=clf.card["class_rule"])
    y = rs.labels
    pred = clf.predict_proba(rs).argmax(1)
    majority = np.bincount(y).max() / len(y)
    assert (pred == y).mean() > majority + 0.1


def test_report_counts_and_gallery_per_class(trained, caiman_sessions, tmp_path):
    from roicurate.report import write_report
    out, _ = trained
    src = sources()["caiman"]
    rs = src.read(caiman_sessions[3] / REFIT)
    clf = Classifier.load(str(out))
    cur = curate(rs, clf, also_accept=["process"])
    counts = cur.class_counts()
    page = write_report(tmp_path / "r", [("caiman_sim3", rs, cur, clf)], n_explain=1, n_examples=1,
                        stride=5, progress=False).read_text()
    assert "<h3>Classes</h3>" in page and "P(neuron + process)" in page
    for k, c in enumerate(CLASSES):
        assert f"<tr><th>{c}</th><td>{counts[c]}</td>" in page
        assert (tmp_path / "r/caiman_sim3" / f"class{k}.png").exists() == (counts[c] > 0)


def test_user_errors(caiman_sessions, caiman_files, tmp_path):
    sim = caiman_sessions[1] / REFIT
    bad = tmp_path / "rule.json"
    bad.write_text(json.dumps({"classes": ["a"]}))
    for args, msg in ((("--arch", "vgg13-4c", "--class-rule", bad), "expected"),
                      (("--arch", "cnn2", "--class-rule", bad), "only the classes not_cell, cell")):
        r = run("train", sim, "--epochs", "1", "--val", "none", "--out", tmp_path / "x", *args, ok=False)
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    real = caiman_files["shape_only"]                     # no labels.json: CaImAn's verdict, cell / not cell
    r = run("train", real, sim, *TINY, "--val", "none", "--out", tmp_path / "y", ok=False)
    assert r.exit_code == 1 and "cell / not cell only" in r.output


@pytest.mark.datasets
def test_class_rule_on_labels_written_by_roicurate_label(copy_dataset, datasets):
    """A lab's own path: `roicurate label` with a classes.json records each ROI's partner class; the rule turns
    that into the four classes exactly as it does for the dataset's labels.json."""
    sim = copy_dataset("sim/s2p_sim3")
    (sim / "labels.json").unlink()
    plane = sim / "suite2p/plane0"
    run("label", plane, "--truth", sim / "truth/regions.json")
    (rs,) = load_labelled([plane], class_rule=SIM_CLASS_RULE)
    assert rs.origin["label_source"].endswith("roicurate_labels.json")
    rec = json.loads((datasets / "sim/s2p_sim3/labels.json").read_text())["rois"]["suite2p/plane0/stat.npy"]
    assert np.array_equal(rs.labels, expected_classes(rec))
