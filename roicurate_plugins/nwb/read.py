"""Reading an NWB file's ROI tables (see the package docstring): the file opened with pynwb after an h5py precheck,
its PlaneSegmentations (units: one per table, one per z of a voxel mask), their masks (nwb/masks.py), summary
images and the pipeline's own verdict, as a RoiSet."""
import contextlib
import re
from pathlib import Path

import numpy as np

from roicurate import RoicurateError
from roicurate.rois import RoiSet
from roicurate.sources import exception_line
from roicurate_plugins.nwb.masks import array, coords, frame, masks, ragged
from roicurate_plugins.nwb.shared import BACKUP_TAG, MODULE, SEP, has_hdf5_signature, pynwb, split_unit

IMAGE_NAMES = {"meanImg": "mean", "meanImgE": "mean_enhanced", "Vcorr": "corr", "max_proj": "max",
               "meanImg_chan2": "mean_chan2", "local_correlations": "corr", "Cn": "corr", "correlation_image": "corr",
               "mean_image": "mean", "mean": "mean", "max": "max", "max_projection": "max"}
CAIMAN_COLUMNS = {"r", "snr", "accepted", "rejected"}     # what CaImAn's save_NWB always adds


def _precheck(path):
    """With h5py, before pynwb builds anything: the file opens, and no PlaneSegmentation is empty (pynwb cannot even
    read a table that never got a column)."""
    import h5py
    found = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.__setitem__(name, len(obj["id"]) if "id" in obj else 0) if
                         obj.attrs.get("neurodata_type") in ("PlaneSegmentation", b"PlaneSegmentation") else None)
    except Exception as e:
        raise RoicurateError(f"{path}: cannot be opened, truncated or corrupt? ({exception_line(e)})") from None
    empty = [k for k, n in found.items() if n == 0]
    if empty:
        raise RoicurateError(f"{path}: {empty[0]} has no ROIs (the PlaneSegmentation is empty); nothing to curate")


@contextlib.contextmanager
def open_nwb(path, mode="r"):
    """An open NWBFile; every way a file can be broken becomes one line naming it."""
    mod = pynwb()
    path = Path(path)
    if not path.is_file():
        raise RoicurateError(f"{path}: does not exist")
    if not has_hdf5_signature(path):
        raise RoicurateError(f"{path}: not an HDF5 file (truncated or not NWB)")
    _precheck(path)
    try:
        io = mod.NWBHDF5IO(str(path), mode, load_namespaces=True)
    except Exception as e:
        raise RoicurateError(f"{path}: cannot be opened as an NWB file ({exception_line(e)})") from None
    try:
        try:
            nwb = io.read()
        except Exception as e:
            raise RoicurateError(f"{path}: cannot be read as an NWB file, truncated or corrupt? ({exception_line(e)})") \
                from None
        yield nwb
    finally:
        with contextlib.suppress(Exception):
            io.close()


def plane_segmentations(nwb):
    """[(``module/ImageSegmentation/PlaneSegmentation``, module, PlaneSegmentation)] of every processing module
    but roicurate's."""
    return [found for mname, mod in nwb.processing.items() if mname != MODULE
            for found in plane_segmentations_of(mod)]


def plane_segmentations_of(mod):
    """The same for one processing module."""
    from pynwb.ophys import ImageSegmentation
    return [(f"{mod.name}/{iname}/{pname}", mod, ps) for iname, seg in mod.data_interfaces.items()
            if isinstance(seg, ImageSegmentation) for pname, ps in seg.plane_segmentations.items()]


def _natural(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _trailing_number(name):
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else None


def background_plane(where, mod, ps):
    """Which of the module's Suite2p ``Backgrounds_<n>`` image sets belongs to the pixel / image mask table ``ps``
    (voxel tables use the mask's z). With one table, or all tables on one imaging plane, and at most one
    ``Backgrounds_<n>``: that one (0 when there is none). With tables on different imaging planes: the number that
    ends the name of the table's imaging plane (``ImagingPlane1`` -> ``Backgrounds_1``) when those numbers tell the
    planes apart and each names an image set; else the place of its imaging plane among the module's tables'
    planes in natural name order (``ImagingPlane``, ``ImagingPlane_1``, ...). Tables sharing one imaging plane while
    the module holds several image sets: one line (which set is theirs is unknown)."""
    numbers = sorted(int(n[len("Backgrounds_"):]) for n in mod.data_interfaces
                     if re.fullmatch(r"Backgrounds_\d+", n))
    tables = [t for _, _, t in plane_segmentations_of(mod)]
    planes = sorted({t.imaging_plane.name for t in tables}, key=_natural)
    own = ps.imaging_plane.name
    if len(planes) == 1:
        if len(numbers) <= 1:
            return numbers[0] if numbers else 0
        if len(tables) > 1:
            raise RoicurateError(f"{where}: {len(tables)} ROI tables share the imaging plane {own} and the module holds "
                                 f"{len(numbers)} Backgrounds_<n> image sets: which is this table's is unknown (give "
                                 f"each table its own imaging plane)")
    ends = [_trailing_number(p) for p in planes]
    if None not in ends and len(set(ends)) == len(ends) and set(ends) <= set(numbers):
        return _trailing_number(own)
    return planes.index(own)


def _summary_images(mod, plane):
    """{roicurate name: image} from the Images containers of ``mod``: Suite2p's Backgrounds_<plane>, any other."""
    from pynwb.base import Images
    out = {}
    for name, obj in mod.data_interfaces.items():
        if not isinstance(obj, Images) or (name.startswith("Backgrounds_") and name != f"Backgrounds_{plane}"):
            continue
        for iname, img in obj.images.items():
            key = IMAGE_NAMES.get(iname)
            if key is None or key in out:
                continue
            try:
                a = np.asarray(img.data[()] if hasattr(img.data, "shape") else img.data)
            except Exception:
                continue
            if a.ndim == 2 and a.dtype.kind in "fiu" and a.size and np.isfinite(a).all():
                out[key] = a.astype(np.float32)
    return out


def pipeline_of(ps, mod):
    """'suite2p', 'caiman' or '' (unknown) from what the producing pipeline writes."""
    cols = set(ps.colnames)
    if "iscell" in cols or any(n.startswith("Backgrounds_") for n in mod.data_interfaces):
        return "suite2p"
    if "image_mask" in cols and (CAIMAN_COLUMNS <= cols or "keep" in cols):
        return "caiman"
    return ""


def units_of(path, nwb):
    """[(unit table path, PlaneSegmentation path, z or None)] of a file."""
    out = []
    for ps_path, _, ps in plane_segmentations(nwb):
        if "voxel_mask" in ps.colnames and "pixel_mask" not in ps.colnames and "image_mask" not in ps.colnames:
            fields, _ = ragged(f"{path}{SEP}{ps_path}", ps, "voxel_mask")
            zs = np.unique(coords(f"{path}{SEP}{ps_path}", fields[2], "voxel_mask"))
            out += [(f"{ps_path}/plane{int(z)}", ps_path, int(z)) for z in zs]
        else:
            out.append((ps_path, ps_path, None))
    return out


def _pick(path, table, nwb):
    units = units_of(path, nwb)
    if not units:
        raise RoicurateError(f"{path}: no PlaneSegmentation in its processing modules (no ROIs to curate)")
    if table is None:
        if len(units) > 1:
            raise RoicurateError(f"{path}: holds {len(units)} ROI tables; name one as "
                                 f"{path}{SEP}{units[0][0]} (or pass the file to curate them all)")
        return units[0]
    found = [u for u in units if u[0] == table]
    if found:
        return found[0]
    raise RoicurateError(f"{path}: has no ROI table {table} (it has: {', '.join(u[0] for u in units)})")


def read_unit(unit):
    """The RoiSet of one unit, and what the writer needs to find its rows again (``origin``)."""
    path, table = split_unit(unit)
    if path.stem.endswith(BACKUP_TAG):
        raise RoicurateError(f"{path}: this is roicurate's backup of {path.stem[:-len(BACKUP_TAG)]}{path.suffix}; "
                             f"run roicurate on that file instead")
    where = str(unit)
    with open_nwb(path) as nwb:
        name, ps_path, z = _pick(path, table, nwb)
        mod = nwb.processing[ps_path.split("/")[0]]
        ps = next(p for pp, _, p in plane_segmentations(nwb) if pp == ps_path)
        n_rows = len(ps.id)
        pipeline = pipeline_of(ps, mod)
        rows = np.arange(n_rows)
        if z is not None:
            fields, ends = ragged(where, ps, "voxel_mask")
            zz = coords(where, fields[2], "voxel_mask")
            first = np.concatenate([[0], ends[:-1]])
            rows = np.flatnonzero([len(zz[a:b]) and zz[a] == z for a, b in zip(first, ends)])
        feats = {k: v for k, col in (("r_values", "r"), ("SNR_comp", "snr"), ("cnn_preds", "cnn"))
                 if (v := _column_values(where, ps, col, n_rows)) is not None}
        if pipeline == "caiman" and "r_values" in feats and "SNR_comp" in feats:
            rows = rows[~(np.isnan(feats["r_values"][rows]) & np.isnan(feats["SNR_comp"][rows]))]   # backgrounds
        if not len(rows):
            raise RoicurateError(f"{where}: has no ROIs (the PlaneSegmentation is empty); nothing to curate")
        images = _summary_images(mod, background_plane(where, mod, ps) if z is None else z)
        shape, frame_source = frame(where, ps, nwb, images)
        images = {k: v for k, v in images.items() if v.shape == shape}
        ys, xs, ws = masks(where, ps, shape, pipeline, rows)
        accepted, feats2 = _verdict(where, ps, n_rows, rows)
    feats = {k: v[rows] for k, v in feats.items()}
    feats.update(feats2)
    rs = RoiSet.from_pixels(shape, ys, xs, ws, images=images, pipeline_accepted=accepted, features=feats,
                            source="nwb", pipeline=pipeline, path=where, frame_source=frame_source,
                            origin={"roi_file": str(path), "table": name, "plane_segmentation": ps_path, "z": z,
                                    "rows": rows.tolist(), "ps_rows": n_rows})
    rs.validate(where)                   # empty masks, bad weights, pixels outside the frame
    return rs


def _column_values(where, ps, name, n):
    a = None if name not in ps.colnames else array(where, ps[name], name)
    return a.astype(np.float64) if a is not None and a.ndim == 1 and len(a) == n and a.dtype.kind in "fiub" else None


def _verdict(where, ps, n, rows):
    """(the pipeline's accepted (rows,) bool or None, features): Suite2p's iscell, CaImAn's keep / accepted."""
    if "iscell" in ps.colnames:
        a = array(where, ps["iscell"], "iscell")
        if a.shape != (n, 2) or a.dtype.kind not in "fiub" or not np.isfinite(a.astype(np.float64)).all():
            raise RoicurateError(f"{where}: iscell is not a finite ({n}, 2) [is_cell, probability] column "
                                 f"(shape {a.shape}, {a.dtype})")
        a = a.astype(np.float64)[rows]
        return a[:, 0] > 0.5, {"suite2p_prob": a[:, 1].copy()}
    for name in ("keep", "accepted"):
        v = _column_values(where, ps, name, n)
        if v is not None:
            return v[rows] > 0.5, {}
    return None, {}
