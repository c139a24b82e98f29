"""Classification metrics, and a model scored on labelled ROI sets (``evaluate_model``: it runs the classifier and
its baselines; ``roicurate.report.evaluation`` writes what it returns). One definition for every number in a card,
an evaluation JSON or a README:
scikit-learn's (``roc_auc_score``, ``average_precision_score``, ``precision_recall_curve``, ``roc_curve``,
``confusion_matrix``, ``calibration_curve``), behind the names the rest of roicurate calls.

Positives are ROIs labelled cell (1), or the positive class of class labels; ``score`` is the probability of
the model's positive class. A K-class model (K > 2) is also scored on its classes where the labels have them
(``class_metrics``: the predicted class is the most probable one). Pooled numbers concatenate
all ROIs (micro); ``macro`` is the mean over recordings. AUCs are NaN when a group has a single class.
ECE (expected calibration error): 15 equal-width bins of the score (``calibration_curve(strategy="uniform")``:
a score on a bin edge belongs to the lower bin); the mean, weighted by bin size, of
|fraction of cells in the bin - mean score in the bin|.

scikit-learn is imported inside the functions: ``sklearn.metrics`` costs ~1 s of every ``apply``'s start-up.
"""
import warnings

import numpy as np

METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "ece")
ECE_BINS = 15


def roc_auc(y, s):
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, np.asarray(s, float)))


def pr_curve(y, s):
    """Precision and recall at every distinct threshold (descending), and the thresholds: scikit-learn's
    ``precision_recall_curve`` without its closing (precision 1, recall 0) point. No cell: recall is 1."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    if not len(y):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    from sklearn.metrics import precision_recall_curve
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "no positive class found": the docstring says what follows
        p, r, thr = precision_recall_curve(y, s)
    return p[-2::-1], r[-2::-1], thr[::-1]


def roc_curve(y, s):
    """False and true positive rates from (0, 0) to (1, 1), the distinct thresholds in between (the first is
    inf); a rate is NaN when the ROIs have no negative (false) or no positive (true)."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    if not len(y):
        return np.zeros(1), np.zeros(1), np.full(1, np.inf)
    from sklearn.metrics import roc_curve as curve
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # a single class: the docstring says what follows
        return curve(y, s, drop_intermediate=False)


def pr_auc(y, s):
    """Average precision (area under the precision-recall step curve); NaN without a cell."""
    y = np.asarray(y, bool)
    if not y.any():
        return float("nan")
    from sklearn.metrics import average_precision_score
    return float(average_precision_score(y, np.asarray(s, float)))


def reliability(y, s, bins=ECE_BINS):
    """Per equal-width score bin (scikit-learn's ``calibration_curve``, "uniform"): (count, mean score, fraction
    of cells); empty bins have count 0 and NaN. Scores are clipped to [0, 1]."""
    y, s = np.asarray(y, bool), np.clip(np.asarray(s, float), 0, 1)
    # the bin sizes, which calibration_curve does not return, with its own edges and searchsorted rule
    n = np.bincount(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], s), minlength=bins)
    conf, frac = np.full(bins, np.nan), np.full(bins, np.nan)
    if len(s):
        from sklearn.calibration import calibration_curve
        frac[n > 0], conf[n > 0] = calibration_curve(y, s, n_bins=bins, strategy="uniform")
    return n, conf, frac


def ece(y, s, bins=ECE_BINS):
    """NaN for scores that are not probabilities (outside [0, 1], e.g. CaImAn's SNR)."""
    s = np.asarray(s, float)
    if len(s) and (s.min() < 0 or s.max() > 1):
        return float("nan")
    n, conf, frac = reliability(y, s, bins)
    if not n.sum():
        return float("nan")
    ok = n > 0
    return float(np.sum(n[ok] * np.abs(frac[ok] - conf[ok])) / n.sum())


def _confusion(y, predicted, k):
    """The k x k confusion matrix (rows: true, columns: predicted) of indices (or booleans) into range(k)."""
    if not len(y):
        return np.zeros((k, k), np.int64)
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(np.asarray(y, np.int64), np.asarray(predicted, np.int64), labels=np.arange(k))


def prf(y, accepted):
    (tn, fp), (fn, tp) = _confusion(np.asarray(y, bool), np.asarray(accepted, bool), 2).tolist()
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "confusion_matrix": [[tn, fp], [fn, tp]]}


def class_metrics(y, predicted, classes):
    """K-class numbers for true class indices ``y`` and predicted ones (both into ``classes``): accuracy, the
    majority-class rate (the accuracy of always answering the commonest true class), per-class precision /
    recall / F1 and support, macro-F1 (mean F1 over the classes present in ``y``) and the K x K confusion matrix
    (rows: true class, columns: predicted class)."""
    y, p = np.asarray(y, np.int64), np.asarray(predicted, np.int64)
    k = len(classes)
    cm = _confusion(y, p, k)
    per = {}
    for i, name in enumerate(classes):
        tp, fp, fn = int(cm[i, i]), int(cm[:, i].sum() - cm[i, i]), int(cm[i, :].sum() - cm[i, i])
        per[name] = {"precision": tp / (tp + fp) if tp + fp else float("nan"),
                     "recall": tp / (tp + fn) if tp + fn else float("nan"),
                     "f1": 2 * tp / (2 * tp + fp + fn) if tp + fn else float("nan"), "support": tp + fn}
    n = int(cm.sum())
    return {"classes": list(classes), "n": n, "accuracy": float(np.trace(cm) / n) if n else float("nan"),
            "majority_rate": float(cm.sum(1).max() / n) if n else float("nan"),
            "macro_f1": _nanmean([m["f1"] for m in per.values()]), "per_class": per,
            "confusion_matrix": cm.tolist()}


def metrics(y, s, threshold, accepted=None):
    """Every number for one group of ROIs. ``accepted`` overrides ``s >= threshold`` (a pipeline's own verdict,
    which need not follow its score)."""
    y = np.asarray(y, bool)
    s = np.asarray(s, float)
    out = prf(y, s >= threshold if accepted is None else accepted)
    out.update(roc_auc=roc_auc(y, s), pr_auc=pr_auc(y, s), ece=ece(y, s), n=int(len(y)), n_cell=int(y.sum()),
               cell_fraction=float(y.mean()) if len(y) else float("nan"), threshold=float(threshold))
    return out


def evaluate_groups(groups, threshold):
    """``groups``: {recording: (labels, scores) or (labels, scores, accepted)} ->
    {"pooled": ..., "macro": ..., "per_recording": {...}}."""
    groups = {k: tuple(v) + (None,) * (3 - len(v)) for k, v in groups.items()}
    per = {k: metrics(y, s, threshold, a) for k, (y, s, a) in groups.items()}
    cat = lambda i: np.concatenate([np.asarray(v[i]) for v in groups.values()]) if groups else np.zeros(0)
    acc = None if any(v[2] is None for v in groups.values()) else cat(2).astype(bool)
    pooled = metrics(cat(0), cat(1), threshold, acc)
    macro = {k: _nanmean([m[k] for m in per.values()]) for k in METRICS}
    return {"pooled": pooled, "macro": macro, "per_recording": per}


def _nanmean(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def threshold_for_precision(y, s, target):
    """Lowest threshold whose precision on (y, s) is >= target (most recall at that precision); None if never."""
    p, r, thr = pr_curve(y, s)
    ok = np.flatnonzero(p >= target)
    return None if not len(ok) else float(thr[ok[-1]])


def best_f1_threshold(y, s):
    p, r, thr = pr_curve(y, s)
    if not len(thr):
        return 0.5, float("nan")
    f = 2 * p * r / np.maximum(p + r, 1e-12)
    i = int(np.argmax(f))
    return float(thr[i]), float(f[i])


# ---- a model (and the baselines) on labelled ROI sets --------------------------------------------------------
def evaluate_model(classifier, sets, threshold=None, baselines=True, suite2p_classifier=None, progress=None):
    """Score every labelled RoiSet in ``sets`` with ``classifier`` (calibration from its card applied) and the
    baselines. Returns (numbers, table): ``numbers`` is what ``roicurate evaluate`` writes as JSON (the model's
    pooled / macro / per-recording metrics, and the same for each baseline); ``table`` holds per-ROI arrays."""
    from roicurate import baselines as bl
    from roicurate.labels import cell_labels
    thr = classifier.threshold if threshold is None else float(threshold)
    classes = list(classifier.classes)
    multi = len(classes) > 2
    rows = {"recording": [], "unit": [], "roi": [], "label": [], "model": []}
    if multi:
        rows.update({"class_label": [], "predicted_class": [], **{f"p_{c}": [] for c in classes}})
    base = {}
    for rs in sets:
        n = len(rs)
        rows["recording"] += [rs.recording] * n
        rows["unit"] += [rs.path] * n
        rows["roi"].append(np.asarray(rs.origin.get("roi_index", np.arange(n))))   # the pipeline's ROI numbers
        rows["label"].append(cell_labels(rs))
        proba = classifier.predict_proba(rs, progress=progress)
        rows["model"].append(proba[:, classifier.positive])
        if multi:
            rows["class_label"].append(class_indices(rs, classes))
            rows["predicted_class"].append(proba.argmax(1))
            for j, c in enumerate(classes):
                rows[f"p_{c}"].append(proba[:, j])
        if baselines:
            found = bl.all_baselines(rs, suite2p_classifier, classifier.card.get("task", "curate"))
            if rs.origin.get("label_source") == "pipeline verdict":
                found.pop("pipeline", None)        # the labels themselves
            base[id(rs)] = found
    table = {k: (np.asarray(v) if k in ("recording", "unit") else np.concatenate(v)) for k, v in rows.items()}
    names = [k for k in bl.NAMES if base and all(k in b for b in base.values())]
    for k in names:
        found = [base[id(rs)][k] for rs in sets]
        if any(score is None for score, _ in found):     # scores on one scale for all, or the verdicts themselves
            found = [(np.asarray(acc, float), acc) for _, acc in found]
        table[f"{k}_score"] = np.concatenate([score for score, _ in found])
        table[f"{k}_accepted"] = np.concatenate([base[id(rs)][k][1] for rs in sets]).astype(bool)

    def grouped(score, accepted=None):
        out = {}
        for rec in dict.fromkeys(table["recording"]):
            m = table["recording"] == rec
            out[rec] = (table["label"][m], score[m], None if accepted is None else accepted[m])
        return evaluate_groups(out, thr if accepted is None else 0.5)

    card = classifier.card
    numbers = {"model": {"name": card.get("name"), "sha256": card.get("sha256"), "arch": card.get("arch"),
                         "threshold": thr, "calibration": (card.get("calibration") or {}).get("method", "none")},
               "threshold": thr, "n_rois": int(len(table["label"])), "recordings": list(dict.fromkeys(table["recording"])),
               "label_sources": sorted({str(rs.origin.get("label_source")) for rs in sets}),
               **grouped(table["model"]),
               "best_threshold": dict(zip(("threshold", "f1"), best_f1_threshold(table["label"], table["model"]))),
               "baselines": {k: grouped(table[f"{k}_score"], table[f"{k}_accepted"]) for k in names}}
    if multi and (table["class_label"] >= 0).any():
        known = table["class_label"] >= 0
        per = {}
        for rec in dict.fromkeys(table["recording"][known]):
            m = known & (table["recording"] == rec)
            per[rec] = class_metrics(table["class_label"][m], table["predicted_class"][m], classes)
        numbers["classes"] = {"pooled": class_metrics(table["class_label"][known], table["predicted_class"][known],
                                                      classes), "per_recording": per,
                              "predicted_class": "the most probable class"}
    return numbers, table


def class_indices(rs, classes):
    """Class indices into ``classes`` of a RoiSet's labels, or -1 everywhere when its labels name other classes
    (or none: cell / not cell only)."""
    names = rs.origin.get("label_classes")
    if names is None or not set(names) <= set(classes):
        return np.full(len(rs), -1, np.int64)
    labels = np.asarray(rs.labels, np.int64)
    to_model = np.asarray([list(classes).index(n) for n in names], np.int64)
    return np.where(labels >= 0, to_model[np.maximum(labels, 0)], -1)


def jsonable(o):
    """JSON-ready: numpy types to Python, NaN and infinities to null (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (o.tolist() if isinstance(o, np.ndarray) else o)]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    return o
