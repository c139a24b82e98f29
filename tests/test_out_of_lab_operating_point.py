"""An operating point chosen on labs the model never saw (`roicurate train --operating-point out-of-lab`)."""
import json

import numpy as np
import pytest
from conftest import cli_run as run

from roicurate.evaluate import metrics
from roicurate.models import Classifier
from roicurate.training.outoflab import lab_of, nested_metrics, operating_point, threshold_for_recall


def test_lab_names():
    assert lab_of("neurofinder_train/neurofinder.02.01") == "neurofinder.02"
    assert lab_of("abo275/501484643") == "abo275"
    assert lab_of("s2p_sim3") == lab_of("caiman_sim1") == "sim"
    assert lab_of("/data/m12/2026-10-03") == "/data/m12/2026-10-03"


def test_threshold_keeps_recall_on_every_lab():
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.5
    groups = np.repeat(["a", "b", "c"], 1000)
    q = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, 3000) + (groups == "b") * 0.1, 0, 1)
    t = threshold_for_recall(y, q, groups, 0.85)
    recalls = [metrics(y[groups == g], q[groups == g], t)["recall"] for g in "abc"]
    assert min(recalls) >= 0.85
    # the highest such threshold: a hair higher and some lab drops below
    assert min(metrics(y[groups == g], q[groups == g], t + 1e-9)["recall"] for g in "abc") < 0.85


def test_nested_numbers_never_use_the_lab_itself():
    rng = np.random.default_rng(1)
    groups = np.repeat(["a", "b", "c"], 500)
    y = rng.random(1500) < 0.6
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1, 1500))))
    nested = nested_metrics(y, p, None, groups)
    inside = groups == "a"
    calib, thr = operating_point(y[~inside], p[~inside], None, groups[~inside])
    assert nested["labs"]["a"]["threshold"] == pytest.approx(thr)
    assert set(nested["labs"]) == {"a", "b", "c"} and nested["pooled"]["n"] == 1500


@pytest.mark.datasets
def test_train_out_of_lab(datasets, tmp_path):
    paths = [datasets / "real/neurofinder_train/neurofinder.01.00/suite2p", datasets / "real/abo275/527048992/suite2p",
             datasets / "sim/s2p_sim2/suite2p"]
    r = run("train", *paths, "--arch", "cnn2", "--epochs", "1", "--operating-point", "out-of-lab", "--shape-prior",
            "--out", tmp_path)
    assert "out of lab abo275: precision" in r.output
    card = json.loads((tmp_path / "model.json").read_text())
    o = card["out_of_lab"]
    assert set(o["labs"]) == {"abo275", "neurofinder.01", "sim"} and o["min_recall"] == 0.85
    assert "every lab's out-of-lab recall is >= 0.85" in card["threshold_rule"]
    assert card["calibration"]["folded"] and "out-of-lab" in card["calibration"]["fitted_on"]
    assert card["training"]["split"] == "by lab" and card["training"]["validation_recordings"] == []
    lo, hi = card["training"]["reference_diameter_px"]
    assert 8 < lo <= hi < 20
    assert all(0 <= m["threshold"] <= 1 and m["n"] > 0 for m in o["nested"]["labs"].values())
    clf = Classifier.load(str(tmp_path))
    assert clf.crop.scale == "reference" and 0 <= clf.threshold <= 1
    # the named points: the card's threshold is the recall point, chosen on the same scores; each lab's numbers
    # at every point are nested (the recall point's are the nested numbers above)
    points = card["operating_points"]
    assert set(points) == {"recall", "balanced", "precision"} and clf.default_point == "recall"
    assert points["recall"] == {"threshold": card["threshold"], "rule": card["threshold_rule"]}
    assert clf.threshold_at("precision") == points["precision"]["threshold"]
    for lab, m in o["nested"]["labs"].items():
        assert o["nested"]["points"]["recall"][lab]["threshold"] == pytest.approx(m["threshold"])
        assert set(o["nested"]["points"]["precision"][lab]) >= {"precision", "recall", "f1"}
    # two labs cannot check a threshold on a third
    r = run("train", *paths[:2], "--arch", "cnn2", "--epochs", "1", "--operating-point", "out-of-lab",
            "--out", tmp_path / "two", ok=False)
    assert r.exit_code != 0 and "three or more labs" in r.output


def test_image_dropout_trains_a_model_that_works_without_the_image(suite2p_sessions, tmp_path):
    from roicurate.plugins import sources
    sims = [suite2p_sessions[1], suite2p_sessions[2]]
    run("train", *sims, "--arch", "cnn2", "--epochs", "1", "--val", "none", "--channels", "mask,max",
        "--image-dropout", "0.5", "--out", tmp_path)
    clf = Classifier.load(str(tmp_path))
    assert clf.crop.optional_images and clf.crop.channels == ("mask", "max")
    assert "image channels dropped in 50%" in json.loads((tmp_path / "model.json").read_text())["training"]["augmentation"]
    rs = sources()["suite2p"].read(suite2p_sessions[3] / "plane0")
    with_image = clf.predict_proba(rs)[:, 1]
    rs.images.pop("max")
    without = clf.predict_proba(rs)[:, 1]                 # zeros in the image channel, no error
    assert np.isfinite(without).all() and not np.allclose(with_image, without)
