"""What a pipeline source is, and the crash-safe file operations every writer uses.

Rules for writers: keep the user's original once (a backup a second run never overwrites), write through a
temporary file in the same folder + ``os.replace``, and check everything before the first byte is written.
"""
import os
import shutil
import tempfile
from pathlib import Path

from roicurate import RoicurateError


class Source:
    """A pipeline format. Subclasses set ``name``, ``description`` and ``crop`` (the default CropSpec of the
    pipeline's models) and implement the methods below."""

    name = ""
    description = ""
    crop = None

    def detect(self, path) -> bool:
        """True if ``path`` is this pipeline's output (a folder or file roicurate should claim)."""
        raise NotImplementedError

    def expand(self, path) -> list:
        """The units ``path`` holds, each read and written on its own (e.g. every planeN of a suite2p/ folder)."""
        return [path]

    def read(self, path):
        """Return a RoiSet, or raise RoicurateError with a one-line reason."""
        raise NotImplementedError

    def check_writable(self, path, force=False):
        """Raise RoicurateError if ``write`` could not complete (read-only folder, edited since last run ...);
        ``force`` overrides the checks that protect hand edits, never the ones that protect the original."""

    def write(self, path, roiset, curation, force=False, **options):
        """Write the verdict where the pipeline's own tools read it, keeping the original.
        ``options`` are format-specific switches from the CLI (e.g. ``as_cnn_preds`` for CaImAn)."""
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
        """Called once after every unit in ``paths`` was written (e.g. rebuild Suite2p's combined/ view)."""

    def revert(self, path):
        """Restore the pipeline's original verdict byte for byte."""
        raise NotImplementedError

    def recording(self, path):
        """The recording ``path`` belongs to, when nothing else names it: units of one recording stay on the same
        side of a train/validation split."""
        return str(path)

    def recorded(self, path):
        """What roicurate recorded when it curated ``path``: ``{"model": name or card path, "sha256", "threshold",
        "diameter": (px, source) of the reference cell diameter it used or None, "intact": the pipeline's verdict
        still holds exactly what roicurate wrote}``; None if never curated."""
        return None

    def original_verdict(self, path, roiset):
        """(accepted (N,) bool or None, score (N,) float or None): the pipeline's own verdict and score, from
        roicurate's backup when ``apply`` has replaced them."""
        return roiset.pipeline_accepted, None


def check_dir_writable(folder):
    """Create and delete a probe file: os.access lies on some mounts and for root."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".roicurate-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RoicurateError(f"{folder}: folder is not writable ({e.strerror})") from None


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, then ``os.replace`` it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_dir(folder):
    """Make the rename itself durable (a crash right after os.replace must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_copy(src, dst):
    """Byte-for-byte copy of ``src`` to ``dst`` through a temp file, streamed (CaImAn files can be GBs)."""
    def write(out):
        with open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    atomic_write(dst, write)


def backup_once(original, backup):
    """Copy ``original`` to ``backup`` unless a backup already exists (a second run keeps the first original)."""
    if not os.path.exists(backup):
        atomic_copy(original, backup)
