"""Suite2p's files, read and checked: the plane folders of a suite2p/ folder, stat.npy (its ROIs' pixels and
per-ROI numbers), iscell.npy, redcell.npy, ops (0.14 / 1.x layouts) and its summary images, F.npy.

Every way a file can be missing or broken becomes one RoicurateError line naming it. Object arrays (stat.npy,
ops.npy) are read with the plain-data unpickler (roicurate.plaindata): a file someone shared never runs code here.
What the Suite2p GUI expects of iscell.npy: see docs/formats.md.
"""
import io
import re
from pathlib import Path

import numpy as np

from roicurate import RoicurateError
from roicurate.plaindata import RefusedPickle, load_npy, npy_shape
from roicurate.sources import exception_line

ISCELL, BACKUP, RECORD = "iscell.npy", "iscell_suite2p.npy", "roicurate.json"
CLASSES = "roicurate_classes.npy"
TYPES, REDCELL, RED_BACKUP = "roicurate_types.npy", "redcell.npy", "redcell_suite2p.npy"
OPS_1X = ("db.npy", "settings.npy", "reg_outputs.npy", "detect_outputs.npy")   # merged in this order, like Suite2p
FULL_IMAGES = {"meanImg": "mean", "meanImgE": "mean_enhanced", "meanImg_chan2": "mean_chan2"}
CROPPED_IMAGES = {"max_proj": "max", "Vcorr": "corr",                         # only over yrange x xrange
                  "meanImg_chan2_corrected": "mean_chan2_corrected"}           # (this one: either)


def natural_key(name):
    """plane2 < plane10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def plane_folders(suite2p_dir):
    dirs = [p for p in Path(suite2p_dir).iterdir() if p.is_dir() and p.name.startswith("plane")]
    return sorted(dirs, key=lambda p: natural_key(p.name))


def is_plane(path):
    return (path / "stat.npy").is_file() or (path / ISCELL).is_file()


def is_suite2p_dir(path):
    return path.is_dir() and bool(plane_folders(path))


def load_file(path, pickle=False, data=None):
    """np.load that turns every way a file can be missing or broken into one RoicurateError line. Object arrays
    (``pickle``) go through the plain-data unpickler: a file someone shared never runs code here. ``data``: the
    file's bytes, already read once (the array is parsed from them, not read again)."""
    if data is None and not path.is_file():
        raise RoicurateError(f"{path}: file is missing")
    try:
        if data is not None:
            return np.load(io.BytesIO(data), allow_pickle=False)
        return load_npy(path) if pickle else np.load(path, allow_pickle=False)
    except RefusedPickle:
        raise
    except Exception as e:  # truncated or garbage files raise ValueError, EOFError, UnpicklingError, OSError ...
        raise RoicurateError(f"{path}: not a readable .npy file ({exception_line(e)})") from None


def _load_dict(path):
    a = load_file(path, pickle=True)
    if not (isinstance(a, np.ndarray) and a.dtype == object and a.shape == () and isinstance(a.item(), dict)):
        raise RoicurateError(f"{path}: expected a pickled dict (Suite2p ops/settings), got {describe(a)}")
    return a.item()


def describe(a):
    return f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def load_iscell(path, n=None, data=None):
    """iscell.npy as float64 (N, 2), checked the way the Suite2p GUI would fail on it (``data``: its bytes, read
    once by the caller)."""
    a = load_file(path, data=data)
    if n == 0 and a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "fiu":
        raise RoicurateError(f"{path}: expected a float (N, 2) array [is_cell, probability], got {describe(a)}")
    if not np.isfinite(a).all():
        raise RoicurateError(f"{path}: contains NaN or infinite values")
    if n is not None and len(a) != n:
        raise RoicurateError(f"{path}: has {len(a)} rows but stat.npy has {n} ROIs")
    return a.astype(np.float64)


def load_redcell(path, n):
    """redcell.npy as Suite2p writes it: a finite (N, 2) array [is_red, probability]."""
    a = load_file(path)
    if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "fiub" or len(a) != n or not np.isfinite(a).all():
        raise RoicurateError(f"{path}: expected a finite (N, 2) array [is_red, probability] for the {n} ROIs, "
                             f"got {describe(a)}")
    return a


def load_ops(plane):
    """Suite2p's ops: ops.npy (0.14 flat or 1.x nested), else 1.x's db + settings + reg/detect outputs."""
    if (plane / "ops.npy").exists():
        where, ops = plane / "ops.npy", _load_dict(plane / "ops.npy")
    elif (plane / "db.npy").exists():  # Suite2p 1.x without save_ops_orig: Ly/Lx live in db.npy
        where, ops = plane / "db.npy", {}
        for f in OPS_1X:
            if (plane / f).exists():
                ops.update(_load_dict(plane / f))
    else:
        raise RoicurateError(f"{plane / 'ops.npy'}: file is missing (and no Suite2p 1.x db.npy either)")
    try:
        Ly, Lx = int(ops["Ly"]), int(ops["Lx"])
    except (KeyError, TypeError, ValueError):
        raise RoicurateError(f"{where}: has no valid Ly/Lx (frame size)") from None
    if Ly <= 0 or Lx <= 0:
        raise RoicurateError(f"{where}: invalid frame size {Ly}x{Lx}")
    return ops, (Ly, Lx)


def _range(ops, key, L):
    r = ops.get(key)
    try:
        a, b = int(r[0]), int(r[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return (a, b) if 0 <= a < b <= L else None


def summary_images(ops, shape):
    """Summary images in full-frame coordinates; the cropped ones are pasted into zeros like the Suite2p GUI."""
    Ly, Lx = shape
    out = {}
    for key, name in FULL_IMAGES.items():
        img = ops.get(key)
        if isinstance(img, np.ndarray) and img.shape == shape and img.dtype.kind in "fiu":
            out[name] = img
    yr, xr = _range(ops, "yrange", Ly), _range(ops, "xrange", Lx)
    for key, name in CROPPED_IMAGES.items():
        img = ops.get(key)
        if not (isinstance(img, np.ndarray) and img.ndim == 2 and img.dtype.kind in "fiu"):
            continue
        if yr and xr and img.shape == (yr[1] - yr[0], xr[1] - xr[0]):
            full = np.zeros(shape, np.result_type(img.dtype, np.float32))
            full[yr[0]:yr[1], xr[0]:xr[1]] = img
            out[name] = full
        elif img.shape == shape:
            out[name] = img
    return out


def diameter_setting(ops):
    """The cell diameter the user gave Suite2p (mean of [dy, dx]), or None where it is a default (0 in 0.x, 12 in
    1.x: it says nothing about the recording) or not a positive number."""
    try:
        d = np.ravel(np.asarray(ops.get("diameter"), np.float64))
    except (TypeError, ValueError):
        return None
    if not 1 <= len(d) <= 2 or not np.isfinite(d).all() or (d <= 0).any() or (d == 12).all():
        return None
    return float(d.mean())


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def stat_features(stat):
    """Every per-ROI numeric scalar in stat (skew, compact, npix_norm ...), NaN where an ROI lacks it."""
    keys = {}
    for d in stat:
        for k, v in d.items():
            if _is_number(v):
                keys.setdefault(k, None)
    feats = {}
    for k in keys:
        feats[k] = np.array([float(d[k]) if _is_number(d.get(k)) else np.nan for d in stat], np.float64)
    return feats


def roi_pixels(stat, where, shape):
    """Per-ROI pixel arrays, range-checked in 64 bits before RoiSet casts them to int32 (ypix + 2**32 must not
    wrap back into the frame)."""
    Ly, Lx = shape
    ys, xs, ws = [], [], []
    for i, d in enumerate(stat):
        if not isinstance(d, dict) or not all(k in d for k in ("ypix", "xpix", "lam")):
            raise RoicurateError(f"{where}: ROI {i} is not a dict with ypix/xpix/lam (not a Suite2p stat.npy?)")
        y, x, w = (np.asarray(d[k]).ravel() for k in ("ypix", "xpix", "lam"))
        if not len(y) == len(x) == len(w):
            raise RoicurateError(f"{where}: ROI {i} has ypix/xpix/lam of different lengths")
        if len(y) and (y.dtype.kind not in "iu" or x.dtype.kind not in "iu" or w.dtype.kind not in "fiub"):
            raise RoicurateError(f"{where}: ROI {i} has non-integer ypix/xpix or non-numeric lam")
        if len(y) and not (_within(y, Ly) and _within(x, Lx)):
            raise RoicurateError(f"{where}: ROI {i} has pixels outside the {Ly}x{Lx} frame")
        ys.append(y), xs.append(x), ws.append(w)
    return ys, xs, ws


def _within(a, n):
    """0 <= a < n for integer arrays of any width (uint64 included), compared without wrapping."""
    if a.dtype.kind == "u":
        return int(a.max()) < n
    a = a.astype(np.int64, copy=False)
    return int(a.min()) >= 0 and int(a.max()) < n



def load_stat(stat_path):
    """stat.npy, checked to be an array of ROI dicts (read with the plain-data unpickler)."""
    stat = load_file(stat_path, pickle=True)
    if not isinstance(stat, np.ndarray) or stat.ndim != 1 or (len(stat) and stat.dtype != object):
        raise RoicurateError(f"{stat_path}: expected an array of ROI dicts, got {describe(stat)}")
    return stat


def plane_fingerprint(folder):
    """``roicurate.rois.roi_fingerprint`` of the ROIs in a plane's (or combined/'s) stat.npy as they are now:
    ypix / xpix / lam of every ROI in order, in the frame of its ops. What a record's ``roi_sha256`` is checked
    against, so a Suite2p re-run with the same ROI count is told from a hand edit."""
    from roicurate.rois import RoiSet, roi_fingerprint
    folder = Path(folder)
    stat = load_stat(folder / "stat.npy")
    shape = load_ops(folder)[1]
    ys, xs, ws = roi_pixels(stat, folder / "stat.npy", shape)
    return roi_fingerprint(RoiSet.from_pixels(shape, ys, xs, ws))


def roi_count(folder):
    """The ROI count of stat.npy, from its header (nothing unpickled)."""
    path = Path(folder) / "stat.npy"
    if not path.is_file():
        raise RoicurateError(f"{path}: file is missing")
    try:
        shape = npy_shape(path)
    except Exception as e:
        raise RoicurateError(f"{path}: not a readable .npy file ({exception_line(e)})") from None
    if len(shape) != 1:
        raise RoicurateError(f"{path}: expected an array of ROI dicts, got shape {shape}")
    return shape[0]


def load_traces(plane, n):
    """F.npy memory-mapped (N x T), or None where the plane has none."""
    path = plane / "F.npy"
    if not path.exists():
        return None
    try:
        F = np.load(path, mmap_mode="r")
    except Exception as e:
        raise RoicurateError(f"{path}: not a readable .npy file ({exception_line(e)})") from None
    if F.ndim != 2 or F.shape[0] != n:
        raise RoicurateError(f"{path}: shape {F.shape} does not match the {n} ROIs of stat.npy")
    return F


def expand_units(path):
    """The plane folders ``path`` stands for: a plane, every plane of a suite2p/ folder, or of the suite2p/ in a
    session folder; combined/ is refused (it is rebuilt from the planes)."""
    path = Path(path)
    if path.name == "combined":
        raise RoicurateError(f"{path}: combined/ is rebuilt from the planes; pass the suite2p/ folder "
                             f"({path.parent}) or a plane folder instead")
    if is_plane(path):
        return [path]
    if not is_suite2p_dir(path) and is_suite2p_dir(path / "suite2p"):
        return plane_folders(path / "suite2p")         # a session folder: the suite2p/ inside it
    return plane_folders(path)
