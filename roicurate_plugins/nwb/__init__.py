"""NWB source: every PlaneSegmentation of an NWB file's processing modules, curated in place.

Read (pynwb, an optional extra: ``pip install 'roicurate[nwb]'``): the masks (``pixel_mask``, ``voxel_mask`` one
unit per z plane, or ``image_mask``; weights kept), the frame size (``image_mask``'s shape, else the ``dimension``
of the reference or acquired image series of the imaging plane, else the summary images', else the extent of the
pixel / voxel masks, said in apply's summary line), the module's summary
images (Suite2p's ``Backgrounds_<plane>``: meanImg, Vcorr, max_proj, the plane found by ``read.background_plane``
from the table's imaging plane; CaImAn's correlation / mean images) and the
pipeline's own verdict: Suite2p's ``iscell`` column, CaImAn's ``keep`` (idx_components) or ``accepted``. The
pipeline is read from the file: ``iscell`` or ``Backgrounds_*`` is Suite2p's ``save_nwb``; ``image_mask`` with
``r`` / ``snr`` / ``accepted`` / ``rejected`` (or ``keep``) is CaImAn's ``save_NWB``.

A pixel / voxel mask is ``[row, column, weight]`` as Suite2p writes it; ``dimension`` is ``[rows, columns]``.
CaImAn's ``save_NWB`` stores ``A[:, i].reshape(dims)`` in C order though A is in Fortran order: the mask is put
back in Fortran order, and its background components (``r`` and ``snr`` both NaN) are left out. Units: the file
when it holds one ROI table, else ``FILE::module/ImageSegmentation/PlaneSegmentation`` (``.../planeZ`` per z of a
voxel mask). Reading: nwb/read.py (masks and frame: nwb/masks.py). Writing: nwb/write.py. The names both share:
nwb/shared.py. ``detect`` works without pynwb."""
from roicurate import RoicurateError
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.sources import Source
from roicurate_plugins.nwb import write as nwb_write
from roicurate_plugins.nwb.read import open_nwb, read_unit, units_of
from roicurate_plugins.nwb.shared import SEP, backup_of, has_hdf5_signature, split_unit


class NwbSource(Source):
    name = "nwb"
    description = "an NWB file with PlaneSegmentation tables (Suite2p save_nwb, CaImAn save_NWB)"
    crop = CropSpec(size=64, channels=("mask",), binarize=0.0)   # models come from RoiSet.pipeline, per file
    unit_noun = "plane"

    def location(self, unit):
        return split_unit(unit)[0]

    def detect(self, path):
        p = self.location(path)
        return p.suffix.lower() == ".nwb" and p.is_file() and has_hdf5_signature(p)

    def expand(self, path):
        path, table = split_unit(path)
        if table is not None:                      # one table named on the command line: read() checks it
            return [f"{path}{SEP}{table}"]
        with open_nwb(path) as nwb:
            units = units_of(path, nwb)
        if not units:
            raise RoicurateError(f"{path}: no PlaneSegmentation in its processing modules (no ROIs to curate)")
        return [str(path)] if len(units) == 1 else [f"{path}{SEP}{u[0]}" for u in units]

    def read(self, path):
        return read_unit(path)

    def recording(self, path):
        return str(split_unit(path)[0])

    def backup_path(self, path):
        return backup_of(split_unit(path)[0])

    def check_writable(self, path, force=False):
        file, table = split_unit(path)
        st = nwb_write.check_writable(file, force, table)
        nwb_write.expect_write(file, table)        # the file's tables: one critical section (nwb/write.py)
        return st

    def write(self, path, roiset, curation, force=False, **options):
        return nwb_write.write_table(*split_unit(path), roiset, curation, force)

    def finish_batch(self, units):
        nwb_write.release_files({split_unit(u)[0] for u in units})

    def revert(self, path, force=False):
        return nwb_write.revert(split_unit(path)[0], force)

    def recorded(self, path):
        return nwb_write.recorded(*split_unit(path))

    def original_verdict(self, path, roiset):
        """The pipeline's own verdict stays in the PlaneSegmentation (roicurate writes its own table beside it)."""
        return roiset.pipeline_accepted, roiset.features.get("suite2p_prob", roiset.features.get("cnn_preds"))


@hookimpl
def register_sources(register):
    register(NwbSource())
