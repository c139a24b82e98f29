"""Probability calibration, fitted on validation recordings only.

* ``temperature``: one scalar T, p' = sigmoid(logit(p) / T), T minimising the validation log-loss. Because the
  networks end in a linear layer, T is folded into that layer's weights when the model is saved, so every
  consumer of the model (apply, evaluate, the CaImAn live path) gets calibrated probabilities with no extra code;
  the card keeps T for the record (``"folded": true``).
* ``isotonic``: the pool-adjacent-violators fit of the cell fraction as a non-decreasing function of the score,
  interpolated linearly between the fitted points (as scikit-learn's IsotonicRegression does); stored in the card
  as ``x``/``y`` and applied by :func:`apply`.

Only what is in a card is ever applied: :func:`apply` is the one function that maps raw to calibrated scores.
"""
import numpy as np
from scipy.optimize import minimize_scalar

from roicurate import RoicurateError
from roicurate.evaluate import ece

METHODS = ("temperature", "isotonic", "none")
_EPS = 1e-7


def logit(p):
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, float)))


def fit_temperature(y, p):
    """T > 0 minimising the mean binary log-loss of sigmoid(logit(p) / T) against ``y``."""
    y, z = np.asarray(y, float), logit(p)

    def nll(log_t):
        q = np.clip(sigmoid(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))

    res = minimize_scalar(nll, bounds=(np.log(1e-2), np.log(1e2)), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(res.x))


def fit_isotonic(y, p):
    """Pool adjacent violators on (p, y): the fitted points (x increasing, y non-decreasing) of the step fit."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    order = np.lexsort((y, p))
    xs, ys = p[order], y[order]
    # one block per distinct score to start with
    ux, start = np.unique(xs, return_index=True)
    w = np.diff(np.r_[start, len(xs)]).astype(float)
    v = np.add.reduceat(ys, start) / w
    vals, wts, lo, hi = [], [], [], []
    for i in range(len(ux)):
        vals.append(v[i]), wts.append(w[i]), lo.append(ux[i]), hi.append(ux[i])
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            wts[-2], hi[-2] = wsum, hi[-1]
            del vals[-1], wts[-1], lo[-1], hi[-1]
    x_out, y_out = [], []
    for a, b, val in zip(lo, hi, vals):   # each block is flat from its lowest to its highest score
        x_out += [a] if a == b else [a, b]
        y_out += [val] if a == b else [val, val]
    return np.asarray(x_out), np.asarray(y_out)


def fit(method, y, p):
    """A card's ``calibration`` entry for ``method`` fitted on validation (y, p), with ECE before and after."""
    if method not in METHODS:
        raise RoicurateError(f"unknown calibration '{method}' (known: {', '.join(METHODS)})")
    y = np.asarray(y, bool)
    if method == "none":
        return {"method": "none", "ece_before": ece(y, p), "ece_after": ece(y, p)}
    if y.all() or not y.any():
        raise RoicurateError("calibration needs both cells and non-cells in the validation recordings "
                             "(use --calibrate none)")
    if method == "temperature":
        cal = {"method": "temperature", "temperature": fit_temperature(y, p)}
    else:
        x, v = fit_isotonic(y, p)
        cal = {"method": "isotonic", "x": x.tolist(), "y": v.tolist()}
    cal.update(ece_before=ece(y, p), ece_after=ece(y, apply(cal, p)), fitted_on="validation recordings")
    return cal


def apply(calibration, p):
    """Calibrated scores for raw scores ``p`` (a card's ``calibration`` entry; None or folded: unchanged)."""
    p = np.asarray(p, float)
    if not calibration or calibration.get("folded") or calibration["method"] == "none":
        return p
    if calibration["method"] == "temperature":
        return sigmoid(logit(p) / calibration["temperature"])
    if calibration["method"] == "isotonic":
        return np.interp(p, calibration["x"], calibration["y"])
    raise RoicurateError(f"unknown calibration method '{calibration['method']}' in the model card")


def model_scores(classifier, roiset, progress=None):
    """The calibrated cell probability of every ROI: the one way evaluate and train score a model."""
    p = classifier.predict_proba(roiset, progress=progress)[:, classifier.positive]
    if getattr(classifier, "applies_calibration", False):   # a Classifier that applies its card itself
        return p
    return apply(classifier.card.get("calibration"), p)


def output_layer(module):
    """The final ``nn.Linear`` of a network that ends in one (its output is the logit), else None."""
    import torch
    linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return linear[-1] if linear else None


def fold_temperature(module, temperature, probe):
    """Divide the output layer by ``temperature`` in place; checks on ``probe`` inputs that the logits scaled
    exactly so (i.e. that the layer really is the last operation), else restores it and raises."""
    import torch
    layer = output_layer(module)
    if layer is None:
        raise RoicurateError("this architecture has no final linear layer to fold a temperature into; "
                             "use --calibrate isotonic")
    module.eval()
    with torch.no_grad():
        before = module(probe).double()
        saved = layer.weight.clone(), None if layer.bias is None else layer.bias.clone()
        layer.weight /= temperature
        if layer.bias is not None:
            layer.bias /= temperature
        after = module(probe).double()
    if not torch.allclose(after * temperature, before, rtol=1e-4, atol=1e-4):
        with torch.no_grad():
            layer.weight.copy_(saved[0])
            if saved[1] is not None:
                layer.bias.copy_(saved[1])
        raise RoicurateError("the last linear layer is not the network's output; use --calibrate isotonic")
