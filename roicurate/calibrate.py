"""Probability calibration, fitted on validation recordings only.

* ``platt`` (default): p' = sigmoid(a * logit(p) + b), a > 0 and b minimising the validation log-loss. The bias b
  undoes the shift that class-balanced training gives every score, which a temperature alone cannot.
* ``temperature``: one scalar T, p' = sigmoid(logit(p) / T), T minimising the validation log-loss.
  Both are affine in the logit: because the networks end in a linear layer, they are folded into that layer when
  the model is saved, so every consumer of the model (apply, evaluate, the CaImAn live path) gets calibrated
  probabilities with no extra code; the card keeps the parameters for the record (``"folded": true``).
* ``isotonic``: scikit-learn's ``IsotonicRegression`` (pool adjacent violators) of the cell fraction as a
  non-decreasing function of the score, interpolated linearly between its fitted points and clipped outside them;
  the points are stored in the card as ``x``/``y`` and applied by :func:`apply` (no scikit-learn needed there).

Only what is in a card is ever applied: :func:`apply` is the one function that maps raw to calibrated scores.
"""
import numpy as np
from scipy.optimize import minimize_scalar

from roicurate.common import RoicurateError
from roicurate.evaluate import ece

METHODS = ("platt", "temperature", "isotonic", "none")
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


def fit_platt(y, p, offset=None):
    """(a, b) minimising the mean binary log-loss of sigmoid(a * logit(p) + b) against ``y`` (a kept positive, so
    the ranking never changes). With ``offset`` (a second per-ROI logit, e.g. a shape prior's) the model is
    sigmoid(a * logit(p) + w * offset + b), w also kept positive, and (a, b, w) is returned."""
    from scipy.optimize import minimize
    y, z = np.asarray(y, float), logit(p)
    o = np.zeros_like(z) if offset is None else np.asarray(offset, float)

    def nll(v):
        w = np.exp(v[2]) if len(v) > 2 else 0.0
        q = np.clip(sigmoid(np.exp(v[0]) * z + w * o + v[1]), 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))

    res = minimize(nll, np.zeros(2 if offset is None else 3), method="Nelder-Mead",
                   options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
    a, b = float(np.exp(res.x[0])), float(res.x[1])
    return (a, b) if offset is None else (a, b, float(np.exp(res.x[2])))


def affine(calibration):
    """(a, b) with calibrated logit = a * logit + b, for the methods that are affine in the logit; else None."""
    if calibration.get("method") == "temperature":
        return 1.0 / calibration["temperature"], 0.0
    if calibration.get("method") == "platt":
        return calibration["a"], calibration["b"]
    return None


def fit(method, y, p, offset=None):
    """A card's ``calibration`` entry for ``method`` fitted on validation (y, p), with ECE before and after.
    ``offset``: a shape prior's logit per validation ROI (Platt only), weighted by ``prior_weight``."""
    if method not in METHODS:
        raise RoicurateError(f"unknown calibration '{method}' (known: {', '.join(METHODS)})")
    if offset is not None and method != "platt":
        raise RoicurateError("a shape prior is weighted by Platt calibration (use --calibrate platt)")
    y = np.asarray(y, bool)
    if method == "none":
        return {"method": "none", "ece_before": ece(y, p), "ece_after": ece(y, p)}
    if y.all() or not y.any():
        raise RoicurateError("calibration needs both cells and non-cells in the validation recordings "
                             "(use --calibrate none)")
    if method == "temperature":
        cal = {"method": "temperature", "temperature": fit_temperature(y, p)}
    elif method == "platt":
        fitted = fit_platt(y, p, offset)
        cal = {"method": "platt", "a": fitted[0], "b": fitted[1]}
        if offset is not None:
            cal["prior_weight"] = fitted[2]
    else:
        from sklearn.isotonic import IsotonicRegression
        iso = IsotonicRegression(out_of_bounds="clip").fit(np.asarray(p, float), y.astype(float))
        cal = {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    cal.update(ece_before=ece(y, p), ece_after=ece(y, apply(cal, p, offset)), fitted_on="validation recordings")
    return cal


def apply(calibration, p, offset=None):
    """Calibrated scores for raw scores ``p`` (a card's ``calibration`` entry; None or folded: unchanged);
    ``offset``: the shape prior's logits, added with the entry's ``prior_weight``."""
    p = np.asarray(p, float)
    if not calibration or calibration.get("folded") or calibration["method"] == "none":
        return p
    if affine(calibration):
        a, b = affine(calibration)
        z = a * logit(p) + b
        return sigmoid(z if offset is None else z + calibration.get("prior_weight", 0.0) * np.asarray(offset, float))
    if calibration["method"] == "isotonic":
        return np.interp(p, calibration["x"], calibration["y"])
    raise RoicurateError(f"unknown calibration method '{calibration['method']}' in the model card")


def output_layer(module):
    """The final ``nn.Linear`` of a network that ends in one (its output is the logit), else None."""
    import torch
    linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return linear[-1] if linear else None


def fold_affine(module, a, b, probe):
    """Make the network's output logit ``a * logit + b`` by rescaling its final linear layer in place; checks on
    ``probe`` inputs that the logits changed exactly so (i.e. that the layer really is the last operation), else
    restores it and raises."""
    import torch
    layer = output_layer(module)
    if layer is None or layer.bias is None:
        raise RoicurateError("this architecture has no final linear layer (with bias) to fold the calibration into; "
                             "use --calibrate isotonic")
    module.eval()
    with torch.no_grad():
        before = module(probe).double()
        saved = layer.weight.clone(), layer.bias.clone()
        layer.weight *= a
        layer.bias.mul_(a).add_(b)
        after = module(probe).double()
    if not torch.allclose(after, before * a + b, rtol=1e-4, atol=1e-4):
        with torch.no_grad():
            layer.weight.copy_(saved[0])
            layer.bias.copy_(saved[1])
        raise RoicurateError("the last linear layer is not the network's output; use --calibrate isotonic")


# ---- K-class networks --------------------------------------------------------------------------------------
def fit_classes(method, y, proba, positive):
    """Calibration of a K-class (softmax) network on validation class indices ``y`` and its probabilities
    ``proba`` (N, K): every logit becomes ``logit / T + bias[k]``, so rows still sum to 1 and the ranking within a
    row is what the biases make it. ``platt`` (the default, its K-class form): one temperature T and a bias per
    class present in validation (the first of them fixed at 0), undoing the shift that class-weighted training
    gives rare classes; ``temperature``: T alone. Both minimise the multi-class log-loss and are folded into the
    output layer. Returns the card entry (ECE of class ``positive`` against the rest, before and after) and
    ``(1 / T, bias)`` for :func:`fold_affine`."""
    from scipy.optimize import minimize
    if method not in ("platt", "temperature"):
        raise RoicurateError(f"--calibrate {method}: a {proba.shape[1]}-class model is calibrated with platt "
                             f"(temperature and per-class biases) or temperature, or none")
    y = np.asarray(y, np.int64)
    z = np.log(np.clip(np.asarray(proba, float), 1e-12, 1))      # logits up to a per-row constant
    present = np.flatnonzero(np.bincount(y, minlength=z.shape[1]) > 0)
    free = present[1:] if method == "platt" else present[:0]

    def unpack(v):
        bias = np.zeros(z.shape[1])
        bias[free] = v[1:]
        return np.exp(-v[0]), bias

    def nll(v):
        a, bias = unpack(v)
        s = a * z + bias
        s = s - s.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(1)) - s[np.arange(len(y)), y]))

    res = minimize(nll, np.zeros(1 + len(free)), method="Nelder-Mead",
                   options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 20000})
    a, bias = unpack(res.x)
    after = a * z + bias
    after = np.exp(after - after.max(1, keepdims=True))
    after /= after.sum(1, keepdims=True)
    cell = y == positive
    entry = {"method": method, "classes": True, "temperature": float(1 / a), "bias": bias.tolist(),
             "log_loss_before": nll(np.zeros(1 + len(free))), "log_loss_after": float(res.fun),
             "ece_before": ece(cell, proba[:, positive]), "ece_after": ece(cell, after[:, positive]),
             "fitted_on": "validation recordings"}
    return entry, (float(a), bias)
