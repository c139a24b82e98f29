"""An operating point that transfers to a lab the model never saw (``roicurate train --operating-point out-of-lab``).

One validation split says how a model does on recordings like its training data; a new lab differs in zoom,
indicator, labelling and cell fraction. So the calibration and the threshold are chosen on *out-of-lab* scores:
for every lab, a model trained the same way on the other labs scores that lab's ROIs. On the pooled scores:

* calibration: Platt (slope and bias on the network's logit, plus the weight of the shape prior's logit), and
* threshold, precision first: the highest one at which every lab keeps recall >= ``min_recall``.

The numbers reported for each lab are *nested*: that lab's calibration and threshold come from the other labs'
scores alone, exactly as they would for a new lab. The shipped model is then trained on every lab.
"""
import re

import numpy as np

from roicurate.common import RoicurateError
from roicurate import calibrate as cal
from roicurate.evaluate import metrics
from roicurate.training.points import MIN_RECALL, POINTS, choose_points, threshold_for_recall  # noqa: F401


def lab_of(recording):
    """The lab of a recording name: Neurofinder ``neurofinder.NN.MM`` -> ``neurofinder.NN`` (NN is the lab),
    simulations -> ``sim``, ``LAB/SESSION`` -> ``LAB`` (the shared datasets' layout, e.g. ``abo275/501484643``),
    else the recording itself (each its own group)."""
    name = str(recording).rstrip("/")
    m = re.search(r"neurofinder\.(\d+)\.\d+", name)
    if m:
        return f"neurofinder.{m.group(1)}"
    base = name.split("/")[-1]
    if re.fullmatch(r"(s2p|caiman)_sim\d+", base) or name.startswith("sim/"):
        return "sim"
    return name.split("/")[0] if "/" in name and not name.startswith("/") else name


def operating_point(y, p, offset, groups, min_recall=MIN_RECALL):
    """(calibration entry, threshold) from pooled out-of-lab network probabilities ``p`` (and prior logits)."""
    y = np.asarray(y, bool)
    calib = cal.fit("platt", y, p, offset)
    calib["fitted_on"] = "out-of-lab scores (each lab scored by a model trained on the other labs)"
    q = cal.apply(calib, p, offset)
    return calib, threshold_for_recall(y, q, np.asarray(groups), min_recall)


def platt(y, p, offset):
    """``fit(train)`` for :func:`nested_metrics`: Platt (with the prior's weight) fitted on the ROIs in ``train``,
    the calibrated probabilities of every ROI."""
    def fit(train):
        calib = cal.fit("platt", y[train], p[train], None if offset is None else offset[train])
        return cal.apply(calib, p, offset)
    return fit


def nested_metrics(y, p, offset, groups, min_recall=MIN_RECALL, fit=None):
    """Per lab: metrics at the calibration and threshold chosen on the *other* labs' scores; pooled ECE of those
    nested probabilities; and each lab's metrics at every named operating point chosen on the other labs
    (roicurate/training/points.py). ``fit(train)``: probabilities of every ROI from what was fitted on the ROIs
    of the boolean mask ``train`` alone (default: :func:`platt` on ``p`` and ``offset``; a stacked head passes its
    own, roicurate/training/head.py). Returns {"labs": {lab: metrics}, "pooled": metrics, "points": {point: {lab:
    metrics}}, "probability", "accepted"}."""
    y, groups = np.asarray(y, bool), np.asarray(groups)
    if fit is None:
        fit = platt(y, np.asarray(p, float), None if offset is None else np.asarray(offset, float))
    q = np.zeros(len(y))
    acc = np.zeros(len(y), bool)
    labs, points = {}, {name: {} for name in POINTS}
    for g in np.unique(groups):
        inside = groups == g
        scored = fit(~inside)
        thr = threshold_for_recall(y[~inside], scored[~inside], groups[~inside], min_recall)
        q[inside] = scored[inside]
        acc[inside] = q[inside] >= thr
        labs[str(g)] = dict(metrics(y[inside], q[inside], thr), threshold=thr)
        chosen = choose_points(y[~inside], scored[~inside], groups[~inside], min_recall)
        for name, point in chosen.items():
            points[name][str(g)] = dict(metrics(y[inside], q[inside], point["threshold"]), threshold=point["threshold"])
    return {"labs": labs, "pooled": metrics(y, q, 0.5, acc), "points": points, "probability": q, "accepted": acc}


def check_labs(groups):
    found = sorted(set(groups))
    if len(found) < 3:
        raise RoicurateError(f"--operating-point out-of-lab needs recordings of three or more labs (found: "
                             f"{', '.join(found)}): each lab's threshold is checked on labs chosen without it")
    return found
