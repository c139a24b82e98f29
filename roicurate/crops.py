"""Centred crops of every ROI, built for all ROIs at once with array operations.

The target ROI sits in the centre; every other ROI is absent from the mask channel; windows past the
frame edge are zero-padded. Channels: ``mask`` (the ROI's weights, max 1, or binarised) and any summary
image the RoiSet carries (``mean``, ``mean_enhanced``, ``max``, ``corr`` ...), each window standardised.
"""
from dataclasses import asdict, dataclass

import numpy as np

from roicurate import RoicurateError


@dataclass(frozen=True)
class CropSpec:
    size: int = 64
    channels: tuple = ("mask",)
    binarize: float | None = None   # mask = weight > binarize * ROI max; None keeps weights (scaled to max 1)
    center: str = "centroid"        # weighted centre of mass, rounded to the nearest pixel
    image_norm: str = "zscore"      # image windows: "zscore" (zero mean, unit variance) or "none"

    def to_dict(self):
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["channels"] = tuple(d.get("channels", ("mask",)))
        return cls(**d)


def centers(roiset, spec):
    return np.rint(roiset.centroids(spec.binarize)).astype(np.int64)


def make_crops(roiset, spec, index=None, out=None):
    """float32 (n, C, S, S) crops for the ROIs in ``index`` (all when None)."""
    index = np.arange(len(roiset)) if index is None else np.asarray(index, np.int64)
    S, h = spec.size, spec.size // 2
    crops = out if out is not None else np.zeros((len(index), len(spec.channels), S, S), np.float32)
    crops[:] = 0
    if not len(index):
        return crops
    c = centers(roiset, spec)[index]
    for ch, name in enumerate(spec.channels):
        if name == "mask":
            _mask_channel(roiset, spec, index, c, crops[:, ch])
        else:
            img = roiset.images.get(name)
            if img is None:
                raise RoicurateError(f"{roiset.origin.get('path', 'input')}: the model needs the '{name}' image, "
                                     f"which this recording does not have (it has: {', '.join(roiset.images) or 'none'})")
            crops[:, ch] = _windows(np.asarray(img, np.float32), c, S)
            if spec.image_norm == "zscore":
                w = crops[:, ch]
                mu = w.mean((1, 2), keepdims=True)
                sd = w.std((1, 2), keepdims=True)
                crops[:, ch] = (w - mu) / np.maximum(sd, 1e-6)
    return crops


def _mask_channel(roiset, spec, index, c, out):
    """Scatter each selected ROI's pixels around its centre: one fancy-indexing assignment for all ROIs."""
    npix = roiset.npix[index]
    starts = roiset.indptr[index]
    k = np.repeat(np.arange(len(index)), npix)                       # output row of every pixel
    pix = np.arange(npix.sum()) - np.repeat(np.cumsum(npix) - npix, npix) + np.repeat(starts, npix)
    w = roiset.weight[pix]
    roimax = np.zeros(len(index), np.float32)
    np.maximum.at(roimax, k, w)
    if spec.binarize is not None:
        w = (w > spec.binarize * roimax[k]).astype(np.float32)
    else:
        w = w / np.maximum(roimax[k], 1e-12)
    S, h = spec.size, spec.size // 2
    yy = roiset.y[pix] - c[k, 0] + h
    xx = roiset.x[pix] - c[k, 1] + h
    ok = (yy >= 0) & (yy < S) & (xx >= 0) & (xx < S)
    out[k[ok], yy[ok], xx[ok]] = w[ok]


def _windows(img, c, S):
    """S x S windows of ``img`` centred on ``c`` (n, 2), zero outside the frame."""
    h = S // 2
    pad = np.pad(img, h)
    oy = c[:, 0][:, None, None] + np.arange(S)[None, :, None]
    ox = c[:, 1][:, None, None] + np.arange(S)[None, None, :]
    return pad[oy, ox]
