"""CaImAn source: the HDF5 file written by ``cnm.save()`` and, for ``roicurate.caiman.curate``, a live CNMF or
Estimates object; registered as ``caiman``. CaImAn itself is never imported.

Reading (both kinds, one RoiSet builder): ``caiman.read``. The one mapping of a verdict onto CaImAn's fields and
attributes, for the file and the live object alike: ``caiman.verdict``. The write protocol for the file (backup,
hand edits, atomic replace, revert): ``caiman.write``.
"""
from pathlib import Path

import numpy as np

from roicurate import RoicurateError
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.rois import roi_fingerprint
from roicurate.sources import Source
from roicurate_plugins.caiman.read import estimates_of, load_estimates, open_hdf5, read_file, read_object, read_value
from roicurate_plugins.caiman.verdict import store_on_object, verdict
from roicurate_plugins.caiman.write import (BACKUP_TAG, ROI_ATTR, backup_path, check_writable, is_backup,
                                           read_recorded, revert_file, write_file)

__all__ = ["CaimanSource", "load_estimates"]


class CaimanSource(Source):
    name = "caiman"
    description = "a CaImAn .hdf5 written by cnm.save()"
    crop = CropSpec(size=50, channels=("mask",), binarize=0.2)
    display_name, default_model, default_arch = "CaImAn", "caiman-cnn2", "cnn2"

    def detect(self, path):
        p = Path(path)
        return p.suffix.lower() in (".hdf5", ".h5") and p.is_file()

    def read(self, path):
        path = Path(path)
        if is_backup(path):
            raise RoicurateError(f"{path}: this is roicurate's backup of "
                                 f"{path.stem[: -len(BACKUP_TAG)]}{path.suffix}; run roicurate on that file instead")
        return read_file(path)

    def check_writable(self, path, force=False):
        """Everything ``write`` needs, checked before anything is written (and again under the lock)."""
        return check_writable(path, force)

    def write(self, path, roiset, curation, force=False, as_cnn_preds=False, **options):
        """Under the folder's lock: verify (or make) the backup, an independent copy; keep hand edits beside; write
        the verdict into a temp copy of the file, fsync, ``os.replace``. The backup's sha256 and the hash of
        everything roicurate does not write go into the new file's attributes. A failure undoes every step."""
        return write_file(path, roiset, curation, force=force, as_cnn_preds=as_cnn_preds)

    def recorded(self, path):
        return read_recorded(path)

    def original_verdict(self, path, roiset):
        backup = backup_path(path)
        found = None
        if backup.exists():          # only these datasets: the backup also holds the whole movie model (GBs)
            with open_hdf5(backup) as f:
                est = f.get("estimates")
                found = {k: None if est is None else read_value(est, k)
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
        return backup_path(path)

    def revert(self, path, force=False):
        """Restore the verified backup byte for byte (through a temp copy whose sha256 is checked), then remove it."""
        return revert_file(path, force)

    # ---- a live CNMF / Estimates (roicurate.caiman.curate) ---------------------------------------------------
    def roiset_from_object(self, obj):
        """The RoiSet of a CNMF / OnACID (``.estimates``) or an Estimates, built as a file's is; a one-line error
        for anything else, or for results after ``select_components``."""
        return read_object(obj)

    def apply_to_object(self, obj, curation, as_cnn_preds=False):
        """Set ``curation`` on the object's Estimates with the fields and attributes ``write`` puts in the file, so
        that ``cnm.save()`` stores the same verdict (``as_cnn_preds``: also ``cnn_preds``)."""
        v = verdict(curation, as_cnn_preds)
        v.attrs[ROI_ATTR] = roi_fingerprint(read_object(obj))      # what cnm.save() then stores, as write() does
        store_on_object(estimates_of(obj), v)


@hookimpl
def register_sources(register):
    register(CaimanSource())
