"""A model card's stacked ``head``: one logistic regression that turns the network's logit and the ROI's own shape
into P(cell), fitted on *out-of-lab* scores (each lab scored by a network trained on the other labs; see
``roicurate/training/head.py``).

    head logit = intercept + sum_i coef_i * (x_i - mean_i) / scale_i

over the card's ``inputs``: ``network_logit`` (the network's output logit, its calibration folded in) first, then
shape features computed from the masks alone (roicurate/shape.py): the five relative to the recording's reference
cell (``log_relative_area``, ``compactness``, ``aspect_ratio``, ``eccentricity``, ``solidity``) and ``log_area``,
the area in pixels, which says what the relative features cannot (a recording's zoom and its reference cell).
Every input comes from the mask, so a mask-only recording gets the whole head; nothing is ever missing.

The network's share is linear in its logit, so :class:`~roicurate.models.Classifier` applies the head as the older
``shape_prior`` was applied: the network logit times the head's network weight plus a per-ROI offset (the shape
part), then the sigmoid. :func:`contributions` splits an ROI's head logit into what each input added: the report
shows it beside each explained ROI.
"""
import numpy as np

from roicurate.shape import FEATURES, RELATIVE, reference_log_area, shape_features

NETWORK = "network_logit"
SHAPE_INPUTS = RELATIVE + ("log_area",)          # relative five, then the log area in pixels
INPUTS = (NETWORK,) + SHAPE_INPUTS
LABELS = {NETWORK: "network", "log_relative_area": "area / reference cell's", "compactness": "compactness",
          "aspect_ratio": "aspect ratio", "eccentricity": "eccentricity", "solidity": "solidity",
          "log_area": "area in pixels"}


def shape_inputs(roiset, binarize):
    """(N, 6) the head's shape inputs in :data:`SHAPE_INPUTS` order."""
    px = shape_features(roiset, binarize)
    rel = px.copy()
    rel[:, FEATURES.index("log_area")] -= reference_log_area(roiset)
    return np.column_stack([rel, px[:, FEATURES.index("log_area")]])


def _standard(head):
    """(weight of the network logit, weights of the shape inputs, intercept) on the raw (unstandardised) inputs."""
    coef = np.asarray(head["coef"], float) / np.asarray(head["scale"], float)
    intercept = head["intercept"] - float(coef @ np.asarray(head["mean"], float))
    return float(coef[0]), coef[1:], intercept


def network_weight(head):
    """What the network's logit is multiplied by in the head logit."""
    return _standard(head)[0]


def _shape_part(head, S):
    _, w, b = _standard(head)
    return np.asarray(S, float) @ w + b


def offsets(head, roiset):
    """(N,) the shape part of each ROI's head logit (intercept included): the head logit is
    ``network_weight(head) * network logit + offsets(head, roiset)``."""
    return _shape_part(head, shape_inputs(roiset, head["binarize"]))


def head_logit(head, z, S):
    """(N,) the head's logit for network logits ``z`` and shape inputs ``S`` (:func:`shape_inputs`)."""
    return network_weight(head) * np.asarray(z, float) + _shape_part(head, S)


def contributions(head, roiset, head_logit):
    """(N, len(inputs) + 1) what each input added to each ROI's head logit, relative to an average training ROI
    (``coef_i * (x_i - mean_i) / scale_i``), and the intercept last; the row sums to ``head_logit`` (the logit of the
    probability the model gave, so test-time augmentation needs no re-run). The network's share is what is left
    once the shape shares and the intercept are taken away."""
    mean, scale, coef = (np.asarray(head[k], float) for k in ("mean", "scale", "coef"))
    shape = (shape_inputs(roiset, head["binarize"]) - mean[1:]) / scale[1:] * coef[1:]
    net = np.asarray(head_logit, float) - shape.sum(1) - head["intercept"]
    return np.column_stack([net, shape, np.full(len(net), float(head["intercept"]))])


def describe(head, row):
    """'network +2.10 · area in pixels -0.31 · ...' for one row of :func:`contributions` (largest shares first)."""
    names = [LABELS[i] for i in head["inputs"]]
    order = np.argsort(-np.abs(row[:-1]), kind="stable")
    return " · ".join(f"{names[k]} {row[k]:+.2f}" for k in order) + f" · baseline {row[-1]:+.2f}"


def validate(head, bad):
    """A card's ``head`` entry (or None): every field present, finite and of the right length; ``bad(field,
    problem)`` raises."""
    if head is None:
        return
    if not isinstance(head, dict):
        bad("head", "must be null or an object")
    if head.get("inputs") != list(INPUTS):
        bad("head.inputs", f"must be {list(INPUTS)} (the inputs this roicurate computes)")
    for k in ("mean", "scale", "coef"):
        v = head.get(k)
        if not (isinstance(v, list) and len(v) == len(INPUTS)
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)):
            bad(f"head.{k}", "must be a list of finite numbers, one per input")
    if not all(s > 0 for s in head["scale"]):
        bad("head.scale", "must be positive")
    if head["coef"][0] <= 0:
        bad("head.coef", "must give the network's logit a positive weight (else the head reverses the network)")
    for k in ("intercept", "binarize"):
        v = head.get(k)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)):
            bad(f"head.{k}", "must be a finite number")
    if not 0 <= head["binarize"] <= 1:
        bad("head.binarize", "must be a number from 0 to 1")
    for k in ("fitted_on", "rule"):
        if not isinstance(head.get(k), str) or not head[k].strip():
            bad(f"head.{k}", "must say how the head was fitted")
