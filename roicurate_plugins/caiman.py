"""CaImAn source: the HDF5 file written by ``cnm.save()``, read and written with h5py alone (no CaImAn needed).

Layout (CaImAn 1.12.1, see shared/FACTS-caiman.md): ``/estimates/A`` is a CSC sparse group ``data, indices,
indptr, shape`` of pixels x K whose rows are pixels in Fortran order over ``dims``; ``None`` is stored as the
string ``b'NoneType'``; a ``str`` value is an attribute of its group. CaImAn's ``load_CNMF`` sets every key under
``/estimates`` on the Estimates object, so what we add (a dataset and four string attributes) survives a load.

Summary images: ``Cn`` (CaImAn's correlation image, present when the user's script set it) becomes ``corr``;
``mean`` is the temporal mean of CaImAn's own model of the movie, ``A @ mean(C) + b @ mean(f)`` (b @ mean(f)
when C is missing, the first background column when f is missing). On the simulated files it correlates at
0.99999 with the real mean image; the mean over b's columns alone does not (0.5-0.6).
"""
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from roicurate import RoicurateError, __version__
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.rois import RoiSet
from roicurate.sources import Source, _fsync_dir, atomic_copy, backup_once, check_dir_writable

NONE = b"NoneType"
BACKUP_TAG = ".roicurate-backup"   # NAME.hdf5 -> NAME.roicurate-backup.hdf5, beside it
FEATURES = ("SNR_comp", "r_values", "cnn_preds")
# what write() sets; everything else in the file stays byte-identical
WRITTEN = ("idx_components", "idx_components_bad", "roicurate_probability", "cnn_preds", "roicurate_class_probability")
ATTRS = ("roicurate_model", "roicurate_sha256", "roicurate_threshold", "roicurate_version")
# models with more than two classes: estimates/roicurate_class_probability (float64, components x classes, the
# columns named by the JSON list in the roicurate_classes attribute) and the accepted classes (roicurate_accept)
CLASS_ATTRS = ("roicurate_classes", "roicurate_accept")


def already_selected(where, live=False):
    """The message for results after ``select_components``: the rejected components are gone from A."""
    how = ("call roicurate.caiman.curate(cnm) before cnm.estimates.select_components()" if live else
           "run roicurate on the file saved before select_components (e.g. cnmf_refit_evaluated.hdf5), or call "
           "roicurate.caiman.curate(cnm) before select_components")
    return (f"{where}: select_components() was already run (idx_components is None and the rejected components "
            f"were moved to discarded_components), so A holds only the accepted ones; {how}")


def _none(v):
    return v is None or (isinstance(v, (bytes, np.bytes_)) and v == NONE)


def roiset_from_estimates(A, dims, *, b=None, f=None, C=None, Cn=None, idx_components=None, selected=False,
                          features=None, origin=None, where="estimates"):
    """A RoiSet from CaImAn's arrays (one code path for files and live objects).

    ``A`` is pixels x K (scipy sparse or dense), ``dims`` the frame. ``selected``: select_components() ran, so
    every component in A is an accepted one."""
    if _none(A):
        raise RoicurateError(f"{where}: has no spatial components (estimates.A is None)")
    if _none(dims) or len(np.ravel(dims)) != 2:
        raise RoicurateError(f"{where}: dims is {None if _none(dims) else tuple(np.ravel(dims))}; "
                             f"only 2-D CaImAn results are supported")
    dims = tuple(int(d) for d in np.ravel(dims))
    try:
        A = sp.csc_matrix(A, dtype=np.float64, copy=True) if sp.issparse(A) else \
            sp.csc_matrix(np.asarray(A, np.float64))
        A.check_format(full_check=True)
        A.eliminate_zeros()
        A.sort_indices()
    except (ValueError, TypeError) as e:
        raise RoicurateError(f"{where}: estimates.A is not a valid matrix ({e})") from None
    npixel, K = A.shape
    if npixel != dims[0] * dims[1]:
        raise RoicurateError(f"{where}: estimates.A has {npixel} rows but dims {dims[0]}x{dims[1]} "
                             f"has {dims[0] * dims[1]} pixels")
    if K == 0:
        raise RoicurateError(f"{where}: has no components (estimates.A has 0 columns); nothing to curate")
    y, x = np.unravel_index(A.indices.astype(np.int64), dims, order="F")
    images = {}
    if not _none(Cn) and np.shape(Cn) == dims:
        images["corr"] = np.asarray(Cn, np.float32)
    mean = _mean_image(A, b, f, C, npixel)
    if mean is not None:
        images["mean"] = mean.reshape(dims, order="F").astype(np.float32)
    accepted = None
    if selected:
        accepted = np.ones(K, bool)
    elif not _none(idx_components) and np.ndim(idx_components) == 1:
        idx = np.asarray(idx_components, np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= K):
            raise RoicurateError(f"{where}: idx_components points past the {K} components")
        accepted = np.zeros(K, bool)
        accepted[idx] = True
    feats = {}
    for name, v in (features or {}).items():
        if not _none(v) and np.ndim(v) == 1 and len(v) == K:
            try:
                feats[name] = np.asarray(v, np.float64)
            except (ValueError, TypeError):
                pass
    rs = RoiSet(dims, A.indptr, y, x, A.data, images=images, pipeline_accepted=accepted, features=feats,
                origin=dict(origin or {}, pipeline="caiman", n=K))
    rs.validate(where)
    return rs


def _mean_image(A, b, f, C, npixel):
    if _none(b) or np.ndim(b) not in (1, 2) or np.shape(b)[0] != npixel:
        return None
    b = b.toarray() if sp.issparse(b) else np.asarray(b, np.float64).reshape(npixel, -1)
    if _none(f) or np.ndim(f) != 2 or np.shape(f)[0] != b.shape[1]:
        return b[:, 0]
    mean = b @ np.asarray(f, np.float64).mean(1)
    if not _none(C) and np.ndim(C) == 2 and np.shape(C)[0] == A.shape[1]:
        mean = mean + A @ np.asarray(C, np.float64).mean(1)
    return mean


def _h5py():
    import h5py
    return h5py


def _open(path, mode="r"):
    h5py = _h5py()
    if not h5py.is_hdf5(str(path)):
        raise RoicurateError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise RoicurateError(f"{path}: cannot open ({e})") from None


def _value(group, key):
    """A dataset's value, a sparse matrix for a CSC group, or None (missing or 'NoneType')."""
    h5py = _h5py()
    obj = group.get(key)
    if obj is None:
        return None
    if isinstance(obj, h5py.Group):
        if all(k in obj for k in ("data", "indices", "indptr", "shape")):
            shape = tuple(int(s) for s in obj["shape"][()])
            return sp.csc_matrix((obj["data"][()], obj["indices"][()], obj["indptr"][()]), shape=shape)
        return None
    v = obj[()]
    return None if _none(v) else v


def _time_mean(group, key, block=256):
    """The row means of a K x T dataset as a K x 1 array (its own time mean), read a block of rows at a time:
    C can be GBs and only its mean is needed (for the mean-image stand-in)."""
    obj = group.get(key)
    if not isinstance(obj, _h5py().Dataset) or obj.ndim != 2 or obj.dtype.kind not in "fiu":
        return None
    return np.concatenate([obj[i:i + block].mean(1) for i in range(0, obj.shape[0], block)] or
                          [np.zeros(0)])[:, None]


def _is_selected(est):
    """select_components() ran: idx_components is None and discarded_components is a group."""
    h5py = _h5py()
    idx = est.get("idx_components")
    return isinstance(est.get("discarded_components"), h5py.Group) and \
        (idx is None or (isinstance(idx, h5py.Dataset) and _none(idx[()])))


def load_estimates(path):
    """Every ``/estimates`` entry of a ``cnm.save()`` file as attributes of a namespace (None for 'NoneType',
    scipy CSC for A and other sparse groups, str attributes as values): what ``load_CNMF`` would give, without
    CaImAn. ``discarded_components`` stays None (not loaded)."""
    h5py = _h5py()
    with _open(path) as f:
        est = f.get("estimates")
        if not isinstance(est, h5py.Group):
            raise RoicurateError(f"{path}: no /estimates group (not written by CaImAn's cnm.save())")
        ns = SimpleNamespace(**{k: None if k == "discarded_components" else _value(est, k) for k in est})
        for k, v in est.attrs.items():
            setattr(ns, k, v)
        if isinstance(est.get("discarded_components"), h5py.Group):
            ns.discarded_components = SimpleNamespace(A=_value(est["discarded_components"], "A"))
    return ns


def _backup(path):
    path = Path(path)
    return path.with_name(path.stem + BACKUP_TAG + path.suffix)


class CaimanSource(Source):
    name = "caiman"
    description = "a CaImAn .hdf5 written by cnm.save()"
    crop = CropSpec(size=50, channels=("mask",), binarize=0.2)

    def detect(self, path):
        p = Path(path)
        return p.suffix.lower() in (".hdf5", ".h5") and p.is_file()

    def read(self, path):
        h5py = _h5py()
        path = Path(path)
        if path.stem.endswith(BACKUP_TAG):
            raise RoicurateError(f"{path}: this is roicurate's backup of "
                                 f"{path.stem[: -len(BACKUP_TAG)]}{path.suffix}; run roicurate on that file instead")
        with _open(path) as f:
            est = f.get("estimates")
            if not isinstance(est, h5py.Group) or "A" not in est:
                raise RoicurateError(f"{path}: no estimates/A (not a CaImAn file written by cnm.save())")
            if not isinstance(est["A"], h5py.Group):
                raise RoicurateError(f"{path}: estimates/A is {'None' if _none(est['A'][()]) else 'not a sparse matrix'}")
            try:
                A = _value(est, "A")
            except (ValueError, TypeError) as e:
                raise RoicurateError(f"{path}: estimates/A is not a valid sparse matrix ({e})") from None
            if A is None:
                raise RoicurateError(f"{path}: estimates/A has no data/indices/indptr/shape")
            dims = next((d for d in (_value(est, "dims"), _value(f, "dims"),
                                     _value(f["params/data"], "dims") if "params/data" in f else None)
                         if d is not None), None)
            gsig = _value(f["params/init"], "gSig") if "params/init" in f else None
            arrays = {k: _value(est, k) for k in ("b", "f", "Cn", "idx_components")}
            arrays["C"] = _time_mean(est, "C")
            features = {k: _value(est, k) for k in FEATURES}
            selected = _is_selected(est)
        origin = {"path": str(path), "roi_file": str(path),
                  "gSig": None if gsig is None else [int(g) for g in np.ravel(gsig)]}
        return roiset_from_estimates(A, dims, **arrays, selected=selected, features=features, origin=origin,
                                     where=str(path))

    def check_writable(self, path, force=False):
        path = Path(path)
        check_dir_writable(path.parent)
        if not os.access(path, os.W_OK):
            raise RoicurateError(f"{path}: file is read-only")
        with _open(path) as f:
            est = f.get("estimates")
            if est is not None and _is_selected(est):
                raise RoicurateError(already_selected(path))
            if est is not None and not force and _edited_after_write(est):
                raise RoicurateError(f"{path}: idx_components changed since roicurate wrote it (re-filtered in "
                                     f"CaImAn?); use --force to overwrite those edits")
        backup = _backup(path)
        if backup.exists() and not force and _changed_since_backup(path, backup):
            raise RoicurateError(f"{path}: differs from its backup {backup.name} in more than roicurate's own fields "
                                 f"(re-saved since roicurate backed it up?); move the old backup away, or use "
                                 f"--force to replace it with the current file")

    def write(self, path, roiset, curation, force=False, as_cnn_preds=False, **options):
        path = Path(path)
        self.check_writable(path, force=force)
        K = len(curation.accepted)
        with _open(path) as f:
            n = int(f["estimates/A/shape"][1])
        if n != K or len(roiset) != n:
            raise RoicurateError(f"{path}: has {n} components but the curation has {K} (RoiSet: {len(roiset)})")
        backup = _backup(path)
        if force and backup.exists() and _changed_since_backup(path, backup):
            atomic_copy(path, backup)
        accepted = np.asarray(curation.accepted, bool)
        datasets = {"idx_components": np.flatnonzero(accepted).astype(np.int64),
                    "idx_components_bad": np.flatnonzero(~accepted).astype(np.int64),
                    "roicurate_probability": np.asarray(curation.score, np.float64)}
        if as_cnn_preds:
            datasets["cnn_preds"] = datasets["roicurate_probability"].copy()
        model = curation.model.get("source") or curation.model.get("name", "")   # a name, or a card's path
        attrs = dict(zip(ATTRS, (str(model), str(curation.model.get("sha256", "")),
                                 repr(float(curation.threshold)), __version__)))
        multi = len(curation.classes) > 2
        if multi:
            datasets["roicurate_class_probability"] = np.asarray(curation.probabilities, np.float64)
            attrs.update(zip(CLASS_ATTRS, (json.dumps(list(curation.classes)), json.dumps(curation.accepted_classes))))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)       # copied by the kernel (sendfile), several times faster than in Python
            with _h5py().File(tmp, "r+") as f:
                est = f["estimates"]
                for key, value in datasets.items():
                    if key in est:
                        del est[key]
                    est.create_dataset(key, data=value)
                for key, value in attrs.items():
                    est.attrs[key] = value
                if not multi:                      # left by an earlier run with a K-class model
                    if "roicurate_class_probability" in est:
                        del est["roicurate_class_probability"]
                    for key in CLASS_ATTRS:
                        est.attrs.pop(key, None)
            with open(tmp, "rb+") as out:
                os.fsync(out.fileno())
            shutil.copymode(path, tmp)
            _keep_original(path, backup)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if backup.exists() and os.path.samefile(path, backup):     # not replaced: the original is still at path
                os.unlink(backup)
            raise

    def recorded(self, path):
        with _open(path) as f:
            est = f.get("estimates")
            if est is None or "roicurate_model" not in est.attrs:
                return None
            thr, sha = est.attrs.get("roicurate_threshold"), est.attrs.get("roicurate_sha256")
            accept = est.attrs.get("roicurate_accept")
            return {"model": str(est.attrs["roicurate_model"]), "sha256": None if sha is None else str(sha),
                    "threshold": None if thr is None else float(thr),
                    "also_accept": json.loads(accept)[1:] if accept is not None else [],
                    "intact": "roicurate_probability" in est and not _edited_after_write(est)}

    def original_verdict(self, path, roiset):
        backup = _backup(path)
        found = None
        if backup.exists():          # only these datasets: the backup also holds the whole movie model (GBs)
            with _open(backup) as f:
                est = f.get("estimates")
                found = {k: None if est is None else _value(est, k)
                         for k in ("idx_components", "cnn_preds", "SNR_comp")}
        accepted = roiset.pipeline_accepted
        if found is not None and found["idx_components"] is not None:
            accepted = np.zeros(len(roiset), bool)
            accepted[np.asarray(found["idx_components"], np.int64)] = True
        get = found.get if found is not None else roiset.features.get
        for key in ("cnn_preds", "SNR_comp"):      # CaImAn's CNN score when it ran, else its SNR
            v = get(key)
            if v is not None and np.ndim(v) == 1 and len(v) == len(roiset) and np.isfinite(v).all():
                return accepted, np.asarray(v, float)
        return accepted, None

    def backup_path(self, path):
        """Where ``write`` keeps the original file (what ``apply`` tells the user)."""
        return _backup(Path(path))

    def revert(self, path):
        path = Path(path)
        backup = _backup(path)
        if not backup.exists():
            raise RoicurateError(f"{path}: no roicurate backup ({backup.name}) to restore")
        check_dir_writable(path.parent)
        atomic_copy(backup, path)
        os.unlink(backup)
        return f"restored from {backup.name}"


def _keep_original(path, backup):
    """Keep the original once as ``backup``: a hard link to its inode, which the ``os.replace`` that follows
    detaches from ``path`` and nothing writes again, so a file of GBs is not copied (made last, so that the two
    names share the inode for as short a time as possible); a copy where the filesystem has no hard links."""
    if backup.exists():
        return
    try:
        os.link(path, backup)
    except OSError:
        backup_once(path, backup)
    _fsync_dir(path.parent)


def _edited_after_write(est):
    """roicurate wrote this file, and idx_components no longer says what roicurate_probability (or, with
    accepted classes, the sum of their class probabilities) says."""
    p, thr, idx = _value(est, "roicurate_probability"), est.attrs.get("roicurate_threshold"), _value(est, "idx_components")
    if p is None or thr is None or idx is None:
        return False
    if "roicurate_class_probability" in est and all(k in est.attrs for k in CLASS_ATTRS):
        try:
            names, accept = json.loads(est.attrs["roicurate_classes"]), json.loads(est.attrs["roicurate_accept"])
            p = np.asarray(_value(est, "roicurate_class_probability"))[:, [names.index(c) for c in accept]].sum(1)
        except (TypeError, ValueError, IndexError):
            return True
    try:
        return not np.array_equal(np.flatnonzero(np.asarray(p) >= float(thr)), np.sort(np.asarray(idx, np.int64)))
    except (TypeError, ValueError):
        return True


def _changed_since_backup(path, backup):
    """True if ``path`` and ``backup`` differ in anything but what write() sets (the file was re-saved).
    Compares object by object, so memory stays at two datasets however large the file is."""
    h5py = _h5py()
    skip = {f"estimates/{k}" for k in WRITTEN}
    try:
        with h5py.File(path, "r") as a, h5py.File(backup, "r") as b:
            names_a, names_b = [], []
            a.visit(names_a.append)
            b.visit(names_b.append)
            if set(names_a) - skip != set(names_b) - skip:
                return True
            return any(_fingerprint(a, n) != _fingerprint(b, n) for n in [""] + names_a if n not in skip)
    except OSError:
        return True


def _fingerprint(f, name):
    """(attrs, dtype, shape, value bytes) of one object; our own attributes on /estimates left out."""
    obj = f[name] if name else f
    attrs = {k: repr(v) for k, v in obj.attrs.items() if not (name == "estimates" and k in ATTRS + CLASS_ATTRS)}
    if not isinstance(obj, _h5py().Dataset):
        return attrs, "group"
    v = obj[()]
    if isinstance(v, np.ndarray):
        v = repr(v.tolist()) if v.dtype == object else v.tobytes()
    return attrs, str(obj.dtype), obj.shape, v if isinstance(v, bytes) else repr(v)


@hookimpl
def register_sources(register):
    register(CaimanSource())
