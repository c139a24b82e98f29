"""A model card's stacked ``head`` (roicurate/head.py): fitted out of lab by ``train --head``, validated, applied by
``Classifier`` as the network logit times its weight plus the ROI's shape part, and explained per ROI in the
report. Real Suite2p folders copied from the bundled example, laid out as three labs."""
import json
import shutil

import numpy as np
import pytest
from conftest import cli_run, one_line_error, save_tiny_model

from roicurate.calibrate import logit, sigmoid
from roicurate.head import INPUTS, contributions, describe, network_weight, offsets, shape_inputs
from roicurate.models import Classifier, read_card
from roicurate.training.head import fit_head, head_proba, out_of_lab_head


@pytest.fixture(scope="module")
def three_labs(suite2p_sessions, tmp_path_factory):
    """[suite2p/ folder] of three labelled recordings, each its own lab (labels.json names them labA/s1 ...)."""
    root = tmp_path_factory.mktemp("labs")
    out = []
    for i, lab in zip((1, 2, 3), "ABC"):
        session = root / f"lab{lab}" / "s1"
        shutil.copytree(suite2p_sessions[i].parent, session)
        labels = json.loads((session / "labels.json").read_text())
        (session / "labels.json").write_text(json.dumps(dict(labels, recording=f"lab{lab}/s1")))
        out.append(session / "suite2p")
    return out


@pytest.fixture(scope="module")
def head_model(three_labs, tmp_path_factory):
    out = tmp_path_factory.mktemp("head_model")
    r = cli_run("train", *three_labs, "--arch", "cnn2", "--epochs", "1", "--operating-point", "out-of-lab", "--head",
                "--channels", "mask,max", "--image-dropout", "0.3", "--out", out)
    return out, r.output


def test_train_head_writes_a_valid_card(head_model):
    out, log = head_model
    card = read_card(out / "model.json")
    head = card["head"]
    assert head["inputs"] == list(INPUTS) and "shape_prior" not in card and "head: network_logit +" in log
    assert "labA" in head["fitted_on"] and "no trace or pipeline evidence" in head["rule"]
    assert card["operating_points"]["recall"] == {"threshold": card["threshold"], "rule": card["threshold_rule"]}
    assert card["threshold_rule"].endswith("(the stacked head's output on pooled leave-one-lab-out scores)")
    nested = card["out_of_lab"]["nested"]
    assert set(nested["labs"]) == set(nested["labs_mask_only"]) == {"labA", "labB", "labC"}    # the example has max_proj
    assert set(nested["points"]) == set(nested["points_mask_only"]) == {"recall", "balanced", "precision"}
    assert "every ROI twice, with its summary images and without" in head["fitted_on"]
    assert card["training"]["head"].startswith("stacked head") and card["training"]["shape_prior"] is None


def test_head_is_network_logit_times_weight_plus_shape(head_model, three_labs):
    """What Classifier gives = sigmoid(w * network logit + the shape part), the network logit read from the same
    weights with the head taken out of the card."""
    out, _ = head_model
    clf = Classifier.load(str(out))
    rs = _planes(three_labs[1])[0]
    bare = Classifier(clf.module, {k: v for k, v in clf.card.items() if k != "head"}, clf.spec)
    z = logit(bare.predict_proba(rs)[:, 1])
    head = clf.card["head"]
    want = sigmoid(network_weight(head) * z + offsets(head, rs))
    got = clf.predict_proba(rs)[:, 1]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, head_proba(head, z, shape_inputs(rs, head["binarize"])), atol=1e-5)
    assert not np.allclose(got, sigmoid(z), atol=1e-3)           # the head changes the scores
    # each ROI's shares add up to its logit; the network's share is its weight times its standardised logit
    shares = contributions(head, rs, logit(got))
    np.testing.assert_allclose(shares.sum(1), logit(got), atol=1e-6)
    np.testing.assert_allclose(shares[:, 0], head["coef"][0] * (z - head["mean"][0]) / head["scale"][0], atol=1e-4)
    assert describe(head, shares[0]).startswith(("network", "area", "compactness", "aspect", "eccentricity",
                                                 "solidity"))


def _planes(suite2p_folder):
    from roicurate.plugins import sources
    src = sources()["suite2p"]
    return [src.read(p) for p in sorted(suite2p_folder.glob("plane*"))]


def test_apply_and_report_with_a_head(head_model, three_labs, tmp_path):
    out, _ = head_model
    plane = tmp_path / "suite2p"
    shutil.copytree(three_labs[0], plane)
    r = cli_run("apply", plane / "plane0", "--model", out, "--operating-point", "balanced")
    assert "(balanced point)" in r.output
    cli_run("report", plane / "plane0", "--out", tmp_path / "report", "--explain", "4")
    html = (tmp_path / "report" / "index.html").read_text()
    assert "logit = " in html and "area in pixels" in html and "baseline" in html


def test_train_head_needs_out_of_lab_and_no_prior(three_labs, tmp_path):
    for extra in ([], ["--operating-point", "out-of-lab", "--shape-prior"]):
        r = cli_run("train", *three_labs, "--arch", "cnn2", "--epochs", "1", "--head", *extra, "--out", tmp_path,
                    ok=False)
        assert r.exit_code == 1 and "--head" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("change, field", [
    (lambda h: h.update(inputs=h["inputs"][:-1]), "head.inputs"),
    (lambda h: h.update(coef=h["coef"][:-1]), "head.coef"),
    (lambda h: h["coef"].__setitem__(0, -1.0), "head.coef"),
    (lambda h: h["scale"].__setitem__(2, 0.0), "head.scale"),
    (lambda h: h.update(intercept=float("nan")), "head.intercept"),
    (lambda h: h.update(rule=""), "head.rule"),
])
def test_a_bad_head_is_refused_before_use(change, field, tmp_path):
    from roicurate.models import validate_card
    card = json.loads(json.dumps(_tiny_card_with_head(tmp_path)))
    change(card["head"])
    one_line_error(lambda: validate_card(card, "x.json"), field)


def test_a_head_and_a_shape_prior_or_unfolded_calibration_are_refused(tmp_path):
    from roicurate.models import validate_card
    card = _tiny_card_with_head(tmp_path)
    prior = {"features": ["log_area", "compactness", "aspect_ratio", "eccentricity", "solidity"], "binarize": 0.0,
             "mean": [0.0] * 5, "scale": [1.0] * 5, "coef": [0.0] * 5, "intercept": 0.0}
    one_line_error(lambda: validate_card(dict(card, shape_prior=prior), "x.json"), "not both")
    one_line_error(lambda: validate_card(dict(card, calibration={"method": "isotonic", "x": [0, 1], "y": [0, 1]}),
                                         "x.json"), "folded")
    validate_card(card, "x.json")


def _tiny_card_with_head(tmp_path):
    save_tiny_model(tmp_path)
    card = json.loads((tmp_path / "tiny.json").read_text())
    n = len(INPUTS)
    card["head"] = {"inputs": list(INPUTS), "mean": [0.0] * n, "scale": [1.0] * n, "coef": [1.0] + [0.1] * (n - 1),
                    "intercept": 0.0, "binarize": 0.0, "fitted_on": "test", "rule": "test"}
    return card


def test_out_of_lab_head_uses_what_the_network_misses():
    """Labels that depend on the network logit and on the area in pixels: the nested head (fitted without each lab)
    ranks every lab better than the network logit alone; labels on the logit alone: the head changes nothing."""
    rng = np.random.default_rng(0)
    n, labs = 3000, np.repeat(["a", "b", "c"], 1000)
    z, S = rng.normal(size=n), rng.normal(size=(n, 6))
    y = rng.random(n) < sigmoid(1.5 * z + 1.5 * S[:, 5])
    from roicurate.evaluate import roc_auc
    head, nested, points, thr = out_of_lab_head(y, z, S, labs, 0.0)
    q = nested["probability"]
    for g in "abc":
        assert roc_auc(y[labs == g], q[labs == g]) > roc_auc(y[labs == g], z[labs == g]) + 0.05
    assert thr == points["recall"]["threshold"] and head["coef"][6] > 0.5
    y2 = rng.random(n) < sigmoid(2 * z)
    h2 = fit_head(y2, z, S, 0.0)
    assert abs(h2["coef"][0]) > 5 * max(abs(c) for c in h2["coef"][1:])
