"""What a pipeline source is, and the crash-safe file operations every writer uses.

Rules for writers: check everything for every unit before the first byte is written; then, per unit, inside
``roicurate.safeio.unit`` (a lock, undo on failure): verify or create the backup of the pipeline's original
(never overwritten, created without replacing), keep hand edits beside the file before replacing it, write
through a temp file in the same folder + ``os.replace``, and record what was written.
"""
import os
import shutil
from pathlib import Path

from roicurate import RoicurateError
from roicurate.safeio import NothingToRevert, atomic_write, create_new, temp_name  # noqa: F401


class Source:
    """A pipeline format. Subclasses set ``name``, ``description``, ``crop`` (the default CropSpec of the
    pipeline's models) and the pipeline's facts below, and implement the methods below. A source that reads a
    shared format (NWB) leaves the facts empty: the pipeline that found the ROIs (``RoiSet.pipeline``) names them."""

    name = ""
    description = ""
    crop = None
    display_name = ""        # the pipeline as its users write it: "Suite2p", "CaImAn"
    default_model = None     # the trained model ``apply`` uses for this pipeline's ROIs when --model is left out
    default_arch = None      # the architecture ``train`` uses when --arch is left out
    unit_noun = "file"       # what one unit is called in the totals line ("2 planes, 1 file")

    def detect(self, path) -> bool:
        """True if ``path`` is this pipeline's output (a folder or file roicurate should claim)."""
        raise NotImplementedError

    def expand(self, path) -> list:
        """The units ``path`` holds, each read and written on its own (e.g. every planeN of a suite2p/ folder)."""
        return [path]

    def location(self, unit):
        """The file or folder on disk that holds ``unit`` (a plane folder, a file; ``FILE`` of ``FILE::table``)."""
        return Path(unit)

    def read(self, path):
        """Return a RoiSet, or raise RoicurateError with a one-line reason."""
        raise NotImplementedError

    def check_writable(self, path, force=False):
        """Raise RoicurateError if ``write`` could not complete (read-only folder, edited since last run ...);
        ``force`` overrides the checks that protect hand edits, never the ones that protect the original."""

    def write(self, path, roiset, curation, force=False, **options):
        """Write the verdict where the pipeline's own tools read it, keeping the original (the write protocol in
        this module's docstring). ``options`` are format-specific switches from the CLI (e.g. ``as_cnn_preds`` for
        CaImAn). Returns a note for the user (e.g. where hand edits were kept) or None."""
        raise NotImplementedError

    def check_types_writable(self, path, force=False, redcell=False):
        """Like ``check_writable``, for ``write_types``."""
        raise RoicurateError(f"{path}: roicurate cannot write cell types into {self.name} output "
                             f"(use the Python API: Classifier.predict_proba)")

    def write_types(self, path, roiset, curation, force=False, redcell=False):
        """Write a cell-type model's per-class probabilities (``curation.probabilities``, class names
        ``curation.classes``) beside the pipeline output, never into its cell / not-cell verdict; ``redcell``: also
        the pipeline's own red-cell labels where it has them, keeping the original once."""
        self.check_types_writable(path, force, redcell)

    def finish(self, paths):
        """Called once after every unit in ``paths`` was written (e.g. rebuild Suite2p's combined/ view); returns a
        note for the user or None."""

    def revert(self, path, force=False):
        """Restore the pipeline's original verdict byte for byte, after verifying the backup; refuse to drop hand
        edits unless ``force`` (then they are kept beside the file). Raise NothingToRevert when nothing is
        curated here."""
        raise NotImplementedError

    def recording(self, path):
        """The recording ``path`` belongs to, when nothing else names it: units of one recording stay on the same
        side of a train/validation split."""
        return str(path)

    def recorded(self, path):
        """What roicurate recorded when it curated ``path``: ``{"model": name or card path, "sha256", "threshold",
        "diameter": (px, source) of the reference cell diameter it used or None, "date": when (ISO 8601, or None),
        "intact": the pipeline's verdict
        still holds exactly what roicurate wrote}``; None if never curated."""
        return None

    def original_verdict(self, path, roiset):
        """(accepted (N,) bool or None, score (N,) float or None): the pipeline's own verdict and score, from
        roicurate's backup when ``apply`` has replaced them."""
        return roiset.pipeline_accepted, None


def read_units(paths, images=(), pipeline=None):
    """[(source, unit, RoiSet)] for every unit under ``paths``: the source whose ``detect`` claims a path expands it
    into its units (e.g. every planeN of a suite2p/ folder) and reads each one. ``images`` ([(name, file)], from
    ``--add-image``) are added to every RoiSet; ``pipeline``: ROIs another pipeline found are a one-line error.
    Everything is read before anything is returned, so a bad unit stops a batch before its first write."""
    from roicurate.images import add_images
    from roicurate.plugins import source_for
    out = []
    for path in map(str, paths):
        src = source_for(path)
        for unit in src.expand(path):
            rs = src.read(unit)
            if pipeline and rs.pipeline != pipeline:
                raise RoicurateError(f"{unit}: is {rs.pipeline or 'unknown pipeline'} output, but --pipeline "
                                     f"{pipeline} was given")
            rs.source = src.name
            rs.path = rs.path or str(unit)
            rs.recording = rs.recording or str(src.recording(unit))
            out.append((src, unit, add_images(rs, images)))
    return out


def check_dir_writable(folder):
    """Create and delete a probe file: os.access lies on some mounts and for root."""
    probe = temp_name(Path(folder) / ".roicurate-probe")
    try:
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise RoicurateError(f"{folder}: folder is not writable ({e.strerror})") from None



def atomic_copy(src, dst):
    """Byte-for-byte copy of ``src`` to ``dst`` through a temp file, streamed (CaImAn files can be GBs)."""
    def write(out):
        with open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    atomic_write(dst, write)


def backup_once(original, backup):
    """Copy ``original`` to ``backup`` unless a backup already exists (a second run keeps the first original);
    created without replacing, so two runs cannot both make it."""
    try:
        create_new(backup, copy_from=original)
    except FileExistsError:
        pass
