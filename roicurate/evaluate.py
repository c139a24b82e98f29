"""Classification metrics, written out so that every number in a card or README has one definition.

Positives are ROIs labelled cell (1). Pooled ("micro") numbers concatenate all ROIs; "macro" is the mean over
recordings. AUCs are NaN when a recording has a single class.
"""
import numpy as np
from scipy.stats import rankdata


def roc_auc(y, s):
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return float("nan")
    r = rankdata(np.asarray(s, float))
    npos, nneg = y.sum(), (~y).sum()
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def pr_curve(y, s):
    """Precision and recall at every distinct threshold (descending), and the thresholds."""
    y = np.asarray(y, bool)
    s = np.asarray(s, float)
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]   # last index of each distinct score
    tp, fp, thr = tp[last], fp[last], ss[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(y.sum(), 1)
    return precision, recall, thr


def pr_auc(y, s):
    """Average precision (area under the precision-recall step curve)."""
    y = np.asarray(y, bool)
    if not y.any():
        return float("nan")
    p, r, _ = pr_curve(y, s)
    return float(np.sum(np.diff(np.r_[0, r]) * p))


def prf(y, accepted):
    y, a = np.asarray(y, bool), np.asarray(accepted, bool)
    tp, fp, fn, tn = int((y & a).sum()), int((~y & a).sum()), int((y & ~a).sum()), int((~y & ~a).sum())
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def metrics(y, s, threshold):
    y = np.asarray(y, bool)
    out = prf(y, np.asarray(s) >= threshold)
    out.update(roc_auc=roc_auc(y, s), pr_auc=pr_auc(y, s), n=int(len(y)), n_cell=int(y.sum()),
               cell_fraction=float(y.mean()) if len(y) else float("nan"), threshold=float(threshold))
    return out


def evaluate_groups(groups, threshold):
    """``groups``: {recording: (labels, scores)} -> {"pooled": ..., "macro": ..., "per_recording": {...}}."""
    per = {k: metrics(y, s, threshold) for k, (y, s) in groups.items()}
    ys = np.concatenate([np.asarray(y) for y, _ in groups.values()]) if groups else np.zeros(0)
    ss = np.concatenate([np.asarray(s) for _, s in groups.values()]) if groups else np.zeros(0)
    pooled = metrics(ys, ss, threshold)
    macro = {k: float(np.nanmean([m[k] for m in per.values()])) if per else float("nan")
             for k in ("precision", "recall", "f1", "roc_auc", "pr_auc")}
    return {"pooled": pooled, "macro": macro, "per_recording": per}


def threshold_for_precision(y, s, target):
    """Lowest threshold whose precision on (y, s) is >= target (most recall at that precision); None if never."""
    p, r, thr = pr_curve(y, s)
    ok = np.flatnonzero(p >= target)
    return None if not len(ok) else float(thr[ok[-1]])


def best_f1_threshold(y, s):
    p, r, thr = pr_curve(y, s)
    f = 2 * p * r / np.maximum(p + r, 1e-12)
    i = int(np.argmax(f))
    return float(thr[i]), float(f[i])
