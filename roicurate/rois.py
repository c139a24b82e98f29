"""RoiSet: the one data type every stage speaks (sources produce it, crops/models/writers consume it), and the
fingerprint of its ROIs' geometry that every record roicurate writes carries (``roi_fingerprint``)."""
import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from roicurate.common import RoicurateError


@dataclass
class RoiSet:
    """ROI masks of one field of view in a flat sparse layout: ROI i is ``slice(indptr[i], indptr[i+1])``
    of ``y``, ``x`` (full-frame row/column) and ``weight``."""

    shape: tuple
    indptr: np.ndarray
    y: np.ndarray
    x: np.ndarray
    weight: np.ndarray
    images: dict = field(default_factory=dict)      # full-frame summary images: mean, mean_enhanced, max, corr ...
    traces: np.ndarray | None = None                # (N, T) when the pipeline saved them
    labels: np.ndarray | None = None                # int class per ROI, -1 unknown
    pipeline_accepted: np.ndarray | None = None     # the pipeline's own verdict (bool, N)
    features: dict = field(default_factory=dict)    # per-ROI scalars the pipeline computed (skew, compact ...)
    source: str = ""                                # the registered source that read it (suite2p, caiman, nwb ...)
    pipeline: str = ""                              # the pipeline that found the ROIs (suite2p, caiman); "" unknown
    path: str = ""                                  # the unit it was read from (plane folder, file, file::table)
    recording: str = ""                             # the recording it belongs to (train/validation splits, labs)
    origin: dict = field(default_factory=dict)      # format details a reader keeps for itself (roi_file, n, gSig ...)
    diameter: float | None = None                   # reference cell diameter in px (roicurate/scale.py); None: not yet set
    diameter_source: str = ""                       # where it came from: the pipeline's setting, --diameter, the ROIs
    frame_source: str = ""                          # where ``shape`` came from when the file does not state it
    human: np.ndarray | None = None                 # review answers (int8 (N,): 1 cell, 0 not, -1 not reviewed)

    def __post_init__(self):
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.indptr = np.asarray(self.indptr, np.int64)
        self.y = np.asarray(self.y, np.int32)
        self.x = np.asarray(self.x, np.int32)
        self.weight = np.asarray(self.weight, np.float32)

    def __len__(self):
        return len(self.indptr) - 1

    @classmethod
    def from_pixels(cls, shape, ys, xs, weights=None, **kw):
        """Build from per-ROI pixel lists (what Suite2p's stat and regions.json hold)."""
        n = np.array([len(y) for y in ys], np.int64)
        indptr = np.concatenate([[0], np.cumsum(n)])
        cat = lambda arrs, dt: np.concatenate([np.asarray(a, dt).ravel() for a in arrs]) if len(arrs) else np.zeros(0, dt)
        w = cat(weights, np.float32) if weights is not None else np.ones(indptr[-1], np.float32)
        return cls(shape, indptr, cat(ys, np.int32), cat(xs, np.int32), w, **kw)

    @property
    def npix(self):
        return np.diff(self.indptr)

    @property
    def roi_index(self):
        """ROI number of every stored pixel."""
        return np.repeat(np.arange(len(self)), self.npix)

    def validate(self, where):
        """Raise RoicurateError (naming ``where``) for what no reader should let through."""
        if len(self) == 0:
            return
        empty = np.flatnonzero(self.npix == 0)
        if len(empty):
            raise RoicurateError(f"{where}: ROI {empty[0]} has no pixels ({len(empty)} such ROIs)")
        bad = ~np.isfinite(self.weight) | (self.weight < 0)
        if bad.any():
            i = int(self.roi_index[np.argmax(bad)])
            raise RoicurateError(f"{where}: ROI {i} has NaN, infinite or negative pixel weights")
        Ly, Lx = self.shape
        out = (self.y < 0) | (self.y >= Ly) | (self.x < 0) | (self.x >= Lx)
        if out.any():
            i = int(self.roi_index[np.argmax(out)])
            raise RoicurateError(f"{where}: ROI {i} has pixels outside the {Ly}x{Lx} frame")
        zero = np.flatnonzero(np.maximum.reduceat(self.weight, self.indptr[:-1]) <= 0)
        if len(zero):
            raise RoicurateError(f"{where}: ROI {zero[0]} has only zero weights")

    def binary(self, frac=0.0):
        """Boolean pixel mask per stored pixel: weight > frac * (max weight of its ROI)."""
        if len(self) == 0:
            return np.zeros(0, bool)
        roimax = np.maximum.reduceat(self.weight, self.indptr[:-1])
        return self.weight > frac * roimax[self.roi_index]

    def centroids(self, binarize=None):
        """(N, 2) weighted centre of mass (y, x) of each ROI."""
        w = self.binary(binarize).astype(np.float64) if binarize is not None else self.weight.astype(np.float64)
        idx = self.roi_index
        tot = np.bincount(idx, w, len(self))
        tot[tot == 0] = 1
        cy = np.bincount(idx, w * self.y, len(self)) / tot
        cx = np.bincount(idx, w * self.x, len(self)) / tot
        return np.stack([cy, cx], 1)

    def csr(self, binarize=0.0):
        """(N, Ly*Lx) binary sparse matrix of the masks (pixels with weight > binarize * ROI max)."""
        keep = self.binary(binarize)
        rows = self.roi_index[keep]
        cols = self.y[keep].astype(np.int64) * self.shape[1] + self.x[keep]
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(self), self.shape[0] * self.shape[1]))
        m.data[:] = 1  # duplicate pixels count once
        return m

    def subset(self, index):
        """A new RoiSet with only the ROIs in ``index`` (per-ROI fields follow; images are shared)."""
        index = np.asarray(index, np.int64)
        sel = np.concatenate([np.arange(self.indptr[i], self.indptr[i + 1]) for i in index]) if len(index) else np.zeros(0, np.int64)
        take = lambda a: None if a is None else np.asarray(a)[index]
        return RoiSet(self.shape, np.concatenate([[0], np.cumsum(self.npix[index])]), self.y[sel], self.x[sel],
                      self.weight[sel], images=self.images, traces=take(self.traces), labels=take(self.labels),
                      pipeline_accepted=take(self.pipeline_accepted),
                      features={k: np.asarray(v)[index] for k, v in self.features.items()}, source=self.source,
                      pipeline=self.pipeline, path=self.path, recording=self.recording, origin=dict(self.origin),
                      diameter=self.diameter, diameter_source=self.diameter_source, frame_source=self.frame_source,
                      human=take(self.human))


def roi_fingerprint(roiset):
    """sha256 (hex) of the ROIs' geometry: the frame shape, then every ROI's pixels (row, column, weight) in ROI
    order, from the flat layout (``indptr``, ``y``, ``x``, ``weight``; fixed little-endian dtypes). Every format
    builds its RoiSet the same way each time (Suite2p: stat.npy's ypix/xpix/lam in order; CaImAn: A's columns with
    zeros dropped and indices sorted; NWB: the table's masks), so a pipeline re-run that moves, reorders or
    reweights ROIs changes it even when the ROI count stays the same. Records name it ``roi_sha256``."""
    h = hashlib.sha256(b"roicurate-roi-geometry-v1")
    h.update(np.asarray(roiset.shape, "<i8").tobytes())
    for a, dt in ((roiset.indptr, "<i8"), (roiset.y, "<i4"), (roiset.x, "<i4"), (roiset.weight, "<f4")):
        h.update(np.ascontiguousarray(np.asarray(a).astype(dt, copy=False)).tobytes())
    return h.hexdigest()


def iou_matrix(a, b, binarize_a=0.0, binarize_b=0.0):
    """Dense IoU between the binarised masks of two RoiSets over the same frame."""
    if a.shape != b.shape:
        raise RoicurateError(f"frame sizes differ: {a.shape} vs {b.shape}")
    A, B = a.csr(binarize_a), b.csr(binarize_b)
    inter = (A @ B.T).toarray().astype(np.float64)
    na, nb = np.asarray(A.sum(1)).ravel(), np.asarray(B.sum(1)).ravel()
    union = na[:, None] + nb[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_labels(iou, threshold=0.5, truth_is_cell=None):
    """One-to-one Hungarian assignment on IoU; label 1 iff the ROI's partner has IoU >= threshold (and is a cell).
    Returns (labels int (N,), assigned truth index or -1, assigned IoU)."""
    n, m = iou.shape
    assigned = np.full(n, -1, np.int64)
    aiou = np.zeros(n)
    if n and m:
        from scipy.optimize import linear_sum_assignment
        r, c = linear_sum_assignment(iou, maximize=True)
        keep = iou[r, c] > 0
        assigned[r[keep]], aiou[r[keep]] = c[keep], iou[r[keep], c[keep]]
    is_cell = np.ones(m, bool) if truth_is_cell is None else np.asarray(truth_is_cell, bool)
    ok = assigned >= 0
    lab = ok & (aiou >= threshold)
    lab[ok] &= is_cell[assigned[ok]]
    return lab.astype(np.int64), assigned, aiou
