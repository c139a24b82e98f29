"""Scoring a segmentation against ground-truth masks: the Neurofinder numbers and pixel IoU.

Neurofinder (codeneuro/neurofinder-python, ``centers`` and ``shapes``): the centre of a region is the mean of its
pixel coordinates. Ground-truth regions are visited in file order; each takes the nearest predicted centre not
yet taken, and the pair counts as a match when the distance is below ``distance`` (5 px by default, as there).
recall = matches / ground-truth regions, precision = matches / predicted regions, F1 ("combined") their harmonic
mean. Over the matched pairs, ``inclusion`` is the mean fraction of the ground-truth region's pixels that the
predicted region covers and ``exclusion`` the mean fraction of the predicted region's pixels that lie in the
ground-truth region (0.0 and 1.0 when nothing matched, as the reference returns).

Pixel IoU compares two masks of the whole frame: every ground-truth region's pixels against every predicted
region's, |T ∩ P| / |T ∪ P|.

A region is an (n, 2) int array of (y, x) pixels; ``regions_from_labels`` / ``regions_json`` convert from a label
image and to the Neurofinder ``regions.json`` layout.
"""
from pathlib import Path

import numpy as np
from scipy import ndimage

from roicurate import RoicurateError

NEUROFINDER_DISTANCE = 5.0


def regions_from_labels(labels):
    """[(n, 2) int (y, x) pixels] of objects 1..max of a label image, in label order (empty labels skipped)."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=int(flat.max(initial=0)) + 1)
    bounds = np.cumsum(counts)
    ys, xs = np.unravel_index(order, labels.shape)
    out = []
    for k in range(1, len(counts)):
        if counts[k]:
            sl = slice(bounds[k - 1], bounds[k])
            out.append(np.stack([ys[sl], xs[sl]], 1).astype(np.int64))
    return out


def label_objects(mask, min_size=0):
    """Connected components (8-connectivity) of a boolean mask, those smaller than ``min_size`` pixels dropped,
    renumbered 1..n in scan order. Returns the int32 label image."""
    labels, n = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
    if n == 0:
        return labels.astype(np.int32)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    new = np.zeros(n + 1, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1)
    return new[labels]


def regions_json(regions, ids=None):
    """The Neurofinder layout: [{"id": str, "coordinates": [[y, x], ...]}, ...]."""
    ids = [str(i) for i in range(len(regions))] if ids is None else [str(i) for i in ids]
    return [{"id": i, "coordinates": np.asarray(r, np.int64).tolist()} for i, r in zip(ids, regions)]


def union_mask(regions, shape):
    m = np.zeros(shape, bool)
    for r in regions:
        if len(r):
            m[r[:, 0], r[:, 1]] = True
    return m


def read_truth(path, shape, cells_only=True):
    """Ground-truth regions of a Neurofinder ``regions.json`` inside a ``shape`` frame (pixels outside dropped).
    With ``cells_only`` and a ``classes.json`` beside it (the simulations), only cell regions (soma) are kept.
    Returns (regions, note) where note says what was kept."""
    from roicurate.labels import read_classes, read_regions
    rs = read_regions(path, shape)
    regions = [np.stack([rs.y[a:b], rs.x[a:b]], 1).astype(np.int64) for a, b in zip(rs.indptr[:-1], rs.indptr[1:])]
    classes = Path(path).with_name("classes.json")
    note = f"{len(regions)} regions of {path}"
    if cells_only and classes.exists():
        is_cell = read_classes(classes, rs.origin["ids"])[0]
        regions = [r for r, c in zip(regions, is_cell) if c]
        note = f"{len(regions)} cell regions of {path} (classes from {classes.name})"
    regions = [r for r in regions if len(r)]
    if not regions:
        raise RoicurateError(f"{path}: no ground-truth regions inside the {shape[0]}x{shape[1]} frame")
    return regions, note


def centres(regions):
    return np.array([r.mean(0) for r in regions], np.float64).reshape(-1, 2)


def neurofinder_match(truth, pred, distance=NEUROFINDER_DISTANCE):
    """For each ground-truth region (in order), the index of its matched predicted region, or -1."""
    tc, pc = centres(truth), centres(pred)
    free = np.ones(len(pc), bool)
    out = np.full(len(tc), -1, np.int64)
    for i, c in enumerate(tc):
        if not free.any():
            break
        d = np.where(free, np.hypot(*(pc - c).T), np.inf)
        j = int(np.argmin(d))
        if d[j] < distance:
            out[i], free[j] = j, False
    return out


def _overlap_rates(a, b):
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    fa, fb = (a[:, 0] << 32) + a[:, 1], (b[:, 0] << 32) + b[:, 1]
    hit = len(np.intersect1d(fa, fb))
    return hit / len(np.unique(fa)), hit / len(np.unique(fb))


def neurofinder_scores(truth, pred, distance=NEUROFINDER_DISTANCE):
    """{recall, precision, f1, inclusion, exclusion, n_truth, n_pred, n_matched, distance} (see the module doc)."""
    match = neurofinder_match(truth, pred, distance) if len(pred) else np.full(len(truth), -1)
    n = int((match >= 0).sum())
    recall = n / len(truth) if len(truth) else 0.0
    precision = n / len(pred) if len(pred) else 0.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    rates = [_overlap_rates(truth[i], pred[j]) for i, j in enumerate(match) if j >= 0]
    inclusion, exclusion = np.mean(rates, 0) if rates else (0.0, 1.0)
    return {"recall": recall, "precision": precision, "f1": f1, "inclusion": float(inclusion),
            "exclusion": float(exclusion), "n_truth": len(truth), "n_pred": len(pred), "n_matched": n,
            "distance": float(distance)}


def pixel_iou(truth_mask, pred_mask):
    """IoU of two boolean frames (1.0 when both are empty)."""
    t, p = np.asarray(truth_mask, bool), np.asarray(pred_mask, bool)
    union = int((t | p).sum())
    return float((t & p).sum() / union) if union else 1.0


def score(truth, pred, shape, distance=NEUROFINDER_DISTANCE):
    """Neurofinder numbers plus ``pixel_iou`` of ground-truth and predicted regions in a ``shape`` frame (and the
    pixel counts behind it, which ``pooled`` sums)."""
    out = neurofinder_scores(truth, pred, distance)
    t, p = union_mask(truth, shape), union_mask(pred, shape)
    out.update(pixel_iou=pixel_iou(t, p), pixel_intersection=int((t & p).sum()), pixel_union=int((t | p).sum()))
    return out


def pooled(scores):
    """Several images' ``score`` results as one: matches, regions and pixels summed before dividing (micro
    average); inclusion and exclusion are means over all matched pairs."""
    m, t, p = (sum(s[k] for s in scores) for k in ("n_matched", "n_truth", "n_pred"))
    recall, precision = (m / t if t else 0.0), (m / p if p else 0.0)
    union = sum(s["pixel_union"] for s in scores)
    pair_mean = lambda k, empty: sum(s[k] * s["n_matched"] for s in scores) / m if m else empty
    return {"recall": recall, "precision": precision,
            "f1": 2 * recall * precision / (recall + precision) if recall + precision else 0.0,
            "inclusion": pair_mean("inclusion", 0.0), "exclusion": pair_mean("exclusion", 1.0),
            "pixel_iou": sum(s["pixel_intersection"] for s in scores) / union if union else 1.0,
            "n_truth": t, "n_pred": p, "n_matched": m, "distance": scores[0]["distance"] if scores else None}
