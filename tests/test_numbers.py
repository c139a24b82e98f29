"""Pinning: the hand-written metrics and fits against the scikit-learn calls that replace them (temporary: this
file turns into property tests once the hand-written code is gone)."""
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from roicurate import calibrate, evaluate
from roicurate.baselines import _tron_logistic


def cases():
    rng = np.random.default_rng(0)
    out = []
    for n, tie in ((500, None), (500, 2), (60, 1), (7, None), (3000, 3)):
        y = rng.random(n) < rng.uniform(0.2, 0.8)
        s = np.clip(0.3 * y + rng.random(n) * 0.8, 0, 1)
        out.append((y, np.round(s, tie) if tie else s))
    out.append((np.array([1, 0, 1, 1, 0, 0, 1], bool), np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.1, 0.1])))
    return out


@pytest.mark.parametrize("y, s", cases())
def test_metrics_agree(y, s):
    assert evaluate.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert evaluate.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    p, r, t = skm.precision_recall_curve(y, s)
    old = evaluate.pr_curve(y, s)
    for a, b in zip(old, (p[:-1][::-1], r[:-1][::-1], t[::-1])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    for a, b in zip(evaluate.roc_curve(y, s), (fpr, tpr, thr)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    a = s >= 0.5
    assert evaluate.prf(y, a)["confusion_matrix"] == skm.confusion_matrix(y, a, labels=[False, True]).tolist()


@pytest.mark.parametrize("y, s", cases())
def test_reliability_agrees_off_the_bin_edges(y, s):
    s = np.where(np.isclose(s * 15, np.round(s * 15)), s + 1e-6, s).clip(0, 1)     # off the edges k / 15
    n, conf, frac = evaluate.reliability(y, s)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=15, strategy="uniform")
    np.testing.assert_allclose(frac[n > 0], prob_true, atol=1e-12)
    np.testing.assert_allclose(conf[n > 0], prob_pred, atol=1e-12)


@pytest.mark.parametrize("y, s", cases())
def test_isotonic_agrees(y, s):
    x, v = calibrate.fit_isotonic(y, s)
    iso = IsotonicRegression(out_of_bounds="clip").fit(s, y.astype(float))
    grid = np.r_[np.linspace(-0.1, 1.1, 1001), s]
    np.testing.assert_allclose(np.interp(grid, x, v), np.interp(grid, iso.X_thresholds_, iso.y_thresholds_),
                               atol=1e-12)


@pytest.mark.parametrize("C", [1.0, 100.0])
def test_liblinear_agrees(C):
    rng = np.random.default_rng(C.as_integer_ratio()[0])
    x = rng.normal(size=(800, 5)) * [1, 3, 0.2, 1, 5]
    y = x @ [1, -0.3, 2, 0, 0.1] + rng.logistic(size=800) > 0.4
    w = _tron_logistic(x, y, C=C)
    ref = LogisticRegression(C=C, solver="liblinear").fit(x, y)
    np.testing.assert_allclose(w, np.r_[ref.coef_[0], ref.intercept_], rtol=1e-9, atol=1e-12)
