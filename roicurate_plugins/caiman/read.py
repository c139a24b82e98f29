"""CaImAn results as a RoiSet: the HDF5 file written by ``cnm.save()`` (read with h5py alone, no CaImAn needed)
and a live ``CNMF`` / ``Estimates`` object (duck typing), through one builder, ``roiset_from_estimates``.

Layout (CaImAn 1.12.1, see docs/formats.md): ``/estimates/A`` is a CSC sparse group ``data, indices,
indptr, shape`` of pixels x K whose rows are pixels in Fortran order over ``dims``; ``None`` is stored as the
string ``b'NoneType'``; a ``str`` value is an attribute of its group. CaImAn's ``load_CNMF`` sets every key under
``/estimates`` on the Estimates object, so what we add (a dataset and four string attributes) survives a load.

Summary images: ``Cn`` (CaImAn's correlation image, present when the user's script set it) becomes ``corr``;
``mean`` is the temporal mean of CaImAn's own model of the movie, ``A @ mean(C) + b @ mean(f)`` (b @ mean(f)
when C is missing, the first background column when f is missing). On the simulated files it correlates at
0.99999 with the real mean image; the mean over b's columns alone does not (0.5-0.6).
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from roicurate import RoicurateError
from roicurate.rois import RoiSet
from roicurate.scale import set_diameter

NONE = b"NoneType"
FEATURES = ("SNR_comp", "r_values", "cnn_preds")


def already_selected(where, live=False):
    """The message for results after ``select_components``: the rejected components are gone from A."""
    how = ("call roicurate.caiman.curate(cnm) before cnm.estimates.select_components()" if live else
           "run roicurate on the file saved before select_components (e.g. cnmf_refit_evaluated.hdf5), or call "
           "roicurate.caiman.curate(cnm) before select_components")
    return (f"{where}: select_components() was already run (idx_components is None and the rejected components "
            f"were moved to discarded_components), so A holds only the accepted ones; {how}")


def is_none(v):
    """None, or CaImAn's stored stand-in for it."""
    return v is None or (isinstance(v, (bytes, np.bytes_)) and v == NONE)


# gSig is CaImAn's "half size" of a neuron; its default says nothing about the recording. On CaImAn's own output
# (caiman_sim1-3, gSig 4) the labelled cells' masks (A > 0.2 x max) have a median equivalent diameter of 12.3-12.5 px.
DEFAULT_GSIG = [5, 5]
GSIG_TO_DIAMETER = 3.0


def roiset_from_estimates(A, dims, *, b=None, f=None, C=None, Cn=None, idx_components=None, selected=False,
                          features=None, origin=None, path="", where="estimates"):
    """A RoiSet from CaImAn's arrays (one code path for files and live objects).

    ``A`` is pixels x K (scipy sparse or dense), ``dims`` the frame. ``selected``: select_components() ran, so
    every component in A is an accepted one."""
    if is_none(A):
        raise RoicurateError(f"{where}: has no spatial components (estimates.A is None)")
    if is_none(dims) or len(np.ravel(dims)) != 2:
        raise RoicurateError(f"{where}: dims is {None if is_none(dims) else tuple(np.ravel(dims))}; "
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
    if not is_none(Cn) and np.shape(Cn) == dims:
        images["corr"] = np.asarray(Cn, np.float32)
    mean = _mean_image(A, b, f, C, npixel)
    if mean is not None:
        images["mean"] = mean.reshape(dims, order="F").astype(np.float32)
    accepted = None
    if selected:
        accepted = np.ones(K, bool)
    elif not is_none(idx_components) and np.ndim(idx_components) == 1:
        idx = np.asarray(idx_components, np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= K):
            raise RoicurateError(f"{where}: idx_components points past the {K} components")
        accepted = np.zeros(K, bool)
        accepted[idx] = True
    feats = {}
    for name, v in (features or {}).items():
        if not is_none(v) and np.ndim(v) == 1 and len(v) == K:
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
    if is_none(b) or np.ndim(b) not in (1, 2) or np.shape(b)[0] != npixel:
        return None
    b = b.toarray() if sp.issparse(b) else np.asarray(b, np.float64).reshape(npixel, -1)
    if is_none(f) or np.ndim(f) != 2 or np.shape(f)[0] != b.shape[1]:
        return b[:, 0]
    mean = b @ np.asarray(f, np.float64).mean(1)
    if not is_none(C) and np.ndim(C) == 2 and np.shape(C)[0] == A.shape[1]:
        mean = mean + A @ np.asarray(C, np.float64).mean(1)
    return mean


def import_h5py():
    """h5py, imported when a file is read (not when the plugin is registered)."""
    import h5py
    return h5py


def open_hdf5(path, mode="r"):
    h5py = import_h5py()
    if not h5py.is_hdf5(str(path)):
        raise RoicurateError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise RoicurateError(f"{path}: cannot open ({e})") from None


def read_value(group, key):
    """A dataset's value, a sparse matrix for a CSC group, or None (missing or 'NoneType')."""
    h5py = import_h5py()
    obj = group.get(key)
    if obj is None:
        return None
    if isinstance(obj, h5py.Group):
        if all(k in obj for k in ("data", "indices", "indptr", "shape")):
            shape = tuple(int(s) for s in obj["shape"][()])
            return sp.csc_matrix((obj["data"][()], obj["indices"][()], obj["indptr"][()]), shape=shape)
        return None
    v = obj[()]
    return None if is_none(v) else v


def _time_mean(group, key, block=1 << 24):
    """The row means of a K x T dataset as a K x 1 array (its own time mean), read about ``block`` bytes at a
    time (rows, or columns of every row when one row block would be bigger): C can be GBs and only its mean is
    needed (for the mean-image stand-in)."""
    obj = group.get(key)
    if not isinstance(obj, import_h5py().Dataset) or obj.ndim != 2 or obj.dtype.kind not in "fiu":
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


def is_selected(est):
    """select_components() ran: idx_components is None and discarded_components is a group."""
    h5py = import_h5py()
    idx = est.get("idx_components")
    return isinstance(est.get("discarded_components"), h5py.Group) and \
        (idx is None or (isinstance(idx, h5py.Dataset) and is_none(idx[()])))


def load_estimates(path):
    """Every ``/estimates`` entry of a ``cnm.save()`` file as attributes of a namespace (None for 'NoneType',
    scipy CSC for A and other sparse groups, str attributes as values): what ``load_CNMF`` would give, without
    CaImAn. ``discarded_components`` stays None (not loaded)."""
    h5py = import_h5py()
    with open_hdf5(path) as f:
        est = f.get("estimates")
        if not isinstance(est, h5py.Group):
            raise RoicurateError(f"{path}: no /estimates group (not written by CaImAn's cnm.save())")
        ns = SimpleNamespace(**{k: None if k == "discarded_components" else read_value(est, k) for k in est})
        for k, v in est.attrs.items():
            setattr(ns, k, v)
        if isinstance(est.get("discarded_components"), h5py.Group):
            ns.discarded_components = SimpleNamespace(A=read_value(est["discarded_components"], "A"))
    return ns




def read_file(path):
    """The RoiSet of a ``cnm.save()`` file: A, dims (from /estimates, /dims or /params/data), gSig, the images'
    ingredients (C only as its time mean) and CaImAn's own verdict and scores."""
    h5py = import_h5py()
    path = Path(path)
    with open_hdf5(path) as f:
        est = f.get("estimates")
        if not isinstance(est, h5py.Group) or "A" not in est:
            raise RoicurateError(f"{path}: no estimates/A (not a CaImAn file written by cnm.save())")
        if not isinstance(est["A"], h5py.Group):
            raise RoicurateError(f"{path}: estimates/A is {'None' if is_none(est['A'][()]) else 'not a sparse matrix'}")
        try:
            A = read_value(est, "A")
        except (ValueError, TypeError) as e:
            raise RoicurateError(f"{path}: estimates/A is not a valid sparse matrix ({e})") from None
        if A is None:
            raise RoicurateError(f"{path}: estimates/A has no data/indices/indptr/shape")
        dims = _dims(f, est)
        gsig = read_value(f["params/init"], "gSig") if "params/init" in f else None
        arrays = {k: read_value(est, k) for k in ("b", "f", "Cn", "idx_components")}
        arrays["C"] = _time_mean(est, "C")
        features = {k: read_value(est, k) for k in FEATURES}
        selected = is_selected(est)
    origin = {"roi_file": str(path),
              "gSig": None if gsig is None else [int(g) for g in np.ravel(gsig)]}
    return roiset_from_estimates(A, dims, **arrays, selected=selected, features=features, origin=origin,
                                 path=str(path), where=str(path))


def _dims(f, est):
    """The frame: ``/estimates/dims``, else ``/dims``, else ``/params/data/dims`` (None when none says)."""
    return next((d for d in (read_value(est, "dims"), read_value(f, "dims"),
                             read_value(f["params/data"], "dims") if "params/data" in f else None)
                 if d is not None), None)


def file_fingerprint(path):
    """``roicurate.rois.roi_fingerprint`` of a ``cnm.save()`` file's components: A's columns (data, indices,
    indptr, shape, as ``read_file`` builds the RoiSet) over dims, reading only A and dims."""
    from roicurate.rois import roi_fingerprint
    h5py = import_h5py()
    with open_hdf5(path) as f:
        est = f.get("estimates")
        if not isinstance(est, h5py.Group) or not isinstance(est.get("A"), h5py.Group):
            raise RoicurateError(f"{path}: no estimates/A (not a CaImAn file written by cnm.save())")
        try:
            A = read_value(est, "A")
        except (ValueError, TypeError) as e:
            raise RoicurateError(f"{path}: estimates/A is not a valid sparse matrix ({e})") from None
        dims = _dims(f, est)
    return roi_fingerprint(roiset_from_estimates(A, dims, where=str(path)))


def estimates_of(obj):
    """The Estimates of a live CNMF / OnACID (``.estimates``), or ``obj`` itself; a one-line error for anything
    else."""
    est = getattr(obj, "estimates", obj)
    if not hasattr(est, "A") or not hasattr(est, "dims"):
        raise RoicurateError(f"{type(obj).__name__}: not a CaImAn CNMF or Estimates object (needs .A and .dims)")
    return est


def read_object(obj):
    """The RoiSet of a live CNMF or Estimates object, built like a file's (CaImAn itself is never imported)."""
    est = estimates_of(obj)
    if getattr(est, "idx_components", None) is None and getattr(est, "discarded_components", None) is not None:
        raise RoicurateError(already_selected("cnm.estimates", live=True))
    get = lambda name: getattr(est, name, None)
    return roiset_from_estimates(
        est.A, est.dims, b=get("b"), f=get("f"), C=get("C"), Cn=get("Cn"), idx_components=get("idx_components"),
        features={k: get(k) for k in FEATURES}, where="cnm.estimates",
        path="<in memory>", origin={"gSig": _gsig(getattr(obj, "params", None))})


def _gsig(params):
    """gSig from a CNMFParams (``params.init['gSig']``) or a plain dict of groups; None when absent."""
    if params is None:
        return None
    try:
        init = params.init if hasattr(params, "init") else params["init"]
        g = init["gSig"]
    except (KeyError, TypeError, AttributeError):
        return None
    return None if g is None else [int(v) for v in np.ravel(g)]
