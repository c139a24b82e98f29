"""Reading an NWB PlaneSegmentation's masks and frame size (see nwb.py): ragged ``pixel_mask`` / ``voxel_mask``
columns checked entry by entry, ``image_mask`` arrays (CaImAn's put back in Fortran order), and the frame: what
the file states, else the masks' extent."""
import numpy as np

from roicurate import RoicurateError
from roicurate.sources import exception_line

MAX_PIXELS = 1 << 31
MASK_EXTENT = "the masks' extent"


def array(where, col, what):
    try:
        return np.asarray(col.data[()] if hasattr(col.data, "shape") else col.data)
    except Exception as e:
        raise RoicurateError(f"{where}: {what} cannot be read ({exception_line(e)})") from None


def ragged(where, ps, name):
    """(flat structured or 2-D array of entries, end offsets) of a ragged mask column, checked."""
    col = ps[name]
    ends = array(where, col, f"{name}_index") if hasattr(col, "target") else None
    flat = array(where, col.target if ends is not None else col, name)
    if ends is None or ends.ndim != 1 or ends.dtype.kind not in "iu":
        raise RoicurateError(f"{where}: {name} has no valid index (not a ragged NWB column)")
    ends = ends.astype(np.int64)
    if len(ends) and (ends[0] < 0 or np.any(np.diff(ends) < 0) or ends[-1] != len(flat)):
        raise RoicurateError(f"{where}: {name}_index does not describe the {len(flat)} mask entries")
    fields = [flat[n] for n in flat.dtype.names] if flat.dtype.names else list(flat.T) if flat.ndim == 2 else []
    if len(fields) < (4 if name == "voxel_mask" else 3) or any(np.asarray(a).dtype.kind not in "fiu" for a in fields):
        raise RoicurateError(f"{where}: {name} entries are not numeric (row, column, [z,] weight) tuples")
    return [np.asarray(a) for a in fields], ends


def coords(where, a, what):
    a = np.asarray(a)
    if a.dtype.kind == "f" and (not np.isfinite(a).all() or np.any(a != np.round(a))):
        raise RoicurateError(f"{where}: {what} holds non-integer pixel coordinates")
    if len(a) and (a.min() < 0 or a.max() >= MAX_PIXELS):
        raise RoicurateError(f"{where}: {what} holds pixel coordinates outside any frame ({a.min()}..{a.max()})")
    return a.astype(np.int64)


def frame(where, ps, nwb, images):
    """((rows, columns) of the imaging frame, where it came from: "" when the file states it (``image_mask``'s
    shape, the ``dimension`` of an image series of the plane, the summary images' shape), else the masks'
    extent (valid NWB may hold pixel / voxel masks and nothing else: the masks bound the frame)."""
    if "image_mask" in ps.colnames:
        shape = getattr(ps["image_mask"].data, "shape", None)
        if shape is None or len(shape) != 3:
            raise RoicurateError(f"{where}: image_mask is not an (ROIs, rows, columns) array")
        return (int(shape[1]), int(shape[2])), ""
    series = list(ps.reference_images.values()) if hasattr(ps.reference_images, "values") else \
        list(ps.reference_images or [])
    series += [s for s in nwb.acquisition.values() if getattr(s, "imaging_plane", None) is ps.imaging_plane]
    for s in series:
        dim = getattr(s, "dimension", None)
        if dim is not None and len(dim) >= 2:
            try:
                shape = int(dim[0]), int(dim[1])
            except (TypeError, ValueError):
                continue
            if shape[0] > 0 and shape[1] > 0:
                return shape, ""
    shapes = {np.shape(img) for img in images.values()}
    if len(shapes) == 1:
        return next(iter(shapes)), ""
    return mask_extent(where, ps), MASK_EXTENT


def mask_extent(where, ps):
    """(max row + 1, max column + 1) over every entry of the table's pixel / voxel mask: the smallest frame that
    holds every ROI of the table (all z planes of a voxel mask alike)."""
    name = "pixel_mask" if "pixel_mask" in ps.colnames else "voxel_mask" if "voxel_mask" in ps.colnames else None
    if name is None:
        raise RoicurateError(f"{where}: has no pixel_mask, voxel_mask or image_mask column")
    fields, _ = ragged(where, ps, name)
    y, x = coords(where, fields[0], name), coords(where, fields[1], name)
    if not len(y):
        raise RoicurateError(f"{where}: no frame size (no image series 'dimension', no summary image, and the "
                             f"{name} is empty)")
    return int(y.max()) + 1, int(x.max()) + 1


def masks(where, ps, shape, pipeline, rows):
    """Per-ROI (ys, xs, ws) for ``rows`` of ``ps``; z of a voxel mask is returned separately."""
    if "image_mask" in ps.colnames:
        data, ys, xs, ws = ps["image_mask"].data, [], [], []
        for i in rows:
            try:
                m = np.asarray(data[int(i)])
            except Exception as e:
                raise RoicurateError(f"{where}: image_mask of ROI {i} cannot be read ({exception_line(e)})") from None
            if m.dtype.kind not in "fiub":
                raise RoicurateError(f"{where}: image_mask is not numeric ({m.dtype})")
            r, c = np.nonzero(m)
            w = m[r, c].astype(np.float32)
            if pipeline == "caiman":            # CaImAn: a Fortran-order pixel vector reshaped in C order
                p = r.astype(np.int64) * shape[1] + c
                r, c = p % shape[0], p // shape[0]
                o = np.lexsort((r, c))
                r, c, w = r[o], c[o], w[o]
            ys.append(r), xs.append(c), ws.append(w)
        return ys, xs, ws
    name = "pixel_mask" if "pixel_mask" in ps.colnames else "voxel_mask" if "voxel_mask" in ps.colnames else None
    if name is None:
        raise RoicurateError(f"{where}: has no pixel_mask, voxel_mask or image_mask column")
    fields, ends = ragged(where, ps, name)
    starts = np.concatenate([[0], ends[:-1]])
    y, x = coords(where, fields[0], name), coords(where, fields[1], name)
    w = np.asarray(fields[-1], np.float64)
    sel = [np.arange(starts[i], ends[i]) for i in rows]
    return [y[s] for s in sel], [x[s] for s in sel], [w[s] for s in sel]


