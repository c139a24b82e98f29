"""A fingerprint of an HDF5 file's content apart from what roicurate writes into it (CaImAn .hdf5, NWB): the
writers record it with the backup, so a later run can tell "only roicurate's fields changed" from "the pipeline
saved a new file under this name" without comparing GBs byte for byte."""
import hashlib

import numpy as np


def content_sha256(path, skip, ignore_attr, keep_member=None, block=1 << 24):
    """sha256 over every object's name, attributes, dtype, shape and values, in sorted order, except the objects
    ``skip(name)`` leaves out and the attributes ``ignore_attr(name, key)``; with ``keep_member(name, key)`` each
    group's member names (those it keeps) count too. Datasets are read a block of rows at a time, so a file of GBs
    is hashed in little memory."""
    import h5py
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
        for name in [""] + sorted(n for n in names if not skip(n)):
            obj = f[name] if name else f
            attrs = sorted((k, repr(v)) for k, v in obj.attrs.items() if not ignore_attr(name, k))
            h.update(repr((name, attrs)).encode())
            if not isinstance(obj, h5py.Dataset):
                if keep_member is not None:
                    h.update(repr(sorted(k for k in obj if keep_member(name, k))).encode())
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
