"""Named operating points, chosen on pooled out-of-lab scores (one model per lab, trained on the other labs).

* ``recall``: the highest threshold at which every lab keeps recall >= ``min_recall`` (0.85): few cells lost.
* ``balanced``: the best pooled F1 among the thresholds at which every lab's F1 is at least its accept-all F1
  (accepting everything is the baseline a threshold must beat on every lab).
* ``precision``: the lowest threshold at which every lab's precision is >= ``PRECISION`` (0.9), among thresholds
  that keep every lab's recall >= ``PRECISION_RECALL_FLOOR`` (a point that finds a quarter of the cells at least);
  where none reaches it, the one with the highest lowest-lab precision, and its rule says what was reached.

``q`` are calibrated probabilities; ``groups`` the lab of each ROI. ``choose_points`` returns
{name: {"threshold", "rule"}}; the numbers a new lab would get at each point (its points chosen on the other labs'
scores alone, with their own calibration) are ``roicurate.training.outoflab.nested_metrics(...)["points"]``.
"""
import numpy as np

MIN_RECALL = 0.85
PRECISION = 0.9
PRECISION_RECALL_FLOOR = 0.25
POINTS = ("recall", "balanced", "precision")


def threshold_for_recall(y, q, groups, min_recall):
    """The highest threshold at which every group's recall is >= ``min_recall`` (groups without cells impose
    nothing)."""
    t = np.inf
    for g in np.unique(groups):
        pos = np.sort(q[(groups == g) & y])[::-1]
        if len(pos):
            t = min(t, pos[int(np.ceil(min_recall * len(pos))) - 1])
    return float(min(t, 1.0)) if np.isfinite(t) else 0.5


PLATT = "Platt-calibrated pooled leave-one-lab-out scores"
HEAD = "the stacked head's output on pooled leave-one-lab-out scores"


def recall_rule(min_recall, on=PLATT):
    """The recall point's rule; ``on``: the scores it was chosen on (:data:`PLATT` or :data:`HEAD`)."""
    return f"highest threshold at which every lab's out-of-lab recall is >= {min_recall} ({on})"


def _per_lab(y, q, groups, thresholds):
    """(precision, recall, F1) arrays of shape (labs, thresholds), and accept-all F1 per lab."""
    labs = [g for g in np.unique(groups) if y[groups == g].any()]
    P, R, F, base = [], [], [], []
    for g in labs:
        yy, qq = y[groups == g], q[groups == g]
        acc = qq[None, :] >= thresholds[:, None]
        tp = (acc & yy).sum(1)
        n_acc, n_pos = acc.sum(1), yy.sum()
        p = np.where(n_acc > 0, tp / np.maximum(n_acc, 1), 1.0)
        r = tp / n_pos
        P.append(p)
        R.append(r)
        F.append(np.where(tp > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0))
        frac = yy.mean()
        base.append(2 * frac / (1 + frac))
    return np.array(P), np.array(R), np.array(F), np.array(base)


def _pooled_f1(y, q, thresholds):
    acc = q[None, :] >= thresholds[:, None]
    tp = (acc & y).sum(1)
    return 2 * tp / np.maximum(acc.sum(1) + y.sum(), 1)


def choose_points(y, q, groups, min_recall=MIN_RECALL, on=PLATT):
    """{name: {"threshold", "rule"}} on calibrated out-of-lab probabilities ``q`` (``on``: what they are)."""
    y, q, groups = np.asarray(y, bool), np.asarray(q, float), np.asarray(groups)
    t = np.unique(q)
    P, R, F, base = _per_lab(y, q, groups, t)
    points = {"recall": {"threshold": threshold_for_recall(y, q, groups, min_recall), "rule": recall_rule(min_recall, on)}}

    ok = (F >= base[:, None]).all(0)
    pooled = _pooled_f1(y, q, t)
    if ok.any():
        i = int(np.argmax(np.where(ok, pooled, -1)))
        rule = "best pooled out-of-lab F1 with every lab's F1 >= its accept-all F1"
    else:
        i = int(np.argmax((F - base[:, None]).min(0)))
        rule = ("no threshold gives every lab an F1 >= its accept-all F1; the one closest to that "
                "(largest lowest-lab F1 gain over accepting all)")
    points["balanced"] = {"threshold": float(t[i]), "rule": rule, "pooled_f1": float(pooled[i])}

    floor = (R >= PRECISION_RECALL_FLOOR).all(0)
    reach = floor & (P >= PRECISION).all(0)
    if reach.any():
        i = int(np.flatnonzero(reach)[0])
        rule = (f"lowest threshold at which every lab's out-of-lab precision is >= {PRECISION} "
                f"(recall >= {PRECISION_RECALL_FLOOR} on every lab)")
    else:
        low = np.where(floor, P.min(0), -1)
        i = int(np.argmax(low))
        rule = (f"no threshold keeping every lab's recall >= {PRECISION_RECALL_FLOOR} reaches precision {PRECISION} "
                f"on every lab; this one has the highest lowest-lab precision, {low[i]:.2f}")
    points["precision"] = {"threshold": float(t[i]), "rule": rule, "lowest_lab_precision": float(P[:, i].min())}
    return points

