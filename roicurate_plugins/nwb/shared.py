"""The names NWB reading and writing share (nwb/read.py, nwb/write.py import them; this module imports neither):
roicurate's processing module, the backup beside a file, units named ``FILE::table``, the HDF5 signature test, and
pynwb imported on demand (an optional extra)."""
from pathlib import Path

from roicurate import RoicurateError

SEP = "::"
MODULE = "roicurate"                  # our processing module (never read as ROIs)
BACKUP_TAG = ".roicurate-backup"      # NAME.nwb -> NAME.roicurate-backup.nwb
INSTALL = "pip install 'roicurate[nwb]'"


def pynwb():
    """pynwb, or the one line that says how to install it."""
    try:
        import pynwb as module
    except ImportError:
        raise RoicurateError(f"reading NWB files needs pynwb: {INSTALL}") from None
    return module


def backup_of(path):
    """Where the original of ``path`` is kept: ``NAME.roicurate-backup.nwb`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + BACKUP_TAG + path.suffix)


def split_unit(unit):
    """(file Path, table path or None) of a unit: ``FILE`` or ``FILE::module/ImageSegmentation/PlaneSegmentation``."""
    text = str(unit)
    if SEP in text:
        file, _, table = text.rpartition(SEP)
        return Path(file), table
    return Path(text), None


def has_hdf5_signature(path):
    """The HDF5 superblock signature, where HDF5 looks for it (a user block may precede it)."""
    import h5py
    try:
        return h5py.is_hdf5(path)
    except OSError:
        return False
