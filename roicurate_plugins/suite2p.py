"""Suite2p source: reads a plane folder (stat.npy + iscell.npy + ops) and writes the verdict into iscell.npy.

What the Suite2p GUI and pipeline expect (see FACTS-suite2p.md): iscell.npy is float64 (N, 2) =
[accepted 1.0/0.0, probability]; combined/iscell.npy is the concatenation of the planes' iscell.npy in
natural plane order. We keep the pipeline's own iscell.npy once as iscell_suite2p.npy and record what we
wrote (with its sha256) in roicurate.json, so a later run notices hand edits made in the GUI. A model with more
than two classes also gets its per-class probabilities written to roicurate_classes.npy (float64 (N, K), the
class names in roicurate.json); iscell's probability column stays that of the positive class.
Suite2p itself is never imported.
"""
import datetime
import hashlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import roicurate
from roicurate import RoicurateError
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.rois import RoiSet
from roicurate.scale import set_diameter
from roicurate.plaindata import RefusedPickle, load_npy, npy_shape
from roicurate.safeio import (NothingToRevert, check_free_space, check_replaceable, clean_stale_temps,
                              free_name, pause_after_check, sha256_bytes, unit)
from roicurate.sources import Source, check_dir_writable

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


def _planes(suite2p_dir):
    dirs = [p for p in Path(suite2p_dir).iterdir() if p.is_dir() and p.name.startswith("plane")]
    return sorted(dirs, key=lambda p: natural_key(p.name))


def _is_plane(path):
    return (path / "stat.npy").is_file() or (path / ISCELL).is_file()


def _is_suite2p_dir(path):
    return path.is_dir() and bool(_planes(path))


def _load(path, pickle=False):
    """np.load that turns every way a file can be missing or broken into one RoicurateError line. Object arrays
    (``pickle``) go through the plain-data unpickler: a file someone shared never runs code here."""
    if not path.is_file():
        raise RoicurateError(f"{path}: file is missing")
    try:
        return load_npy(path) if pickle else np.load(path, allow_pickle=False)
    except RefusedPickle:
        raise
    except Exception as e:  # truncated or garbage files raise ValueError, EOFError, UnpicklingError, OSError ...
        raise RoicurateError(f"{path}: not a readable .npy file ({_reason(e)})") from None


def _reason(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _load_dict(path):
    a = _load(path, pickle=True)
    if not (isinstance(a, np.ndarray) and a.dtype == object and a.shape == () and isinstance(a.item(), dict)):
        raise RoicurateError(f"{path}: expected a pickled dict (Suite2p ops/settings), got {_describe(a)}")
    return a.item()


def _describe(a):
    return f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def _load_iscell(path, n=None):
    """iscell.npy as float64 (N, 2), checked the way the Suite2p GUI would fail on it."""
    a = _load(path)
    if n == 0 and a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "fiu":
        raise RoicurateError(f"{path}: expected a float (N, 2) array [is_cell, probability], got {_describe(a)}")
    if not np.isfinite(a).all():
        raise RoicurateError(f"{path}: contains NaN or infinite values")
    if n is not None and len(a) != n:
        raise RoicurateError(f"{path}: has {len(a)} rows but stat.npy has {n} ROIs")
    return a.astype(np.float64)


def _load_redcell(path, n):
    """redcell.npy as Suite2p writes it: a finite (N, 2) array [is_red, probability]."""
    a = _load(path)
    if a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "fiub" or len(a) != n or not np.isfinite(a).all():
        raise RoicurateError(f"{path}: expected a finite (N, 2) array [is_red, probability] for the {n} ROIs, "
                             f"got {_describe(a)}")
    return a


def _load_ops(plane):
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


def _images(ops, shape):
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


def _diameter_setting(ops):
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


def _features(stat):
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


def _pixels(stat, where, shape):
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


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _json_bytes(record):
    return (json.dumps(record, indent=2, default=str) + "\n").encode()


def _parse_iscell(data):
    return np.load(io.BytesIO(data), allow_pickle=False)


def _roi_count(folder):
    """The ROI count of stat.npy, from its header (nothing unpickled)."""
    path = Path(folder) / "stat.npy"
    if not path.is_file():
        raise RoicurateError(f"{path}: file is missing")
    try:
        shape = npy_shape(path)
    except Exception as e:
        raise RoicurateError(f"{path}: not a readable .npy file ({_reason(e)})") from None
    if len(shape) != 1:
        raise RoicurateError(f"{path}: expected an array of ROI dicts, got shape {shape}")
    return shape[0]


def _record(folder):
    """roicurate.json as a dict ({} when there is none); an unreadable one is an unknown state."""
    path = Path(folder) / RECORD
    if not path.exists():
        return {}
    try:
        rec = json.loads(path.read_text())
    except (ValueError, OSError, UnicodeDecodeError):
        rec = None
    if not isinstance(rec, dict):
        raise RoicurateError(f"{path}: unreadable, so roicurate cannot tell which file is Suite2p's original; "
                             f"nothing written (restore it, or move it and {BACKUP} away)")
    return rec


def _state(folder, n):
    """What is on disk in a plane (or combined/), verified before anything is written or restored.

    Returns ``record``, ``current`` (iscell.npy's bytes), ``sha``, ``backup`` (its bytes, or None),
    ``original_sha`` (the pipeline original's sha256, when known) and ``edited`` (iscell.npy holds neither what
    roicurate wrote, nor what it replaced, nor the original: hand edits). Raises one line for a backup that
    fails to load, has another ROI count than stat.npy, differs from its recorded sha256, or has no record."""
    folder = Path(folder)
    backup_path = folder / BACKUP
    _load_iscell(folder / ISCELL, n)
    current = (folder / ISCELL).read_bytes()
    rec = _record(folder)
    written, original = rec.get("written_sha256"), rec.get("backup_sha256")
    sha = sha256_bytes(current)
    backup = None
    if backup_path.exists():
        if not written:
            raise RoicurateError(f"{backup_path}: roicurate's backup, but {RECORD} has no record of it (deleted?), so "
                                 f"it is unknown which file is Suite2p's original; nothing written (move {BACKUP} "
                                 f"away if {ISCELL} is Suite2p's own verdict)")
        rows = len(_load_iscell(backup_path))
        backup = backup_path.read_bytes()
        if rows != n:
            raise RoicurateError(f"{backup_path}: roicurate's backup has {rows} rows but stat.npy has {n} ROIs (a "
                                 f"stale backup: Suite2p re-run since?); nothing written (move {BACKUP} and {RECORD} "
                                 f"away to curate the new output)")
        if original and sha256_bytes(backup) != original:
            raise RoicurateError(f"{backup_path}: differs from the sha256 roicurate recorded when it made this backup "
                                 f"(changed or corrupt); nothing written")
        original = original or sha256_bytes(backup)           # a record from before backups were hashed
    elif written:
        if sha != original:
            raise RoicurateError(f"{backup_path}: missing, but {RECORD} says roicurate replaced {ISCELL}, so Suite2p's "
                                 f"original is not here; nothing written (put {BACKUP} back, or delete {RECORD} to "
                                 f"take {ISCELL} as Suite2p's verdict)")
        rec = {k: v for k, v in rec.items() if k == "types"}    # an interrupted revert: the original is in place
        written = None
    edited = bool(written) and sha not in {written, rec.get("prior_sha256"), original}
    return SimpleNamespace(record=rec, current=current, sha=sha, backup=backup, original_sha=original,
                           edited=edited)


def _types_record(plane):
    """roicurate.json's ``types`` entry ({} when there is none): what write_types wrote, kept across iscell runs."""
    try:
        rec = json.loads((Path(plane) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return {"types": rec["types"]} if isinstance(rec, dict) and rec.get("types") else {}


def _red_entry(record):
    """The ``types.redcell`` entry of a roicurate.json record ({} when roicurate wrote no redcell.npy)."""
    return (record.get("types") or {}).get("redcell") or {}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Suite2pSource(Source):
    name = "suite2p"
    description = "a Suite2p plane folder (stat.npy + iscell.npy), a suite2p/ folder or the folder holding it"
    crop = CropSpec(size=64, channels=("mask",), binarize=0.0)
    display_name, default_model, default_arch = "Suite2p", "suite2p-resnet50", "resnet50"
    unit_noun = "plane"

    def detect(self, path):
        path = Path(path)
        return path.is_dir() and (_is_plane(path) or _is_suite2p_dir(path) or _is_suite2p_dir(path / "suite2p"))

    def expand(self, path):
        path = Path(path)
        if path.name == "combined":
            raise RoicurateError(f"{path}: combined/ is rebuilt from the planes; pass the suite2p/ folder "
                                 f"({path.parent}) or a plane folder instead")
        if _is_plane(path):
            return [path]
        if not _is_suite2p_dir(path) and _is_suite2p_dir(path / "suite2p"):
            return _planes(path / "suite2p")         # a session folder: the suite2p/ inside it
        return _planes(path)

    # ---- reading -------------------------------------------------------------------------------------
    def read(self, path):
        plane = Path(path)
        stat_path = plane / "stat.npy"
        stat = _load(stat_path, pickle=True)
        if not isinstance(stat, np.ndarray) or stat.ndim != 1 or (len(stat) and stat.dtype != object):
            raise RoicurateError(f"{stat_path}: expected an array of ROI dicts, got {_describe(stat)}")
        n = len(stat)
        iscell = _load_iscell(plane / ISCELL, n)
        ops, shape = _load_ops(plane)
        ys, xs, ws = _pixels(stat, stat_path, shape)
        features = _features(stat)
        features["suite2p_prob"] = iscell[:, 1].copy()
        red, red_problem = self._red_labels(plane, n)
        features.update(red)
        roiset = RoiSet.from_pixels(
            shape, ys, xs, ws, images=_images(ops, shape), traces=self._traces(plane, n),
            pipeline_accepted=iscell[:, 0] > 0.5, features=features,
            source="suite2p", pipeline="suite2p", path=str(plane),
            origin={"roi_file": str(stat_path), "n": n,
                    **({"redcell_problem": red_problem} if red_problem else {})})
        roiset.validate(stat_path)
        d = _diameter_setting(ops)
        if d:
            set_diameter(roiset, d, "Suite2p diameter setting")
        return roiset

    @staticmethod
    def _traces(plane, n):
        path = plane / "F.npy"
        if not path.exists():
            return None
        try:
            F = np.load(path, mmap_mode="r")
        except Exception as e:
            raise RoicurateError(f"{path}: not a readable .npy file ({_reason(e)})") from None
        if F.ndim != 2 or F.shape[0] != n:
            raise RoicurateError(f"{path}: shape {F.shape} does not match the {n} ROIs of stat.npy")
        return F

    # ---- writing -------------------------------------------------------------------------------------
    def recording(self, path):
        """The planes of one suite2p/ folder are one recording, named by the folder that holds suite2p/."""
        p = Path(path)
        return str(p.parent.parent) if p.name.startswith("plane") and p.parent.name == "suite2p" else str(p)

    def backup_path(self, path):
        """Where ``write`` keeps the plane's original iscell.npy (what ``apply`` tells the user)."""
        return Path(path) / BACKUP

    def recorded(self, path):
        record = Path(path) / RECORD
        if not record.exists():
            return None
        try:
            rec = json.loads(record.read_text())
            model = rec.get("model") or {}
        except (ValueError, OSError, AttributeError):
            raise RoicurateError(f"{record}: unreadable; use --force to overwrite iscell.npy anyway") from None
        if not rec.get("written_sha256"):
            return None                                        # only cell types were written (write_types)
        iscell = Path(path) / ISCELL
        return {"model": model.get("source") or model.get("name"), "sha256": model.get("sha256"),
                "threshold": rec.get("threshold"), "also_accept": rec.get("accepted_classes", [])[1:],
                "date": rec.get("time"),
                "diameter": (lambda d: (d["px"], d["source"]) if isinstance(d, dict) else None)(
                    rec.get("reference_diameter")),
                "intact": bool(rec.get("written_sha256")) and iscell.exists() and _sha256(iscell) == rec["written_sha256"]}

    def original_verdict(self, path, roiset):
        backup = Path(path) / BACKUP
        if backup.exists():
            iscell = _load_iscell(backup, len(roiset))
            return iscell[:, 0] > 0.5, iscell[:, 1]
        return roiset.pipeline_accepted, roiset.features.get("suite2p_prob")

    def check_writable(self, path, force=False):
        """Everything ``write`` needs, checked before anything is written (and again under the lock): iscell.npy,
        the backup (loads, ROI count of stat.npy, recorded sha256), hand edits, replaceable files, combined/."""
        plane = Path(path)
        check_dir_writable(plane)
        clean_stale_temps(plane)
        st = _state(plane, _roi_count(plane))
        if st.edited and not force:
            raise RoicurateError(f"{plane / ISCELL}: changed since roicurate wrote it (edited in the Suite2p GUI?); "
                                 f"use --force to overwrite those edits (they are kept beside it)")
        for name in (ISCELL, RECORD, CLASSES):
            check_replaceable(plane / name)
        combined = plane.parent / "combined"
        if (combined / ISCELL).exists():
            self._combined_rows(plane.parent)
            check_dir_writable(combined)
            cst = _state(combined, _roi_count(combined))
            if cst.edited and not force:
                raise RoicurateError(f"{combined / ISCELL}: changed since roicurate rebuilt it (flips in the Suite2p "
                                     f"GUI's combined view stay there); use --force (they are kept beside it)")
            for name in (ISCELL, RECORD):
                check_replaceable(combined / name)
        return st

    def write(self, path, roiset, curation, force=False, **options):
        """Under the plane's lock: verify (or make) the backup, keep hand edits beside iscell.npy, write the
        record first (it names the backup's sha256 and every state this write passes through), then the backup,
        then iscell.npy. A failure at any step undoes the earlier ones. Returns a note when edits were kept."""
        plane = Path(path)
        n = len(roiset)
        if n == 0:
            return None
        if len(curation.accepted) != n:
            raise RoicurateError(f"{plane}: curation has {len(curation.accepted)} ROIs, the plane has {n}")
        self.check_writable(plane, force=force)
        iscell = np.stack([np.asarray(curation.accepted, bool).astype(np.float64),
                           np.asarray(curation.score, np.float64)], axis=1)
        data = _npy_bytes(iscell)
        multi = len(curation.classes) > 2
        classes = _npy_bytes(np.asarray(curation.probabilities, np.float64)) if multi else b""
        with unit(plane, plane / ISCELL) as tx:
            st = self.check_writable(plane, force=force)          # again: another run may have written meanwhile
            if _roi_count(plane) != n:
                raise RoicurateError(f"{plane / 'stat.npy'}: changed while roicurate ran (now {_roi_count(plane)} "
                                     f"ROIs, {n} read); nothing written")
            check_free_space(plane, 3 * len(data) + len(classes) + (1 << 20), f"{ISCELL}, its backup and the record")
            pause_after_check()
            kept = None
            if st.edited:
                kept = free_name(plane, "iscell_edited", ".npy")
                tx.create(kept, st.current)
            original = _parse_iscell(st.backup if st.backup is not None else st.current)
            tx.write(plane / RECORD, _json_bytes({**_types_record(plane), **{
                "roicurate_version": roicurate.__version__,
                "time": _now(),
                "model": dict(curation.model),
                "threshold": float(curation.threshold),
                "classes": list(curation.classes),
                "positive_class": curation.classes[curation.positive],
                "accepted_classes": curation.accepted_classes,
                "accept_rule": f"P({' + '.join(curation.accepted_classes)}) >= threshold",
                "class_probabilities": CLASSES if multi else None,
                "counts": {"rois": n, "accepted_before": int((original[:, 0] > 0.5).sum()),
                           "accepted_after": int(iscell[:, 0].sum())},
                "inputs": list(curation.inputs),
                "reference_diameter": None if curation.diameter is None else
                                      {"px": round(float(curation.diameter), 3), "source": curation.diameter_source},
                "backup": BACKUP,
                "backup_sha256": st.original_sha or sha256_bytes(st.current),
                "written_sha256": sha256_bytes(data),
                "prior_sha256": st.sha,             # iscell.npy before this write (ours, Suite2p's, or kept edits)
                "edits_kept": st.record.get("edits_kept", []) + ([kept.name] if kept else []),
            }}))
            if st.backup is None:
                tx.create(plane / BACKUP, st.current)
            if multi:
                tx.write(plane / CLASSES, classes)
            else:
                tx.remove(plane / CLASSES)                 # from an earlier run with a K-class model
            tx.write(plane / ISCELL, data)
        return f"{plane / ISCELL}: hand edits kept in {kept}" if kept else None

    # ---- cell types (a model whose card says task "types") -----------------------------------------------
    @staticmethod
    def _red_labels(plane, n):
        """Suite2p's red-cell labels as features ``redcell`` / ``redcell_prob``: redcell.npy, or its original in
        redcell_suite2p.npy while redcell.npy still holds exactly what roicurate wrote (a model's output is not a
        label); and why there are none when the file is broken (cell / not-cell curation does not need it)."""
        path = plane / REDCELL
        red = _red_entry(_types_record(plane))
        if path.exists() and red.get("written_sha256") == _sha256(path):
            path = plane / RED_BACKUP
        if not path.exists():
            return {}, None
        try:
            a = _load_redcell(path, n)
        except RoicurateError as e:
            return {}, str(e)
        return {"redcell": a[:, 0].astype(np.float64), "redcell_prob": a[:, 1].astype(np.float64)}, None

    def check_types_writable(self, path, force=False, redcell=False):
        plane = Path(path)
        check_dir_writable(plane)
        if not redcell or not (plane / REDCELL).exists():
            return
        _load_redcell(plane / REDCELL, len(_load_iscell(plane / ISCELL)))     # a broken original: nothing written
        red = _red_entry(_types_record(plane))
        if not force and red.get("written_sha256") and _sha256(plane / REDCELL) != red["written_sha256"]:
            raise RoicurateError(f"{plane / REDCELL}: changed since roicurate wrote it (edited in the Suite2p GUI?); "
                                 f"use --force to overwrite those edits")

    def write_types(self, path, roiset, curation, force=False, redcell=False):
        """roicurate_types.npy (float64 (N, K), class names in roicurate.json) and, for a two-class model with
        ``redcell``, redcell.npy ``[P(positive) >= threshold, P(positive)]`` in the original's dtype (Suite2p
        1.1.0 writes float32); the original
        redcell.npy is kept once as redcell_suite2p.npy (or, where there was none, revert removes ours)."""
        plane = Path(path)
        n = len(roiset)
        if n == 0:
            return
        if curation.probabilities.shape[0] != n:
            raise RoicurateError(f"{plane}: {curation.probabilities.shape[0]} type probabilities, the plane has {n} ROIs")
        if redcell and len(curation.classes) != 2:
            raise RoicurateError(f"--redcell needs a two-class model (e.g. not_red / red); this one has "
                                 f"{len(curation.classes)} classes")
        with unit(plane, plane / TYPES) as tx:
            self.check_types_writable(plane, force, redcell)
            pause_after_check()
            record = _types_record(plane)
            old = _red_entry(record)
            red = None
            if redcell:
                created = old.get("created", not (plane / REDCELL).exists())
                if not created and not (plane / RED_BACKUP).exists():
                    tx.create(plane / RED_BACKUP, (plane / REDCELL).read_bytes())
                dtype = np.dtype(np.float32) if created else _load(plane / RED_BACKUP).dtype  # Suite2p 1.1.0: float32
                dtype = dtype if dtype.kind == "f" else np.float32
                rows = _npy_bytes(np.stack([curation.accepted, curation.score], 1).astype(dtype))
                tx.write(plane / REDCELL, rows)
                red = {"file": REDCELL, "created": created, "backup": None if created else RED_BACKUP,
                       "rule": f"P({curation.classes[curation.positive]}) >= threshold",
                       "written_sha256": hashlib.sha256(rows).hexdigest()}
            elif old:
                red = old                                      # an earlier run's redcell.npy stays as it is
            tx.write(plane / TYPES, _npy_bytes(np.asarray(curation.probabilities, np.float64)))
            counts = np.bincount(curation.probabilities.argmax(1), minlength=len(curation.classes))
            full = _record(plane)
            full["types"] = {"roicurate_version": roicurate.__version__, "time": _now(), "model": dict(curation.model),
                             "file": TYPES, "classes": list(curation.classes),
                             "positive_class": curation.classes[curation.positive],
                             "threshold": float(curation.threshold),
                             "most_probable": dict(zip(curation.classes, counts.tolist())), "redcell": red}
            tx.write(plane / RECORD, _json_bytes(full))

    def finish(self, paths):
        """Rebuild combined/ of every suite2p/ folder written to (and of one a killed run left out of step)."""
        notes = []
        for parent in sorted({Path(p).parent for p in paths}):
            if (parent / "combined" / ISCELL).exists():
                notes += self._rebuild_combined(parent)
        return "; ".join(notes) or None

    @staticmethod
    def _combined_rows(suite2p_dir):
        """The planes' iscell rows, concatenated, after checking they match combined/stat.npy."""
        combined = suite2p_dir / "combined"
        planes = _planes(suite2p_dir)
        rows = np.concatenate([_load_iscell(p / ISCELL) for p in planes]) if planes else np.zeros((0, 2))
        n = _roi_count(combined)
        if len(rows) != n:
            raise RoicurateError(f"{combined / 'stat.npy'}: has {n} ROIs but the planes' iscell.npy have "
                                 f"{len(rows)} rows in all; re-run Suite2p's combine step")
        return rows

    def _rebuild_combined(self, suite2p_dir):
        """combined/iscell.npy = the planes' iscell.npy concatenated, as Suite2p does, under combined/'s lock, with
        its original kept once; flips made in the GUI's combined view (which stay there) are kept beside."""
        combined = suite2p_dir / "combined"
        with unit(combined, combined / ISCELL) as tx:
            data = _npy_bytes(self._combined_rows(suite2p_dir))
            st = _state(combined, _roi_count(combined))
            check_free_space(combined, 3 * len(data) + (1 << 20), f"{combined / ISCELL} and its backup")
            notes = []
            if st.edited:
                kept = free_name(combined, "iscell_edited", ".npy")
                tx.create(kept, st.current)
                notes.append(f"{combined / ISCELL}: hand edits kept in {kept}")
            if st.sha == sha256_bytes(data) and st.record:
                return notes
            tx.write(combined / RECORD, _json_bytes({
                "roicurate_version": roicurate.__version__,
                "time": _now(),
                "rebuilt_from": [p.name for p in _planes(suite2p_dir)],
                "note": "combined/iscell.npy rebuilt as the concatenation of the planes' iscell.npy, as Suite2p does",
                "backup": BACKUP,
                "backup_sha256": st.original_sha or st.sha,
                "written_sha256": sha256_bytes(data),
                "prior_sha256": st.sha,
            }))
            if st.backup is None:
                tx.create(combined / BACKUP, st.current)
            tx.write(combined / ISCELL, data)
        return notes

    # ---- reverting -----------------------------------------------------------------------------------
    def revert(self, path, force=False):
        path = Path(path)
        if path.name == "combined":
            self.expand(path)  # raises the "pass the suite2p folder" error
        if not path.exists():
            raise RoicurateError(f"{path}: does not exist")
        planes = self.expand(path) if path.is_dir() else []
        parents = sorted({p.parent for p in planes})
        for folder in planes + [d / "combined" for d in parents if (d / "combined").is_dir()]:
            clean_stale_temps(folder)              # a killed run's leftovers, even where nothing is curated
        curated = [p for p in planes if _curated(p)]
        for p in curated:                          # every plane checked before the first one is restored
            self._check_revert(p, force)
        done = []
        for p in curated:
            done += self._revert_plane(p, force)
        for parent in parents:                     # also when a killed revert left only combined/ curated
            done += self._revert_combined(parent)
        if not done:                               # nothing curated, or another run reverted it meanwhile
            raise NothingToRevert(f"{path}: nothing to revert (no {BACKUP} or cell types from an earlier roicurate run)")
        return "; ".join(done)

    def _check_revert(self, plane, force):
        n = _roi_count(plane)
        st = _state(plane, n)
        if st.edited and not force:
            raise RoicurateError(f"{plane / ISCELL}: edited since roicurate wrote it (in the Suite2p GUI?); revert would "
                                 f"drop those edits: use --force to keep them beside it and restore Suite2p's original")
        if (plane / RED_BACKUP).exists():
            _load_redcell(plane / RED_BACKUP, n)
        check_dir_writable(plane)
        for name in (ISCELL, BACKUP, RECORD, CLASSES, TYPES, REDCELL, RED_BACKUP):
            check_replaceable(plane / name)
        check_free_space(plane, 2 * len(st.current) + (1 << 20), f"restoring {ISCELL}")
        return st

    def _revert_plane(self, plane, force):
        """Restore iscell.npy from the verified backup, then remove the backup, then the record (until the record
        is gone, a re-run can tell the restored original from hand edits)."""
        with unit(plane, plane / ISCELL) as tx:
            if not _curated(plane):
                return []
            st = self._check_revert(plane, force)
            pause_after_check()
            done = []
            if st.edited:
                kept = free_name(plane, "iscell_edited", ".npy")
                tx.create(kept, st.current)
                done.append(f"{plane / ISCELL}: hand edits kept in {kept}")
            red = _red_entry(st.record)
            if st.backup is not None:
                tx.write(plane / ISCELL, st.backup)
                done.append(f"{plane / ISCELL} restored")
            if (plane / RED_BACKUP).exists():
                tx.write(plane / REDCELL, (plane / RED_BACKUP).read_bytes())
                tx.remove(plane / RED_BACKUP)
                done.append(f"{plane / REDCELL} restored")
            elif red.get("created"):
                tx.remove(plane / REDCELL)
                done.append(f"{plane / REDCELL} (made by roicurate) removed")
            tx.remove(plane / BACKUP)
            for name in (CLASSES, TYPES):
                tx.remove(plane / name)
            tx.remove(plane / RECORD)
            if not done:
                done.append(f"{plane}: roicurate's files removed ({ISCELL} was already Suite2p's)")
        return done

    def _revert_combined(self, suite2p_dir):
        """Once no plane is curated any more, combined/ gets its original back; until then it follows the planes."""
        combined = suite2p_dir / "combined"
        if not (combined / BACKUP).exists() and not (combined / RECORD).exists():
            return []
        if any(_curated(p) for p in _planes(suite2p_dir)):
            return self._rebuild_combined(suite2p_dir) + [f"{combined / ISCELL} rebuilt from the planes"]
        with unit(combined, combined / ISCELL) as tx:
            if not (combined / BACKUP).exists() and not (combined / RECORD).exists():
                return []
            st = _state(combined, _roi_count(combined))
            done = []
            if st.edited:
                kept = free_name(combined, "iscell_edited", ".npy")
                tx.create(kept, st.current)
                done.append(f"{combined / ISCELL}: hand edits kept in {kept}")
            if st.backup is not None:
                tx.write(combined / ISCELL, st.backup)
            tx.remove(combined / BACKUP)
            tx.remove(combined / RECORD)
        return done + [f"{combined / ISCELL} restored"]


def _curated(plane):
    return (plane / BACKUP).exists() or (plane / RECORD).exists()


@hookimpl
def register_sources(register):
    register(Suite2pSource())
