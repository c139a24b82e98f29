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

import numpy as np

import roicurate
from roicurate import RoicurateError
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.rois import RoiSet
from roicurate.sources import Source, atomic_copy, atomic_write, backup_once, check_dir_writable

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
    """np.load that turns every way a file can be missing or broken into one RoicurateError line."""
    if not path.is_file():
        raise RoicurateError(f"{path}: file is missing")
    try:
        return np.load(path, allow_pickle=pickle)
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


def _pixels(stat, where):
    ys, xs, ws = [], [], []
    for i, d in enumerate(stat):
        if not isinstance(d, dict) or not all(k in d for k in ("ypix", "xpix", "lam")):
            raise RoicurateError(f"{where}: ROI {i} is not a dict with ypix/xpix/lam (not a Suite2p stat.npy?)")
        y, x, w = (np.asarray(d[k]).ravel() for k in ("ypix", "xpix", "lam"))
        if not len(y) == len(x) == len(w):
            raise RoicurateError(f"{where}: ROI {i} has ypix/xpix/lam of different lengths")
        if len(y) and (y.dtype.kind not in "iu" or x.dtype.kind not in "iu" or w.dtype.kind not in "fiub"):
            raise RoicurateError(f"{where}: ROI {i} has non-integer ypix/xpix or non-numeric lam")
        ys.append(y), xs.append(x), ws.append(w)
    return ys, xs, ws


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _write_json(path, record):
    data = (json.dumps(record, indent=2, default=str) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


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
    description = "a Suite2p plane folder (stat.npy + iscell.npy) or a suite2p/ folder"
    crop = CropSpec(size=64, channels=("mask",), binarize=0.0)

    def detect(self, path):
        path = Path(path)
        return path.is_dir() and (_is_plane(path) or _is_suite2p_dir(path))

    def expand(self, path):
        path = Path(path)
        if path.name == "combined":
            raise RoicurateError(f"{path}: combined/ is rebuilt from the planes; pass the suite2p/ folder "
                                 f"({path.parent}) or a plane folder instead")
        if _is_plane(path):
            return [path]
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
        ys, xs, ws = _pixels(stat, stat_path)
        features = _features(stat)
        features["suite2p_prob"] = iscell[:, 1].copy()
        red, red_problem = self._red_labels(plane, n)
        features.update(red)
        roiset = RoiSet.from_pixels(
            shape, ys, xs, ws, images=_images(ops, shape), traces=self._traces(plane, n),
            pipeline_accepted=iscell[:, 0] > 0.5, features=features,
            origin={"pipeline": "suite2p", "path": str(plane), "roi_file": str(stat_path), "n": n,
                    **({"redcell_problem": red_problem} if red_problem else {})})
        roiset.validate(stat_path)
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
                "intact": bool(rec.get("written_sha256")) and iscell.exists() and _sha256(iscell) == rec["written_sha256"]}

    def original_verdict(self, path, roiset):
        backup = Path(path) / BACKUP
        if backup.exists():
            iscell = _load_iscell(backup, len(roiset))
            return iscell[:, 0] > 0.5, iscell[:, 1]
        return roiset.pipeline_accepted, roiset.features.get("suite2p_prob")

    def check_writable(self, path, force=False):
        plane = Path(path)
        check_dir_writable(plane)
        rec = None if force else self.recorded(plane)
        if rec is not None and (plane / ISCELL).exists() and not rec["intact"]:
            raise RoicurateError(f"{plane / ISCELL}: changed since roicurate wrote it (edited in the Suite2p GUI?); "
                                 f"use --force to overwrite those edits")
        if (plane.parent / "combined" / ISCELL).exists():
            self._combined_rows(plane.parent)
            check_dir_writable(plane.parent / "combined")

    def write(self, path, roiset, curation, force=False, **options):
        plane = Path(path)
        n = len(roiset)
        if n == 0:
            return
        if len(curation.accepted) != n:
            raise RoicurateError(f"{plane}: curation has {len(curation.accepted)} ROIs, the plane has {n}")
        self.check_writable(plane, force=force)
        _load_iscell(plane / ISCELL, n)  # still the file we read

        backup_once(plane / ISCELL, plane / BACKUP)
        before = _load_iscell(plane / BACKUP)
        iscell = np.stack([np.asarray(curation.accepted, bool).astype(np.float64),
                           np.asarray(curation.score, np.float64)], axis=1)
        multi = len(curation.classes) > 2
        if multi:
            classes = _npy_bytes(np.asarray(curation.probabilities, np.float64))
            atomic_write(plane / CLASSES, lambda f: f.write(classes))
        else:
            (plane / CLASSES).unlink(missing_ok=True)          # from an earlier run with a K-class model
        data = _npy_bytes(iscell)
        atomic_write(plane / ISCELL, lambda f: f.write(data))
        _write_json(plane / RECORD, {**_types_record(plane), **{
            "roicurate_version": roicurate.__version__,
            "time": _now(),
            "model": dict(curation.model),
            "threshold": float(curation.threshold),
            "classes": list(curation.classes),
            "positive_class": curation.classes[curation.positive],
            "accepted_classes": curation.accepted_classes,
            "accept_rule": f"P({' + '.join(curation.accepted_classes)}) >= threshold",
            "class_probabilities": CLASSES if multi else None,
            "counts": {"rois": n, "accepted_before": int((before[:, 0] > 0.5).sum()) if len(before) == n else None,
                       "accepted_after": int(iscell[:, 0].sum())},
            "backup": BACKUP,
            "written_sha256": hashlib.sha256(data).hexdigest(),
        }})

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
        self.check_types_writable(plane, force, redcell)
        record = _types_record(plane)
        old = _red_entry(record)
        red = None
        if redcell:
            created = old.get("created", not (plane / REDCELL).exists())
            if not created:
                backup_once(plane / REDCELL, plane / RED_BACKUP)
            dtype = np.dtype(np.float32) if created else _load(plane / RED_BACKUP).dtype    # Suite2p 1.1.0: float32
            dtype = dtype if dtype.kind == "f" else np.float32
            rows = _npy_bytes(np.stack([curation.accepted, curation.score], 1).astype(dtype))
            atomic_write(plane / REDCELL, lambda f: f.write(rows))
            red = {"file": REDCELL, "created": created, "backup": None if created else RED_BACKUP,
                   "rule": f"P({curation.classes[curation.positive]}) >= threshold",
                   "written_sha256": hashlib.sha256(rows).hexdigest()}
        elif old:
            red = old                                      # an earlier run's redcell.npy stays as it is
        data = _npy_bytes(np.asarray(curation.probabilities, np.float64))
        atomic_write(plane / TYPES, lambda f: f.write(data))
        counts = np.bincount(curation.probabilities.argmax(1), minlength=len(curation.classes))
        record["types"] = {"roicurate_version": roicurate.__version__, "time": _now(), "model": dict(curation.model),
                           "file": TYPES, "classes": list(curation.classes),
                           "positive_class": curation.classes[curation.positive], "threshold": float(curation.threshold),
                           "most_probable": dict(zip(curation.classes, counts.tolist())), "redcell": red}
        _write_json(plane / RECORD, record)

    def finish(self, paths):
        for parent in sorted({Path(p).parent for p in paths}):
            if (parent / "combined" / ISCELL).exists():
                self._rebuild_combined(parent)

    @staticmethod
    def _combined_rows(suite2p_dir):
        """The planes' iscell rows, concatenated, after checking they match combined/stat.npy."""
        combined = suite2p_dir / "combined"
        planes = _planes(suite2p_dir)
        rows = np.concatenate([_load_iscell(p / ISCELL) for p in planes]) if planes else np.zeros((0, 2))
        stat = _load(combined / "stat.npy", pickle=True)
        if not isinstance(stat, np.ndarray) or stat.ndim != 1:
            raise RoicurateError(f"{combined / 'stat.npy'}: expected an array of ROI dicts, got {_describe(stat)}")
        if len(rows) != len(stat):
            raise RoicurateError(f"{combined / 'stat.npy'}: has {len(stat)} ROIs but the planes' iscell.npy have "
                                 f"{len(rows)} rows in all; re-run Suite2p's combine step")
        return rows

    def _rebuild_combined(self, suite2p_dir):
        combined = suite2p_dir / "combined"
        rows = self._combined_rows(suite2p_dir)
        check_dir_writable(combined)
        backup_once(combined / ISCELL, combined / BACKUP)
        data = _npy_bytes(rows)
        atomic_write(combined / ISCELL, lambda f: f.write(data))
        _write_json(combined / RECORD, {
            "roicurate_version": roicurate.__version__,
            "time": _now(),
            "rebuilt_from": [p.name for p in _planes(suite2p_dir)],
            "note": "combined/iscell.npy rebuilt as the concatenation of the planes' iscell.npy, as Suite2p does",
            "backup": BACKUP,
            "written_sha256": hashlib.sha256(data).hexdigest(),
        })

    # ---- reverting -----------------------------------------------------------------------------------
    def revert(self, path):
        path = Path(path)
        if path.name == "combined":
            self.expand(path)  # raises the "pass the suite2p folder" error
        curated = lambda p: (p / BACKUP).exists() or bool(_types_record(p))
        if _is_plane(path):
            planes = [path]
        else:
            planes = [p for p in _planes(path) if curated(p)] if path.is_dir() else []
        if not planes or not all(curated(p) for p in planes):
            raise RoicurateError(f"{path}: nothing to revert (no {BACKUP} or cell types from an earlier roicurate run)")
        for p in planes:
            check_dir_writable(p)
        for parent in {p.parent for p in planes}:
            if (parent / "combined" / BACKUP).exists():
                check_dir_writable(parent / "combined")
        done = []
        for p in planes:
            red = _red_entry(_types_record(p))
            if (p / BACKUP).exists():
                atomic_copy(p / BACKUP, p / ISCELL)
                (p / BACKUP).unlink()
                done.append(f"{p / ISCELL} restored")
            if (p / RED_BACKUP).exists():
                atomic_copy(p / RED_BACKUP, p / REDCELL)
                (p / RED_BACKUP).unlink()
                done.append(f"{p / REDCELL} restored")
            elif red.get("created"):
                (p / REDCELL).unlink(missing_ok=True)
                done.append(f"{p / REDCELL} (made by roicurate) removed")
            for f in (RECORD, CLASSES, TYPES):
                (p / f).unlink(missing_ok=True)
        for parent in sorted({p.parent for p in planes}):
            done += self._revert_combined(parent)
        return "; ".join(done)

    def _revert_combined(self, suite2p_dir):
        """Once no plane is curated any more, combined/ gets its original back; until then it follows the planes."""
        combined = suite2p_dir / "combined"
        if not (combined / BACKUP).exists():
            return []
        if any((p / BACKUP).exists() for p in _planes(suite2p_dir)):
            self._rebuild_combined(suite2p_dir)
            return [f"{combined / ISCELL} rebuilt from the planes"]
        check_dir_writable(combined)
        atomic_copy(combined / BACKUP, combined / ISCELL)
        (combined / BACKUP).unlink()
        (combined / RECORD).unlink(missing_ok=True)
        return [f"{combined / ISCELL} restored"]


@hookimpl
def register_sources(register):
    register(Suite2pSource())
