"""Metrics, calibration, baselines and `roicurate evaluate`, checked against independent recomputation
(the metric definitions themselves: tests/test_metric_and_fit_numbers.py)."""
import csv
import glob
import json

import numpy as np
import pytest
from conftest import cli_run as run
from sklearn import metrics as sklearn_metrics

from roicurate import calibrate
from roicurate.baselines import suite2p_builtin
from roicurate.evaluate import ece, metrics, roc_auc
from roicurate.plugins import sources
from roicurate.training.data import load_labelled


def manual_ece(y, s, bins=15):
    """Bins (lo, hi], the first [0, hi] (Guo et al. 2017; scikit-learn's calibration_curve)."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = ((s > lo) if b else (s >= lo)) & (s <= hi)
        if m.any():
            total += m.sum() * abs(y[m].mean() - s[m].mean())
    return total / len(y)


def test_metrics_on_tied_scores_recompute():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.4
    s = np.round(np.clip(0.3 * y + rng.random(500) * 0.8, 0, 1), 2)     # rounded: many ties, some on bin edges
    m = metrics(y, s, 0.5)
    a = s >= 0.5
    assert m["precision"] == pytest.approx(sklearn_metrics.precision_score(y, a))
    assert m["recall"] == pytest.approx(sklearn_metrics.recall_score(y, a))
    assert m["f1"] == pytest.approx(sklearn_metrics.f1_score(y, a))
    assert m["confusion_matrix"] == [[int((~y & ~a).sum()), int((~y & a).sum())], [int((y & ~a).sum()), int((y & a).sum())]]
    assert m["ece"] == pytest.approx(manual_ece(y.astype(float), s))
    assert np.isnan(roc_auc(np.ones(5, bool), np.arange(5))) and np.isnan(ece(y, s * 10))


def test_calibration_lowers_ece_on_held_out_scores():
    """An over-confident score (logits x3) fitted on one half, measured on the other half."""
    rng = np.random.default_rng(1)
    p_true = rng.beta(2, 2, 4000)
    y = rng.random(4000) < p_true
    s = calibrate.sigmoid(3 * calibrate.logit(p_true))
    fit, held = slice(0, 2000), slice(2000, None)
    before = ece(y[held], s[held])
    for method in ("temperature", "isotonic"):
        c = calibrate.fit(method, y[fit], s[fit])
        assert c["ece_after"] < c["ece_before"]
        after = ece(y[held], calibrate.apply(c, s[held]))
        assert after < before / 2, (method, before, after)
    assert calibrate.fit("temperature", y[fit], s[fit])["temperature"] == pytest.approx(3, rel=0.15)


def test_platt_undoes_a_shift_that_temperature_cannot():
    """Class-balanced training shifts every logit (here by +1.5): Platt's bias removes it, a temperature does not."""
    rng = np.random.default_rng(2)
    p_true = rng.beta(2, 2, 4000)
    y = rng.random(4000) < p_true
    s = calibrate.sigmoid(calibrate.logit(p_true) + 1.5)
    fit, held = slice(0, 2000), slice(2000, None)
    platt, temp = calibrate.fit("platt", y[fit], s[fit]), calibrate.fit("temperature", y[fit], s[fit])
    assert platt["a"] == pytest.approx(1, abs=0.15) and platt["b"] == pytest.approx(-1.5, abs=0.2)
    e_platt = ece(y[held], calibrate.apply(platt, s[held]))
    e_temp = ece(y[held], calibrate.apply(temp, s[held]))
    assert e_platt < e_temp / 2 and e_platt < 0.05


@pytest.mark.parametrize("calibration", [{"method": "platt", "a": 0.7, "b": -1.2},
                                         {"method": "temperature", "temperature": 2.5}])
def test_calibration_folds_exactly_into_the_network(calibration):
    import torch
    from roicurate_plugins.nets import cnn2
    torch.manual_seed(0)
    net = cnn2(size=50).eval()
    x = torch.randn(8, 1, 50, 50)
    with torch.no_grad():
        p = torch.sigmoid(net(x)[:, 0]).double().numpy()
    calibrate.fold_affine(net, *calibrate.affine(calibration), x)
    with torch.no_grad():
        q = torch.sigmoid(net(x)[:, 0]).double().numpy()
    np.testing.assert_allclose(q, calibrate.apply(calibration, p), atol=1e-6)


def test_suite2p_builtin_reproduces_suite2p(example_suite2p):
    """Suite2p 1.1.0's own iscell[:, 1] of the bundled run (skew, npix_norm, compact), without Suite2p."""
    for plane in ("plane0", "plane1"):
        rs = sources()["suite2p"].read(example_suite2p / plane)
        p, accepted = suite2p_builtin(rs)
        iscell = np.load(example_suite2p / plane / "iscell.npy")
        np.testing.assert_allclose(p, iscell[:, 1], rtol=0, atol=1e-9)
        assert np.array_equal(accepted, iscell[:, 0] > 0.5)


@pytest.mark.datasets
def test_suite2p_builtin_on_real_sets_matches_dataset_readme(datasets):
    """The README's baseline table: ABO 275 Suite2p ROIs, keys npix_norm + compact: ROC AUC 0.655, F1 0.870."""
    sets = load_labelled(sorted(glob.glob(str(datasets / "real/abo275/*/suite2p"))), use_pipeline_labels=False)
    y = np.concatenate([rs.labels for rs in sets]).astype(bool)
    p, a = map(np.concatenate, zip(*[suite2p_builtin(rs) for rs in sets]))
    assert round(roc_auc(y, p), 3) == 0.655 and round(metrics(y, p, 0.5, a)["f1"], 3) == 0.870


def test_evaluate_writes_numbers_and_figures_that_recompute(suite2p_sessions, tmp_path, tiny_model):
    paths = (suite2p_sessions[2], suite2p_sessions[1])
    run("evaluate", *paths, "--model", tiny_model, "--out", tmp_path / "first")
    with open(tmp_path / "first/scores.csv") as f:
        thr = float(np.median([float(r["model"]) for r in csv.DictReader(f)]))   # an untrained model: pick a threshold
    out = tmp_path / "eval"
    r = run("evaluate", *paths, "--model", tiny_model, "--out", out, "--threshold", thr)
    assert "s2p_sim2" in r.output and "Suite2p built-in" in r.output
    for f in ("metrics.json", "scores.csv", "roc.png", "pr.png", "reliability.png"):
        assert (out / f).stat().st_size > 0
    numbers = json.loads((out / "metrics.json").read_text())
    for k in ("precision", "recall", "f1", "roc_auc", "pr_auc", "ece", "confusion_matrix"):
        assert k in numbers["pooled"] and k in numbers["per_recording"]["s2p_sim1"]
    assert set(numbers["baselines"]) == {"accept_all", "pipeline", "suite2p_builtin"}
    assert set(numbers["per_recording"]) == {"s2p_sim1", "s2p_sim2"}          # s2p_sim2's two planes: one recording
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 34 + 34 + 27 == numbers["n_rois"]
    y = np.array([int(r["label"]) for r in rows], bool)
    s = np.array([float(r["model"]) for r in rows])
    rec = np.array([r["recording"] for r in rows])
    for key, want in (("pooled", slice(None)), ("s2p_sim2", rec == "s2p_sim2")):
        m = numbers["pooled"] if key == "pooled" else numbers["per_recording"][key]
        yy, ss = y[want], s[want]
        assert m["f1"] == pytest.approx(sklearn_metrics.f1_score(yy, ss >= thr))
        assert m["precision"] == pytest.approx(sklearn_metrics.precision_score(yy, ss >= thr))
        assert m["recall"] == pytest.approx(sklearn_metrics.recall_score(yy, ss >= thr))
        assert m["roc_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(yy, ss))
        assert m["pr_auc"] == pytest.approx(sklearn_metrics.average_precision_score(yy, ss))
        assert m["ece"] == pytest.approx(manual_ece(yy.astype(float), ss))
    per = numbers["per_recording"]
    assert numbers["macro"]["f1"] == pytest.approx(np.mean([per[k]["f1"] for k in per]))
    iscell = np.concatenate([np.load(suite2p_sessions[i] / p / "iscell.npy") for i, p in
                             ((2, "plane0"), (2, "plane1"), (1, "plane0"))])
    assert numbers["baselines"]["pipeline"]["pooled"]["f1"] == pytest.approx(sklearn_metrics.f1_score(y, iscell[:, 0] > 0))
    assert numbers["baselines"]["accept_all"]["pooled"]["recall"] == 1.0
    # the threshold of best pooled F1 on these ROIs (what a lab may take into `apply --threshold`)
    best = numbers["best_threshold"]
    f1_at = lambda t: sklearn_metrics.f1_score(y, s >= t)
    assert best["f1"] == pytest.approx(f1_at(best["threshold"])) == pytest.approx(max(f1_at(t) for t in set(s)))
    assert best["f1"] > numbers["pooled"]["f1"] and f"best threshold is {best['threshold']:.3f}" in r.output


def test_pipeline_baseline_is_the_original_verdict_after_apply(copy_example, tiny_model, tmp_path):
    from conftest import write_labels_json
    s2p = copy_example("", "s2p_sim2/suite2p").parent
    write_labels_json(s2p)                               # labels of the recording, as a dataset keeps them
    original = np.load(s2p / "suite2p/plane0/iscell.npy")
    run("apply", s2p / "suite2p", "--model", tiny_model, "--threshold", "0.9")
    run("evaluate", s2p / "suite2p/plane0", "--model", tiny_model, "--out", tmp_path / "e")
    with open(tmp_path / "e/scores.csv") as f:
        rows = list(csv.DictReader(f))
    np.testing.assert_allclose([float(r["pipeline_score"]) for r in rows], original[:, 1])
    assert [int(r["pipeline_accepted"]) for r in rows] == original[:, 0].astype(int).tolist()
