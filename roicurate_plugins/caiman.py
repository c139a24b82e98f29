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
import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from roicurate import RoicurateError, __version__
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.rois import RoiSet
from roicurate.scale import set_diameter
from roicurate.safeio import (NothingToRevert, check_free_space, check_replaceable, clean_stale_temps, clone_or_copy,
                              create_new, free_name, fsync_dir, pause_after_check, sha256_file, temp_name, unit)
from roicurate.sources import Source, check_dir_writable

NONE = b"NoneType"
BACKUP_TAG = ".roicurate-backup"   # NAME.hdf5 -> NAME.roicurate-backup.hdf5, beside it
FEATURES = ("SNR_comp", "r_values", "cnn_preds")
# what write() sets; everything else in the file stays byte-identical
WRITTEN = ("idx_components", "idx_components_bad", "roicurate_probability", "cnn_preds", "roicurate_class_probability")
ATTRS = ("roicurate_model", "roicurate_sha256", "roicurate_threshold", "roicurate_version")
# models with more than two classes: estimates/roicurate_class_probability (float64, components x classes, the
# columns named by the JSON list in the roicurate_classes attribute) and the accepted classes (roicurate_accept)
CLASS_ATTRS = ("roicurate_classes", "roicurate_accept")
# the scale and inputs the model was given: reference cell diameter (px, "none" for native-pixel crops), where it
# came from, and the crop channels used (a JSON list)
SCALE_ATTRS = ("roicurate_reference_diameter", "roicurate_diameter_source", "roicurate_inputs")
# the backup's sha256 (a file hash) and the hash of everything write() does not set, both taken at the first apply
BACKUP_ATTRS = ("roicurate_backup_sha256", "roicurate_content_sha256")


def already_selected(where, live=False):
    """The message for results after ``select_components``: the rejected components are gone from A."""
    how = ("call roicurate.caiman.curate(cnm) before cnm.estimates.select_components()" if live else
           "run roicurate on the file saved before select_components (e.g. cnmf_refit_evaluated.hdf5), or call "
           "roicurate.caiman.curate(cnm) before select_components")
    return (f"{where}: select_components() was already run (idx_components is None and the rejected components "
            f"were moved to discarded_components), so A holds only the accepted ones; {how}")


def _none(v):
    return v is None or (isinstance(v, (bytes, np.bytes_)) and v == NONE)


# gSig is CaImAn's "half size" of a neuron; its default says nothing about the recording. On CaImAn's own output
# (caiman_sim1-3, gSig 4) the labelled cells' masks (A > 0.2 x max) have a median equivalent diameter of 12.3-12.5 px.
DEFAULT_GSIG = [5, 5]
GSIG_TO_DIAMETER = 3.0


def _recorded_diameter(attrs):
    """(px, source) of the reference diameter a curation used, or None (native-pixel crops, or an older file)."""
    d = attrs.get("roicurate_reference_diameter")
    try:
        return float(d), str(attrs.get("roicurate_diameter_source", ""))
    except (TypeError, ValueError):
        return None


def scale_attrs(curation):
    """The values of SCALE_ATTRS for a Curation (file and live object alike)."""
    d = "none" if curation.diameter is None else repr(round(float(curation.diameter), 3))
    return d, curation.diameter_source or "", json.dumps(list(curation.inputs))


def roiset_from_estimates(A, dims, *, b=None, f=None, C=None, Cn=None, idx_components=None, selected=False,
                          features=None, origin=None, path="", where="estimates"):
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
                source="caiman", pipeline="caiman", path=path, origin=dict(origin or {}, n=K))
    rs.validate(where)
    gsig = rs.origin.get("gSig")
    if gsig and list(gsig) != DEFAULT_GSIG and min(gsig) > 0:
        set_diameter(rs, GSIG_TO_DIAMETER * float(np.mean(gsig)), f"CaImAn gSig setting ({GSIG_TO_DIAMETER:g} x gSig)")
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


def _time_mean(group, key, block=1 << 24):
    """The row means of a K x T dataset as a K x 1 array (its own time mean), read about ``block`` bytes at a
    time (rows, or columns of every row when one row block would be bigger): C can be GBs and only its mean is
    needed (for the mean-image stand-in)."""
    obj = group.get(key)
    if not isinstance(obj, _h5py().Dataset) or obj.ndim != 2 or obj.dtype.kind not in "fiu":
        return None
    K, T = obj.shape
    if K == 0 or T == 0:
        return np.full((K, 1), np.nan) if K else np.zeros((0, 1))
    rows = block // (8 * T)
    if rows >= 1:
        return np.concatenate([obj[i:i + rows].mean(1) for i in range(0, K, rows)])[:, None]
    cols = max(1, block // (8 * K))
    total = sum(obj[:, j:j + cols].sum(1, dtype=np.float64) for j in range(0, T, cols))
    return (total / T)[:, None]


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
    display_name, default_model, default_arch = "CaImAn", "caiman-cnn2", "cnn2"

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
        origin = {"roi_file": str(path),
                  "gSig": None if gsig is None else [int(g) for g in np.ravel(gsig)]}
        return roiset_from_estimates(A, dims, **arrays, selected=selected, features=features, origin=origin,
                                     path=str(path), where=str(path))

    def check_writable(self, path, force=False):
        """Everything ``write`` needs, checked before anything is written (and again under the lock)."""
        path = Path(path)
        check_dir_writable(path.parent)
        clean_stale_temps(path.parent)
        check_replaceable(path)
        st = _inspect(path)
        if st.edited and not force:
            raise RoicurateError(f"{path}: idx_components changed since roicurate wrote it (re-filtered in "
                                 f"CaImAn?); use --force to overwrite those edits (the file is kept beside it)")
        if st.stale and not force:
            raise RoicurateError(f"{path}: differs from its backup {_backup(path).name} in more than roicurate's own "
                                 f"fields (re-saved since roicurate backed it up?); move the old backup away, or use "
                                 f"--force (the old backup is kept as {path.stem}.roicurate-backup-stale-<time>"
                                 f"{path.suffix} and the current file is backed up)")
        return st

    def write(self, path, roiset, curation, force=False, as_cnn_preds=False, **options):
        """Under the folder's lock: verify (or make) the backup, an independent copy; keep hand edits beside; write
        the verdict into a temp copy of the file, fsync, ``os.replace``. The backup's sha256 and the hash of
        everything roicurate does not write go into the new file's attributes. A failure undoes every step."""
        path = Path(path)
        backup = _backup(path)
        K = len(curation.accepted)
        accepted = np.asarray(curation.accepted, bool)
        datasets = {"idx_components": np.flatnonzero(accepted).astype(np.int64),
                    "idx_components_bad": np.flatnonzero(~accepted).astype(np.int64),
                    "roicurate_probability": np.asarray(curation.score, np.float64)}
        if as_cnn_preds:
            datasets["cnn_preds"] = datasets["roicurate_probability"].copy()
        model = curation.model.get("source") or curation.model.get("name", "")   # a name, or a card's path
        attrs = dict(zip(ATTRS, (str(model), str(curation.model.get("sha256", "")),
                                 repr(float(curation.threshold)), __version__)))
        attrs.update(zip(SCALE_ATTRS, scale_attrs(curation)))
        multi = len(curation.classes) > 2
        if multi:
            datasets["roicurate_class_probability"] = np.asarray(curation.probabilities, np.float64)
            attrs.update(zip(CLASS_ATTRS, (json.dumps(list(curation.classes)), json.dumps(curation.accepted_classes))))
        notes = []
        with unit(path.parent, path) as tx:
            st = self.check_writable(path, force=force)          # again: another run may have written meanwhile
            if st.K != K or len(roiset) != K:
                raise RoicurateError(f"{path}: has {st.K} components but the curation has {K} (RoiSet: {len(roiset)})")
            size = path.stat().st_size
            new_backup = st.stale or not backup.exists()
            payload = sum(v.nbytes for v in datasets.values())
            check_free_space(path.parent, size * (1 + new_backup + st.edited) + 2 * payload + (8 << 20),
                             f"a temp copy of {path.name}" + (" and its backup" if new_backup else ""))
            pause_after_check()
            if st.stale:                                # the old backup belongs to other data: set aside, kept
                aside = free_name(path.parent, path.stem + ".roicurate-backup-stale", path.suffix)
                os.rename(backup, aside)
                tx.undo.append(lambda: os.rename(aside, backup))
                notes.append(f"{backup.name} belonged to an earlier save of {path.name}: kept as {aside.name}")
            if st.edited:
                kept = free_name(path.parent, path.stem + ".roicurate-edited", path.suffix)
                create_new(kept, copy_from=path)
                tx.created(kept)
                notes.append(f"{path}: hand edits kept in {kept}")
            if new_backup:
                create_new(backup, copy_from=path)
                tx.created(backup)
                st.backup_sha, st.content = sha256_file(backup), None
            attrs["roicurate_backup_sha256"] = st.backup_sha or sha256_file(backup)
            attrs["roicurate_content_sha256"] = st.content or _content_sha256(backup)
            tmp = temp_name(path)
            tx.created(tmp)
            clone_or_copy(path, tmp)
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
            os.replace(tmp, path)
            fsync_dir(path.parent)
        return "; ".join(notes) or None

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
                    "diameter": _recorded_diameter(est.attrs),
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

    def _check_revert(self, path, force):
        backup = _backup(path)
        if not backup.exists():
            if self.recorded(path) is not None:
                raise RoicurateError(f"{backup}: missing, but {path.name} holds roicurate's verdict, so CaImAn's "
                                     f"original is not here; nothing changed")
            raise NothingToRevert(f"{path}: nothing to revert (no roicurate backup {backup.name})")
        st = _inspect(path)
        if not st.rec and not st.adopt:
            raise RoicurateError(f"{backup}: {path.name} carries no roicurate record, so it is unknown which file is "
                                 f"CaImAn's original; nothing changed (move the backup away if {path.name} is "
                                 f"CaImAn's own output)")
        if (st.edited or st.stale) and not force:
            raise RoicurateError(f"{path}: changed since roicurate wrote it (" + ("idx_components re-filtered"
                                 if st.edited else "re-saved") + "); revert would drop that: use --force to keep it "
                                 "beside the file and restore CaImAn's original")
        check_dir_writable(path.parent)
        check_replaceable(path)
        check_replaceable(backup)
        return st

    def revert(self, path, force=False):
        """Restore the verified backup byte for byte (through a temp copy whose sha256 is checked), then remove it."""
        path = Path(path)
        if not path.exists():
            raise RoicurateError(f"{path}: does not exist")
        backup = _backup(path)
        clean_stale_temps(path.parent)
        self._check_revert(path, force)
        notes = []
        with unit(path.parent, path) as tx:
            st = self._check_revert(path, force)
            if st.adopt:                      # an interrupted run: the file already is the backup, byte for byte
                os.unlink(backup)
                fsync_dir(path.parent)
                return f"already CaImAn's original; {backup.name} removed"
            size = backup.stat().st_size
            check_free_space(path.parent, size + (path.stat().st_size if st.edited or st.stale else 0) + (8 << 20),
                             f"restoring {path.name}")
            pause_after_check()
            if st.edited or st.stale:
                kept = free_name(path.parent, path.stem + ".roicurate-edited", path.suffix)
                create_new(kept, copy_from=path)
                tx.created(kept)
                notes.append(f"edits kept in {kept.name}")
            tmp = temp_name(path)
            tx.created(tmp)
            clone_or_copy(backup, tmp)
            if st.backup_sha and sha256_file(tmp) != st.backup_sha:
                raise RoicurateError(f"{backup}: its copy does not match the recorded sha256; nothing changed")
            shutil.copymode(backup, tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            os.unlink(backup)
            fsync_dir(path.parent)
        return "; ".join([f"restored from {backup.name}"] + notes)


def _inspect(path):
    """The verified state of a CaImAn file and its backup, before anything is written or restored: ``K``,
    ``rec`` (roicurate wrote it), ``edited`` (idx_components no longer says what roicurate wrote), ``stale``
    (the file was re-saved since the backup was made: it differs in more than roicurate's own fields),
    ``adopt`` (no record, but the backup is byte-identical: an interrupted first run), ``backup_sha`` and
    ``content`` (recorded hashes). Raises one line for a selected file, or a backup that does not load, has
    another component count, or differs from its recorded sha256. Reads block by block: memory stays small."""
    backup = _backup(path)
    sig = (_signature(path), _signature(backup))
    cached = _VERIFIED.get(str(path))
    if cached and cached[0] == sig:          # checked a moment ago and not changed since: do not hash GBs twice
        return SimpleNamespace(**cached[1])
    st = _inspect_files(path, backup)
    _VERIFIED[str(path)] = (sig, dict(vars(st)))
    return st


_VERIFIED = {}      # path -> ((inode, size, mtime) of file and backup, the verified state): one process's memory


def _signature(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _inspect_files(path, backup):
    h5py = _h5py()
    with _open(path) as f:
        est = f.get("estimates")
        if not isinstance(est, h5py.Group) or not isinstance(est.get("A"), h5py.Group) or "shape" not in est["A"]:
            raise RoicurateError(f"{path}: no estimates/A (not a CaImAn file written by cnm.save())")
        if _is_selected(est):
            raise RoicurateError(already_selected(path))
        K = int(est["A/shape"][1])
        rec = "roicurate_model" in est.attrs
        get = lambda k: str(est.attrs[k]) if k in est.attrs else None
        st = SimpleNamespace(K=K, rec=rec, edited=rec and _edited_after_write(est), stale=False, adopt=False,
                             backup_sha=get("roicurate_backup_sha256"), content=get("roicurate_content_sha256"))
    if not backup.exists():
        if rec:
            raise RoicurateError(f"{backup}: missing, but {path.name} holds roicurate's verdict, so CaImAn's original "
                                 f"is not here; nothing written")
        return st
    if not rec:
        sha = sha256_file(backup)
        if sha == sha256_file(path):
            st.adopt, st.backup_sha = True, sha
        else:
            st.stale = True                   # CaImAn saved a new file under this name
        return st
    _check_backup(backup, K, st.backup_sha)
    st.stale = _content_sha256(path) != (st.content or _content_sha256(backup))
    return st


def _check_backup(backup, K, sha):
    h5py = _h5py()
    if not h5py.is_hdf5(str(backup)):
        raise RoicurateError(f"{backup}: roicurate's backup is not an HDF5 file (truncated or corrupt); nothing changed")
    try:
        with h5py.File(backup, "r") as f:
            k = int(f["estimates/A/shape"][1])
    except (OSError, KeyError, ValueError, TypeError, IndexError) as e:
        raise RoicurateError(f"{backup}: roicurate's backup cannot be read ({type(e).__name__}); nothing changed") \
            from None
    if k != K:
        raise RoicurateError(f"{backup}: roicurate's backup has {k} components but the file has {K} (from another "
                             f"recording?); nothing changed")
    if sha and sha256_file(backup) != sha:
        raise RoicurateError(f"{backup}: differs from the sha256 roicurate recorded when it made this backup "
                             f"(changed or corrupt); nothing changed")


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


def _content_sha256(path, block=1 << 24):
    """sha256 over everything in the file but what write() sets (names, attributes, dtypes, shapes, values),
    each dataset read a block of rows at a time, so a file of GBs is hashed in little memory."""
    h5py = _h5py()
    skip = {f"estimates/{k}" for k in WRITTEN}
    ours = set(ATTRS + CLASS_ATTRS + BACKUP_ATTRS + SCALE_ATTRS)
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
        for name in [""] + sorted(n for n in names if n not in skip):
            obj = f[name] if name else f
            attrs = sorted((k, repr(v)) for k, v in obj.attrs.items() if not (name == "estimates" and k in ours))
            h.update(repr((name, attrs)).encode())
            if not isinstance(obj, h5py.Dataset):
                continue
            h.update(repr((str(obj.dtype), obj.shape)).encode())
            if obj.shape is None or obj.ndim == 0 or obj.dtype.kind not in "biufc":
                v = obj[()]
                h.update(repr(v.tolist() if isinstance(v, np.ndarray) else v).encode())
                continue
            rows = max(1, block // max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:]))))
            for i in range(0, obj.shape[0], rows):
                h.update(np.ascontiguousarray(obj[i:i + rows]).tobytes())
    return h.hexdigest()


@hookimpl
def register_sources(register):
    register(CaimanSource())
