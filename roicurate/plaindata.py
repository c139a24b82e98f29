"""Suite2p's object arrays (``stat.npy``, ``ops.npy``, a classifier file) read as plain data: users run roicurate
on data others shared (DANDI, a collaborator's drive), and ``np.load(allow_pickle=True)`` runs whatever code a
pickle names. ``load_npy`` unpickles with an unpickler that only rebuilds numpy arrays, dtypes and scalars,
builtin containers, dates and paths; anything else is refused in one line naming the file."""
import pickle

import numpy as np

from roicurate.common import RoicurateError

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "slice"),
    ("builtins", "range"), ("collections", "OrderedDict"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
    ("datetime", "timezone"),                                         # Suite2p 1.x plane_times
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"), ("pathlib", "Path"),
}


class RefusedPickle(RoicurateError):
    pass


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file, where):
        super().__init__(file)
        self.where = where

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType") or (module, name) == ("numpy.dtypes", name):
            return super().find_class(module, name)     # numpy 2 dtype classes
        raise RefusedPickle(f"{self.where}: refused: the pickle references {module}.{name} (not plain data)")

    def persistent_load(self, pid):
        raise RefusedPickle(f"{self.where}: refused: the pickle references a persistent id (not plain data)")


def load_npy(path):
    """np.load for ``.npy`` files, object arrays included, that never runs code from the file: object arrays are
    unpickled by ``_PlainUnpickler``. Raises RefusedPickle (one line) or the usual ValueError/EOFError/OSError."""
    fmt = np.lib.format
    with open(path, "rb") as fp:
        version = fmt.read_magic(fp)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(fp, max_header_size=1 << 20)
        if not dtype.hasobject:
            fp.seek(0)
            return fmt.read_array(fp, allow_pickle=False)
        try:
            return _PlainUnpickler(fp, path).load()
        except RefusedPickle:
            raise
        except pickle.UnpicklingError as e:
            raise ValueError(f"bad pickle ({e})") from None


def npy_shape(path):
    """The shape in a .npy header (nothing unpickled): e.g. the ROI count of stat.npy."""
    fmt = np.lib.format
    with open(path, "rb") as fp:
        version = fmt.read_magic(fp)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        return read_header(fp, max_header_size=1 << 20)[0]
