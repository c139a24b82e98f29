"""Centred crops of every ROI, built for all ROIs at once with array operations.

The target ROI sits in the centre; every other ROI is absent from the mask channel; windows past the
frame edge are zero-padded. Channels: ``mask`` (the ROI's weights, max 1, or binarised) and any summary
image the RoiSet carries (``mean``, ``mean_enhanced``, ``max``, ``corr`` ...), each window standardised. An image
the RoiSet lacks comes from the plugin that registers it (``register_images``, e.g. ``unet``: a U-Net's neuron
probability map), computed once per RoiSet and kept in ``roiset.images`` (``summary_image``).

``scale="reference"`` resamples every channel so that the recording's reference cell diameter (roicurate/scale.py)
spans ``scaled_diameter`` crop pixels: a window of ``size / zoom`` recording pixels is cut and brought to
``size x size`` (bilinear when magnifying, the mean over each output pixel when shrinking). ``optional_images``: an
image channel the recording lacks is left at zero (the model was trained with that channel dropped at times).

``style="caiman"`` instead reproduces CaImAn's own CNN patches (``evaluate_components_CNN``), mask only: a
``2*half`` window (``half = min(4*gSig+1, size)`` per axis) at the centre of mass clipped to
``[half, dims-half]`` and truncated, divided by its L2 norm, then resized bilinearly to ``size x size``
exactly as ``cv2.resize`` (INTER_LINEAR) does.
"""
from dataclasses import asdict, dataclass

import numpy as np

from roicurate.common import RoicurateError


@dataclass(frozen=True)
class CropSpec:
    size: int = 64
    channels: tuple = ("mask",)
    binarize: float | None = None   # mask = weight > binarize * ROI max; None keeps weights (scaled to max 1)
    center: str = "centroid"        # weighted centre of mass, rounded to the nearest pixel
    image_norm: str = "zscore"      # image windows: "zscore" (zero mean, unit variance) or "none"
    style: str = "centered"         # "centered" (above) or "caiman" (CaImAn's CNN patches, mask channel only)
    gsig: int | tuple | None = None  # "caiman" style: gSig (int or (gy, gx)); None = roiset.origin["gSig"], else 4
    scale: str = "native"           # "native": recording pixels; "reference": resampled so that the recording's
                                    # reference cell diameter (roicurate/scale.py) spans ``scaled_diameter`` px
    scaled_diameter: float = 12.0
    optional_images: bool = False   # an image channel the recording lacks is zeros (trained with channel dropout)

    def to_dict(self):
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["channels"] = tuple(d.get("channels", ("mask",)))
        if isinstance(d.get("gsig"), list):
            d["gsig"] = tuple(d["gsig"])
        return cls(**d)


@dataclass(frozen=True)
class DerivedImage:
    """What ``register_images`` registers: an image computed from a recording rather than read from its files.
    ``compute(roiset)`` returns a (Ly, Lx) frame in the RoiSet's coordinates (usually from ``roiset.images``)."""

    name: str
    compute: object
    description: str = ""


def summary_image(roiset, name):
    """The full-frame image ``name`` of ``roiset``: the one it carries (saved by its pipeline, or added by the user),
    else the registered provider's, computed once and kept in ``roiset.images[name]`` (every later batch, report or
    subset of the RoiSet reuses it). A one-line error when neither exists or the provider cannot make it here."""
    img = roiset.images.get(name)
    if img is not None:
        return img
    from roicurate.plugins import image_providers
    where = roiset.path or "input"
    providers = image_providers()
    if name not in providers:
        raise RoicurateError(f"{where}: the model needs the '{name}' image, which this recording does not have "
                             f"(it has: {', '.join(roiset.images) or 'none'}; plugins compute: "
                             f"{', '.join(providers) or 'none'})")
    try:
        img = np.asarray(providers[name].compute(roiset), np.float32)
    except RoicurateError as e:
        raise RoicurateError(f"{where}: cannot compute the '{name}' image: {e}") from None
    except KeyError as e:      # the provider looked up an image this recording lacks
        raise RoicurateError(f"{where}: cannot compute the '{name}' image: it needs the {e} image, which this "
                             f"recording does not have (it has: {', '.join(roiset.images) or 'none'})") from None
    if img.shape != tuple(roiset.shape):
        raise RoicurateError(f"{where}: the '{name}' image is {img.shape}, the field of view {tuple(roiset.shape)}")
    roiset.images[name] = img
    return img


def _centroids(pixels, n):
    """(n, 2) weighted centre of mass of the gathered ROIs."""
    k, y, x, w = pixels
    tot = np.maximum(np.bincount(k, w, n), 1e-12)
    return np.stack([np.bincount(k, w * y, n) / tot, np.bincount(k, w * x, n) / tot], 1)


def make_crops(roiset, spec, index=None, out=None, scale_factor=1.0):
    """float32 (n, C, S, S) crops for the ROIs in ``index`` (all when None). ``scale_factor`` multiplies the
    reference diameter of a ``scale="reference"`` spec (training's scale jitter)."""
    index = np.arange(len(roiset)) if index is None else np.asarray(index, np.int64)
    S = spec.size
    crops = out if out is not None else np.zeros((len(index), len(spec.channels), S, S), np.float32)
    crops[:] = 0
    if not len(index):
        return crops
    if spec.style == "caiman":
        return _caiman_patches(roiset, spec, index, crops)
    if spec.style != "centered":
        raise RoicurateError(f"unknown crop style '{spec.style}' (known: centered, caiman)")
    if spec.scale not in ("native", "reference"):
        raise RoicurateError(f"unknown crop scale '{spec.scale}' (known: native, reference)")
    from roicurate.scale import zoom
    z = zoom(roiset, spec.scaled_diameter, scale_factor) if spec.scale == "reference" else 1.0
    n = max(4, int(round(S / z)))            # the window in recording pixels that becomes the S x S crop
    native = crops if n == S else np.zeros((len(index), len(spec.channels), n, n), np.float32)
    pixels = _gather(roiset, index, spec.binarize)
    c = np.rint(_centroids(pixels, len(index))).astype(np.int64)
    images = []
    for ch, name in enumerate(spec.channels):
        if name == "mask":
            _mask_channel(pixels, c, native[:, ch], n)
        elif spec.optional_images and not has_image(roiset, name):
            continue                          # zeros: the model learnt to do without (channel dropout)
        else:
            native[:, ch] = _windows(np.asarray(summary_image(roiset, name), np.float32), c, n)
            images.append(ch)
    if n != S:
        r = resample_matrix(n, S).astype(np.float32)
        crops[:] = r @ (native @ r.T)                    # rows, then columns: two batched matrix products
    if spec.image_norm == "zscore":
        for ch in images:
            w = crops[:, ch]
            mu = w.mean((1, 2), keepdims=True)
            sd = w.std((1, 2), keepdims=True)
            crops[:, ch] = (w - mu) / np.maximum(sd, 1e-6)
    return crops


def has_image(roiset, name):
    """Whether ``roiset`` carries the image ``name`` or a plugin can compute it."""
    from roicurate.plugins import image_providers
    return roiset.images.get(name) is not None or name in image_providers()


def _gather(roiset, index, binarize):
    """The stored pixels of the selected ROIs, gathered once per batch (a batch must not cost O(all ROIs)):
    (output row of each pixel, y, x, weights scaled to max 1 — or 0/1 when ``binarize`` is set)."""
    npix = roiset.npix[index]
    starts = np.cumsum(npix) - npix
    k = np.repeat(np.arange(len(index)), npix)
    pix = np.arange(npix.sum()) + np.repeat(roiset.indptr[index] - starts, npix)
    w = roiset.weight[pix]
    roimax = np.zeros(len(index), np.float32)
    if len(w):
        roimax[npix > 0] = np.maximum.reduceat(w, starts[npix > 0])   # each ROI's pixels are one run of w
    if binarize is not None:
        w = (w > binarize * roimax[k]).astype(np.float32)
    else:
        w = w / np.maximum(roimax[k], 1e-12)
    return k, roiset.y[pix], roiset.x[pix], w


def _mask_channel(pixels, c, out, S):
    """Scatter each gathered ROI's pixels around its centre: one fancy-indexing assignment for all ROIs."""
    k, y, x, w = pixels
    h = S // 2
    yy = y - c[k, 0] + h
    xx = x - c[k, 1] + h
    ok = (yy >= 0) & (yy < S) & (xx >= 0) & (xx < S)
    out[k[ok], yy[ok], xx[ok]] = w[ok]


def _windows(img, c, S):
    """S x S windows of ``img`` centred on ``c`` (n, 2), zero outside the frame."""
    h = S // 2
    pad = np.pad(img, h)
    oy = c[:, 0][:, None, None] + np.arange(S)[None, :, None]
    ox = c[:, 1][:, None, None] + np.arange(S)[None, None, :]
    return pad[oy, ox]


def _caiman_patches(roiset, spec, index, out):
    """CaImAn's CNN input for each ROI (see the module docstring); ``binarize`` None reproduces it exactly."""
    if tuple(spec.channels) != ("mask",):
        raise RoicurateError(f"crop style 'caiman' has only the mask channel, not {', '.join(spec.channels)}")
    g = spec.gsig if spec.gsig is not None else roiset.origin.get("gSig")
    g = np.broadcast_to(np.asarray(4 if g is None else g, np.int64).ravel(), (2,))
    half = np.minimum(4 * g + 1, spec.size)
    dims = np.array(roiset.shape)
    k, y, x, w = pixels = _gather(roiset, index, spec.binarize)   # scaling to max 1 is undone by the L2 norm below
    com = _centroids(pixels, len(index))        # weighted centre of mass, like scipy.ndimage's
    com = np.minimum(np.maximum(com, half), dims - half).astype(np.int64)   # frames < 2*half: zero-padded here
    w = w.astype(np.float64)
    yy = y - com[k, 0] + half[0]
    xx = x - com[k, 1] + half[1]
    ok = (yy >= 0) & (yy < 2 * half[0]) & (xx >= 0) & (xx < 2 * half[1])
    patch = np.zeros((len(index), 2 * half[0], 2 * half[1]))
    patch[k[ok], yy[ok], xx[ok]] = w[ok]
    norm = np.sqrt((patch ** 2).sum((1, 2), keepdims=True))
    patch /= np.where(norm > 0, norm, 1)
    ry, rx = linear_resize_matrix(2 * half[0], spec.size), linear_resize_matrix(2 * half[1], spec.size)
    out[:, 0] = np.einsum("ij,njk,lk->nil", ry, patch, rx)
    return out


def resample_matrix(n_in, n_out):
    """(n_out, n_in) matrix that resamples one axis: bilinear when magnifying (``linear_resize_matrix``), the
    mean over each output pixel's footprint when shrinking (no aliasing of thin processes)."""
    if n_in <= n_out:
        return linear_resize_matrix(n_in, n_out)
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, left + 1) - np.maximum(lo, left), 0, None)
    return overlap / (n_in / n_out)


def linear_resize_matrix(n_in, n_out):
    """(n_out, n_in) matrix of cv2.resize's INTER_LINEAR along one axis: source position
    ``(d + 0.5) * n_in / n_out - 0.5``, clamped to the first and last pixel."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.int64)
    f = src - i0
    low, high = i0 < 0, i0 >= n_in - 1
    i0[low], f[low] = 0, 0.0
    i0[high], f[high] = n_in - 1, 0.0
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), i0] += 1 - f
    i1 = np.minimum(i0 + 1, n_in - 1)
    m[np.arange(n_out), i1] += f
    return m


def dihedral(x, k, inverse=False):
    """The k-th (0-7) of the eight rotations/flips of (N, C, H, W) torch tensors: rotate by k % 4 quarter turns, then
    flip left-right for k >= 4; ``inverse`` undoes it. Training augments crops with it; the U-Net's test-time
    augmentation averages over all eight."""
    import torch
    if inverse:
        x = torch.flip(x, (3,)) if k >= 4 else x
        return torch.rot90(x, -(k % 4), (2, 3))
    x = torch.rot90(x, k % 4, (2, 3))
    return torch.flip(x, (3,)) if k >= 4 else x
