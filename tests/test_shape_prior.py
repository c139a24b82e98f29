"""A model's shape prior (`roicurate train --shape-prior`): a logistic regression on five shape features whose
logit is added to the network's, weighted with the Platt calibration on validation. Every consumer (apply,
evaluate, explanations) must see the same probability."""
import json

import numpy as np
import pytest
import torch
from conftest import cli_run as run

from roicurate import RoicurateError
from roicurate.calibrate import fit_platt, sigmoid
from roicurate.explain import explain
from roicurate.models import Classifier
from roicurate.plugins import sources
from roicurate.shape import FEATURES, RELATIVE, fit_prior, prior_logit, shape_features


def test_platt_with_offset_recovers_known_weights():
    rng = np.random.default_rng(0)
    z, o = rng.normal(size=20000), rng.normal(size=20000)
    y = rng.random(20000) < sigmoid(0.7 * z + 1.5 * o - 0.4)
    a, b, w = fit_platt(y, sigmoid(z), o)
    assert a == pytest.approx(0.7, abs=0.06) and w == pytest.approx(1.5, abs=0.1) and b == pytest.approx(-0.4, abs=0.06)


@pytest.mark.datasets
def test_prior_ranks_cells_on_a_recording_it_never_saw(datasets):
    read = sources()["suite2p"].read
    from roicurate.labels import attach_labels
    train = attach_labels(read(datasets / "sim/s2p_sim1/suite2p/plane0"))
    test = attach_labels(read(datasets / "sim/s2p_sim3/suite2p/plane0"))
    prior = fit_prior(shape_features(train), train.labels)
    assert prior["features"] == list(FEATURES)
    from roicurate.evaluate import roc_auc
    assert roc_auc(test.labels > 0, prior_logit(prior, test)) > 0.85


@pytest.fixture(scope="module")
def prior_model(suite2p_sessions, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior")
    run("train", suite2p_sessions[1], suite2p_sessions[2], "--arch", "cnn2",
        "--epochs", "1", "--val", "s2p_sim2", "--shape-prior", "--out", out)
    return out


def test_probability_is_network_plus_weighted_prior(prior_model, suite2p_sessions):
    card = json.loads((prior_model / "model.json").read_text())
    cal = card["calibration"]
    assert cal["method"] == "platt" and cal["folded"] and cal["prior_weight"] > 0
    # a new network scales its crops by the reference cell diameter: the prior's area is relative to it too
    assert card["crop"]["scale"] == "reference"
    assert card["shape_prior"]["features"] == list(RELATIVE) and card["training"]["shape_prior"]
    clf = Classifier.load(str(prior_model))
    rs = sources()["suite2p"].read(suite2p_sessions[3] / "plane0")
    from roicurate.crops import make_crops
    with torch.inference_mode():
        net = clf.module(torch.from_numpy(make_crops(rs, clf.crop)))[:, 0].double().numpy()
    expected = sigmoid(net + prior_logit(card["shape_prior"], rs))
    np.testing.assert_allclose(clf.predict_proba(rs)[:, 1], expected, atol=1e-5)
    # the prior moves the scores: without it the probabilities differ
    assert np.abs(sigmoid(net) - expected).max() > 0.01
    # explanations compare the same probability as apply
    ex = explain(clf, rs, [0, 5], stride=8)
    np.testing.assert_allclose(ex["scores"], expected[[0, 5]], rtol=1e-5)
    with pytest.raises(RoicurateError, match="shape prior"):
        clf.logits_to_proba(torch.zeros(2, 1))


def test_apply_writes_the_prior_probabilities(prior_model, copy_example):
    plane = copy_example("plane0")
    run("apply", plane, "--model", prior_model)
    clf = Classifier.load(str(prior_model))
    p = clf.predict_proba(sources()["suite2p"].read(plane))[:, 1]
    iscell = np.load(plane / "iscell.npy")
    np.testing.assert_allclose(iscell[:, 1], p)
    assert (iscell[:, 0] == (p >= clf.threshold)).all()


def test_shape_prior_needs_validation_and_platt(suite2p_sessions, tmp_path):
    sims = [suite2p_sessions[1], suite2p_sessions[2]]
    for extra in (["--val", "none"], ["--val", "s2p_sim2", "--calibrate", "isotonic"]):
        r = run("train", *sims, "--arch", "cnn2", "--epochs", "1", "--shape-prior", "--out", tmp_path, *extra, ok=False)
        assert r.exit_code != 0 and "--shape-prior" in r.output and len(r.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_prior_free_model_refuses_prior_logits(tiny_model, suite2p_sessions):
    clf = Classifier.load(str(tiny_model))
    assert clf.prior_logits(sources()["suite2p"].read(suite2p_sessions[2] / "plane0")) is None
    with pytest.raises(RoicurateError, match="shape prior"):
        clf.logits_to_proba(torch.zeros(2, 1), np.zeros(2))


def test_epochs_0_keeps_the_weights_and_refits_calibration_threshold_and_prior_weight(prior_model, suite2p_sessions,
                                                                                         tmp_path):
    """`train --init M --epochs 0`: M's network as it is (the Platt slope and bias fold into its output layer), its
    shape prior kept and re-weighted, the threshold of best F1 on every recording given (--val is moot)."""
    from safetensors.torch import load_file
    from roicurate.evaluate import best_f1_threshold
    from roicurate.labels import cell_labels
    lab = suite2p_sessions[3]
    r = run("train", lab, "--init", prior_model, "--epochs", "0", "--out", tmp_path / "lab")
    assert "--epochs 0: the weights of model as they are" in r.output
    card = json.loads((tmp_path / "lab/model.json").read_text())
    t = card["training"]
    assert t["recordings"] == [] and t["validation_recordings"] == ["s2p_sim3"] and t["epochs_run"] == 0
    assert card["calibration"]["method"] == "platt" and card["calibration"]["prior_weight"] > 0
    assert card["shape_prior"]["features"] == list(RELATIVE)          # the init model's own prior, kept
    before, after = load_file(prior_model / "model.safetensors"), load_file(tmp_path / "lab/model.safetensors")
    last = [n for n, _ in Classifier.load(str(prior_model)).module.named_parameters()][-1].rsplit(".", 1)[0]
    changed = {k.rsplit(".", 1)[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {last}, changed                      # the output layer took the calibration, nothing else
    clf = Classifier.load(str(tmp_path / "lab"))
    rs = sources()["suite2p"].read(lab / "plane0")
    from roicurate.labels import attach_labels
    rs = attach_labels(rs)
    p = clf.predict_proba(rs)[:, 1]
    assert card["threshold"] == pytest.approx(best_f1_threshold(cell_labels(rs), p)[0], abs=1e-6)
    for args, msg in ((("--epochs", "0"), "give it with --init"),
                      (("--epochs", "0", "--init", prior_model, "--search", "2"), "trains nothing")):
        r = run("train", lab, *args, "--out", tmp_path / "x", ok=False)
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_fine_tuning_keeps_the_init_shape_prior_when_validation_can_weight_it(prior_model, suite2p_sessions, tmp_path):
    sims = [suite2p_sessions[i] for i in (1, 3)]
    r = run("train", *sims, "--init", prior_model, "--freeze-until", "head", "--epochs", "1", "--val", "s2p_sim3",
            "--out", tmp_path / "ft")
    card = json.loads((tmp_path / "ft/model.json").read_text())
    assert "shape prior is kept" in r.output and card["calibration"]["prior_weight"] > 0
    old = json.loads((prior_model / "model.json").read_text())["shape_prior"]
    assert card["shape_prior"]["mean"] == old["mean"] and card["training"]["shape_prior"].startswith("model's")
    r = run("train", sims[1], "--init", prior_model, "--freeze-until", "head", "--epochs", "1", "--val", "none",
            "--out", tmp_path / "none")
    assert "not carried over" in r.output and "shape_prior" not in json.loads((tmp_path / "none/model.json").read_text())
