"""Fit a card's stacked ``head`` (roicurate/head.py) on out-of-lab scores: ``roicurate train --operating-point
out-of-lab --head``, and ``benchmarks/head.py`` for a bundled model.

Every lab's ROIs are scored by a network trained on the other labs (roicurate/training/operating_point.py); the
head is a logistic regression (L2, standardised inputs) of the labels on those out-of-lab network logits and the
ROIs' shape inputs, pooled over the labs. Its numbers are nested as everything out of lab is: each lab's are those
of a head fitted on the other labs alone, with the threshold and named points chosen on the other labs' head
outputs. The shipped model's network (trained on every lab) then feeds the head fitted on every lab.
"""
import numpy as np

from roicurate import calibrate as cal
from roicurate.head import INPUTS, head_logit, shape_inputs
from roicurate.evaluate import metrics
from roicurate.training.outoflab import nested_metrics
from roicurate.training.points import HEAD, MIN_RECALL, choose_points

C = 1.0           # scikit-learn's default L2 strength on standardised inputs; 7 weights on thousands of ROIs


def inputs_of(sets, which, index, binarize):
    """(N, 6) the shape inputs of the ROIs named by ``which`` (the position of each ROI's RoiSet in ``sets``) and
    ``index`` (its index in that set)."""
    per = {int(k): shape_inputs(sets[int(k)], binarize) for k in np.unique(which)}
    return np.stack([per[int(k)][i] for k, i in zip(which, index)])


def fit_head(y, z, S, binarize, train=None):
    """A card's ``head`` entry fitted on the ROIs of ``train`` (default all): labels ``y``, network logits ``z``
    (calibration folded in, as the shipped network gives them), shape inputs ``S`` (:func:`inputs_of`)."""
    from sklearn.linear_model import LogisticRegression
    X = np.column_stack([z, S]).astype(float)
    train = np.ones(len(y), bool) if train is None else train
    mean, scale = X[train].mean(0), X[train].std(0)
    scale = np.where(scale > 0, scale, 1.0)
    lr = LogisticRegression(C=C, max_iter=5000).fit((X[train] - mean) / scale, np.asarray(y, bool)[train])
    return {"inputs": list(INPUTS), "mean": mean.tolist(), "scale": scale.tolist(), "coef": lr.coef_[0].tolist(),
            "intercept": float(lr.intercept_[0]), "binarize": float(binarize)}


def head_proba(head, z, S):
    """P(cell) of the head for network logits ``z`` and shape inputs ``S``."""
    return cal.sigmoid(head_logit(head, z, S))


def folded_logits(calib, p):
    """The logits a network gives once the affine calibration ``calib`` is folded into it, from the probabilities
    ``p`` it gave before (the head's network input, as the shipped network computes it)."""
    a, b = cal.affine(calib)
    return a * cal.logit(p) + b


def out_of_lab_head(y, z, S, groups, binarize, min_recall=MIN_RECALL, z_mask=None):
    """(head entry, nested metrics, named points, threshold) for pooled out-of-lab scores: the head fitted on every
    lab; its points chosen on its own pooled outputs; the nested numbers (:func:`nested_metrics`'s) from heads
    fitted without each lab. ``z_mask``: the same ROIs' network logits with the summary images removed. Then every
    ROI counts twice, with its images and without, in the fit and the choice of points (the head serves recordings
    with and without images alike, as the network's channel dropout does, and every lab's recall floor holds for
    both), and the nested numbers are given for each: "labs", "pooled", "points" and "probability" with the images,
    "labs_mask_only", "points_mask_only" and "probability_mask_only" without."""
    y, groups, n = np.asarray(y, bool), np.asarray(groups), len(y)
    if z_mask is not None:
        y, z, S, groups = np.r_[y, y], np.r_[z, z_mask], np.r_[S, S], np.r_[groups, groups]

    def fit(train):
        return head_proba(fit_head(y, z, S, binarize, train), z, S)

    head = fit_head(y, z, S, binarize)
    labs = sorted(set(groups))
    twice = "; every ROI twice, with its summary images and without" if z_mask is not None else ""
    head.update(fitted_on=f"out-of-lab scores of {n} labelled ROIs from {len(labs)} labs ({', '.join(labs)}): each "
                          f"lab's network logits from a network trained on the other labs{twice}",
                rule=f"logistic regression (L2, C={C:g}, standardised inputs) of the labels on the network's logit "
                     f"and the ROI's shape; no trace or pipeline evidence (the labelled real recordings have none)")
    points = choose_points(y, head_proba(head, z, S), groups, min_recall, on=HEAD)
    nested = nested_metrics(y, None, None, groups, min_recall, fit=fit)
    if z_mask is not None:
        nested = _each_input(nested, y[:n], groups[:n])
    return head, nested, points, points["recall"]["threshold"]


def _each_input(nested, y, groups):
    """Nested numbers of the doubled scores split into the ROIs with their images and without, each at every
    lab's own thresholds (chosen on both halves of the other labs)."""
    n, out = len(y), {}
    for suffix, q in (("", nested["probability"][:n]), ("_mask_only", nested["probability"][n:])):
        points = {name: {g: dict(metrics(y[groups == g], q[groups == g], m["threshold"]), threshold=m["threshold"])
                         for g, m in per_lab.items()} for name, per_lab in nested["points"].items()}
        out.update({f"labs{suffix}": points["recall"], f"points{suffix}": points, f"probability{suffix}": q})
    thr = np.array([out["labs"][g]["threshold"] for g in groups])
    out["pooled"] = metrics(y, out["probability"], 0.5, out["probability"] >= thr)
    return out
