"""What a pipeline source is (``Source``: every method roicurate calls on one, for plugin authors), reading every
unit of a batch before anything is written (``read_units``), and the steps shared by writers whose unit is one file
with a whole-file backup beside it (CaImAn, NWB). The crash-safe file operations themselves are in
``roicurate.safeio``.

Rules for writers: check everything for every unit before the first byte is written; then, per unit, inside
``roicurate.safeio.unit`` (a lock, undo on failure): verify or create the backup of the pipeline's original
(never overwritten, created without replacing), keep hand edits beside the file before replacing it, write
through a temp file in the same folder + ``os.replace``, and record what was written.
"""
import os
from pathlib import Path

from roicurate.common import RoicurateError
from roicurate import safeio
from roicurate.safeio import (atomic_replace, check_free_space, clean_stale_temps, clone_or_copy, create_new,
                              free_name, fsync_dir, pause_after_check, sha256_file, temp_name)


class Source:
    """A pipeline format: what ``roicurate apply``, ``revert``, ``status``, ``review`` and ``train`` call on the
    output of one pipeline. Subclasses set ``name``, ``description``, ``crop`` (the default CropSpec of the
    pipeline's models) and the pipeline's facts below, and implement ``detect`` and ``read`` (a read-only source)
    and, to write verdicts, ``check_writable``, ``write``, ``backup_path`` and ``revert``; every other method has a
    default that fits most formats. A source that reads a shared format (NWB) leaves the facts empty: the pipeline
    that found the ROIs (``RoiSet.pipeline``) names them.

    Callers use only the methods declared here (no ``hasattr`` probes): a source that lacks a capability says so
    through the default (``backup_path`` None: no backup; ``write_types`` and the live-object methods: a one-line
    error)."""

    name = ""
    description = ""
    crop = None
    display_name = ""        # the pipeline as its users write it: "Suite2p", "CaImAn"
    default_model = None     # the trained model ``apply`` uses for this pipeline's ROIs when --model is left out
    default_arch = None      # the architecture ``train`` uses when --arch is left out
    unit_noun = "file"       # what one unit is called in the totals line ("2 planes, 1 file")

    # ---- finding and reading -----------------------------------------------------------------------------------
    def detect(self, path) -> bool:
        """True if ``path`` is this pipeline's output (a folder or file roicurate should claim)."""
        raise NotImplementedError

    def find(self, root) -> list:
        """The paths under the folder ``root`` (itself included) this source claims, for ``--recursive``. Default:
        walk the tree top-down and claim what ``detect`` accepts, without looking inside what was claimed
        (``roicurate.discover.walk_claims``); roicurate's own files and hidden folders are never claimed. Override
        it where a cheaper search exists."""
        from roicurate.discover import walk_claims
        return walk_claims(self, root)

    def expand(self, path) -> list:
        """The units ``path`` holds, each read and written on its own (e.g. every planeN of a suite2p/ folder)."""
        return [path]

    def location(self, unit):
        """The file or folder on disk that holds ``unit`` (a plane folder, a file; ``FILE`` of ``FILE::table``)."""
        return Path(unit)

    def read(self, path):
        """Return a RoiSet, or raise RoicurateError with a one-line reason."""
        raise NotImplementedError

    def recording(self, path):
        """The recording ``path`` belongs to, when nothing else names it: units of one recording stay on the same
        side of a train/validation split."""
        return str(path)

    def review_path(self, unit):
        """Where ``roicurate review`` keeps a person's answers for ``unit`` (roicurate/review_answers.py): in a
        folder unit, ``roicurate_review.json``; beside a file unit, ``NAME.roicurate-review.json``; a unit that is
        one table of a file (``FILE::table``) adds the table's name."""
        where = self.location(unit)
        if where.is_dir():
            return where / "roicurate_review.json"
        table = str(unit)[len(str(where)):].lstrip(":")
        tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in table)
        return where.with_name(where.stem + (f".{tag}" if tag else "") + ".roicurate-review.json")

    # ---- writing a verdict (apply) ------------------------------------------------------------------------------
    def check_writable(self, path, force=False):
        """Raise RoicurateError if ``write`` could not complete (read-only folder, edited since last run ...);
        ``force`` overrides the checks that protect hand edits, never the ones that protect the original.
        ``apply`` calls it for every unit of a batch before the first write; ``write`` verifies again under the
        unit's lock what another process may have changed meanwhile. Default: nothing to check."""

    def write(self, path, roiset, curation, force=False, **options):
        """Write the verdict where the pipeline's own tools read it, keeping the original (the write protocol in
        this module's docstring). ``options`` are format-specific switches from the CLI (e.g. ``as_cnn_preds`` for
        CaImAn). Returns a note for the user (e.g. where hand edits were kept) or None."""
        raise NotImplementedError

    def backup_path(self, unit):
        """Where ``write`` keeps the pipeline's original of ``unit`` (``apply`` and ``status`` name it; ``status``
        says "backup missing" when it is gone), or None for a source that keeps no backup (the default)."""
        return None

    def finish_batch(self, units):
        """Called once after a batch of units was written (``units``: those of this source, in order), for what
        spans several units: Suite2p rebuilds combined/ of every suite2p/ folder written to. Returns a note for the
        user or None. Default: nothing to do."""

    def space_needed(self, unit):
        """(bytes that stay, bytes needed only while it runs) of free space that ``write`` needs on the filesystem
        of ``unit``, or None where that cannot be known. ``apply`` adds up, per filesystem, the bytes every unit of
        a batch keeps (a new backup, records) and the largest temporary need (a temp copy), and refuses a batch
        that cannot fit before its first write. Default, for a unit that is one file with a whole-file backup beside
        it (CaImAn, NWB): a temp copy of the file, and the backup where there is none yet; None for other units."""
        where, backup = Path(self.location(unit)), self.backup_path(unit)
        if backup is None or not where.is_file():
            return None
        size = where.stat().st_size
        return (0 if backup.exists() else size), size + (8 << 20)

    def original_verdict(self, path, roiset):
        """(accepted (N,) bool or None, score (N,) float or None): the pipeline's own verdict and score, from
        roicurate's backup when ``apply`` has replaced them. Default: what ``read`` found (``pipeline_accepted``)."""
        return roiset.pipeline_accepted, None

    def recorded(self, path):
        """What roicurate recorded when it curated ``path``: ``{"model": name or card path, "sha256", "threshold",
        "operating_point" (the card's point that threshold is; None or absent: custom, or an older record),
        "tta": whether the probabilities were averaged over the eight rotations/flips (absent: no),
        "diameter": (px, source) of the reference cell diameter it used or None, "date": when (ISO 8601, or None),
        "intact": the pipeline's verdict still holds exactly what roicurate wrote, and, where the pipeline's own
        verdict stays apart from roicurate's (NWB), "verdict": roicurate's as the file holds it now}``; None if never
        curated (the default)."""
        return None

    def revert(self, path, force=False):
        """Restore the pipeline's original verdict byte for byte, after verifying the backup; refuse to drop hand
        edits unless ``force`` (then they are kept beside the file). Raise NothingToRevert when nothing is
        curated here."""
        raise safeio.NothingToRevert(f"{path}: nothing to revert ({self.name} output is never written)")

    # ---- writing cell types (apply with a cell-type model) --------------------------------------------------------
    def check_types_writable(self, path, force=False, redcell=False):
        """Like ``check_writable``, for ``write_types``. Default: a one-line error (this source writes no cell
        types)."""
        raise RoicurateError(f"{path}: roicurate cannot write cell types into {self.name} output "
                             f"(use the Python API: Classifier.predict_proba)")

    def write_types(self, path, roiset, curation, force=False, redcell=False):
        """Write a cell-type model's per-class probabilities (``curation.probabilities``, class names
        ``curation.classes``) beside the pipeline output, never into its cell / not-cell verdict; ``redcell``: also
        the pipeline's own red-cell labels where it has them, keeping the original once. Default: the error of
        ``check_types_writable``."""
        self.check_types_writable(path, force, redcell)

    # ---- a live object in the user's script (roicurate.caiman.curate) --------------------------------------------
    def roiset_from_object(self, obj):
        """The RoiSet of a pipeline's result object in memory, built as ``read`` builds a file's. Default: a
        one-line error (this source reads files only)."""
        raise RoicurateError(f"{type(obj).__name__}: the {self.name} source cannot curate objects in memory")

    def apply_to_object(self, obj, curation, **options):
        """Set ``curation`` on the object ``roiset_from_object`` read, as ``write`` sets it in a file. Default: the
        error of ``roiset_from_object``."""
        self.roiset_from_object(obj)


def read_units(paths, images=(), pipeline=None):
    """[(source, unit, RoiSet)] for every unit under ``paths``: the source whose ``detect`` claims a path expands it
    into its units (e.g. every planeN of a suite2p/ folder) and reads each one. ``images`` ([(name, file)], from
    ``--add-image``) are added to every RoiSet, and a person's review answers (``RoiSet.human``,
    roicurate/review_answers.py); ``pipeline``: ROIs another pipeline found are a one-line error.
    Everything is read before anything is returned, so a bad unit stops a batch before its first write."""
    from roicurate.images import add_images
    from roicurate.plugins import source_for
    from roicurate.review_answers import attach as attach_answers
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
            attach_answers(src, unit, rs)                  # a person's review answers beat the model's verdict
            out.append((src, unit, add_images(rs, images)))
    return out


def exception_line(e):
    """An exception as the end of a one-line RoicurateError message: its type and the first line of its text (at
    most 200 characters), e.g. ``ValueError: cannot reshape array``; readers use it for a file a library failed on."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def check_dir_writable(folder):
    """Create and delete a probe file: os.access lies on some mounts and for root."""
    probe = temp_name(Path(folder) / ".roicurate-probe")
    try:
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise RoicurateError(f"{folder}: folder is not writable ({e.strerror})") from None


# ---- formats whose unit is one file with a whole-file backup beside it (CaImAn .hdf5, NWB) ----------------------
def settle_without_record(path, backup, recorded, st, original="the pipeline's original"):
    """The cases of a whole-file backup that need no verification; True when one applied. No backup: fine before
    roicurate wrote (``recorded`` false), an error after. A backup but no record: ``st.adopt`` (byte-identical: an
    interrupted first run) or ``st.stale`` (the pipeline saved a new file under this name)."""
    if not backup.exists():
        if recorded:
            raise RoicurateError(f"{backup}: missing, but {path.name} holds roicurate's verdict, so {original} is "
                                 f"not here; nothing changed")
        return True
    if not recorded:
        sha = sha256_file(backup)
        if sha == sha256_file(path):
            st.adopt, st.backup_sha = True, sha
        else:
            st.stale = True
        return True
    return False


def check_whole_file_writable(path, inspect, force, refusals):
    """``check_writable`` of a whole-file backup format: the folder and the file can be written, then the file's
    state ``inspect(path)``; ``refusals(st)`` gives the reasons (one line each, "" for none) that stop a write
    without ``force`` (hand edits, a re-saved file). Returns the state."""
    path = Path(path)
    check_dir_writable(path.parent)
    clean_stale_temps(path.parent)
    safeio.check_replaceable(path)
    st = inspect(path)
    reason = next((r for r in refusals(st) if r), "")
    if reason and not force:
        raise RoicurateError(f"{path}: {reason}")
    return st


def prepare_whole_file(path, backup, st, tx, extra=0):
    """Inside the unit's lock, after ``check_writable`` gave ``st``: check the free space (a temp copy, the backup
    if it is new, kept edits, ``extra`` bytes), set a stale backup aside, keep hand edits beside (``st.edited``),
    make the backup where there is none (``st.backup_sha``). Returns (a temp copy of the file for the caller to
    change and ``atomic_replace``, whether the backup is new, notes for the user)."""
    size = path.stat().st_size
    new_backup = bool(st.stale or not backup.exists())
    check_free_space(path.parent, size * (1 + new_backup + bool(st.edited)) + extra + (8 << 20),
                     f"a temp copy of {path.name}" + (" and its backup" if new_backup else ""))
    pause_after_check()
    notes = []
    if st.stale:                                # the old backup belongs to other data: set aside, kept
        notes.append(set_aside_stale_backup(path, backup, tx))
    if st.edited:
        notes.append(f"{path}: hand edits kept in {keep_beside(path, tx)}")
    if new_backup:
        create_new(backup, copy_from=path)
        tx.created(backup)
        st.backup_sha = sha256_file(backup)
    return temp_copy(path, path, tx), new_backup, notes


def set_aside_stale_backup(path, backup, tx):
    """The backup belongs to an earlier save of ``path`` (the pipeline re-saved it): keep it under a free name
    (undone if the unit fails). Returns the note for the user."""
    aside = free_name(path.parent, path.stem + ".roicurate-backup-stale", path.suffix)
    os.rename(backup, aside)
    tx.undo.append(lambda: os.rename(aside, backup))
    return f"{backup.name} belonged to an earlier save of {path.name}: kept as {aside.name}"


def keep_beside(path, tx):
    """An independent copy of ``path`` as it is now (hand edits, a re-saved file), beside it under a free name."""
    kept = free_name(path.parent, path.stem + ".roicurate-edited", path.suffix)
    create_new(kept, copy_from=path)
    tx.created(kept)
    return kept


def temp_copy(src, path, tx):
    """An independent copy of ``src`` in a temp file beside ``path`` (removed if the unit fails)."""
    tmp = temp_name(path)
    tx.created(tmp)
    clone_or_copy(src, tmp)
    return tmp


def restore_whole_file(path, backup, recorded, inspect, drift, force, original="the pipeline's original",
                       salvage=None):
    """``revert`` of a whole-file backup. ``recorded(path)``: roicurate's verdict is in the file; ``inspect(path)``:
    the verified state of file and backup (``adopt``: the file already is the backup; ``backup_sha``);
    ``drift(path, st)``: what revert would drop (hand edits, a re-saved file), "" for nothing; ``salvage(path)``:
    with ``force``, where the file itself cannot be read (truncated), the state after verifying the backup alone.

    Everything is checked once, under the lock, and from the backup opened first: another run that reverted
    meanwhile is seen as such (nothing to revert), never as a file without a record. The copy put in place is made
    from that open backup and its sha256 checked; with ``force`` the file is kept beside first; then the backup is
    removed."""
    path = Path(path)
    if not path.exists():
        raise RoicurateError(f"{path}: does not exist")
    clean_stale_temps(path.parent)
    with safeio.locked_transaction(path.parent, path) as tx:
        try:
            held = open(backup, "rb")             # opened once: what is verified below is what is copied
        except FileNotFoundError:
            held = None
        try:
            st = _check_restore(path, backup, held, recorded, inspect, drift, force, original, salvage)
            return _restore_from(path, backup, held, st, tx, original)
        finally:
            if held is not None:
                held.close()


def _check_restore(path, backup, held, recorded, inspect, drift, force, original, salvage):
    """``restore_whole_file``'s checks, under the lock; ``held``: the backup opened, or None (there is none)."""
    try:
        rec = recorded(path)
        st = inspect(path) if held is not None else None
    except RoicurateError as e:
        if held is None or salvage is None:
            raise
        if not force:
            raise RoicurateError(f"{e}; revert --force restores {backup.name} once it is verified and keeps this file "
                                 f"beside it") from None
        st = salvage(path)
        st.keep = f"unreadable: {str(e).split(': ', 1)[-1]}"
        return _check_replaceable(path, backup, st)
    if held is None:
        if rec:
            raise RoicurateError(f"{backup}: missing, but {path.name} holds roicurate's verdict, so {original} "
                                 f"is not here; nothing changed")
        raise safeio.NothingToRevert(f"{path}: nothing to revert (no roicurate backup {backup.name}; already "
                                     f"reverted?)")
    if not st.adopt and not rec:
        why = ("the pipeline re-ran since roicurate curated the earlier file (other ROIs): roicurate apply sets that "
               "backup aside and curates this one" if st.rerun else
               f"move the backup away if {path.name} is the pipeline's own output")
        raise RoicurateError(f"{backup}: {path.name} carries no roicurate record, so {backup.name} is not known to be "
                             f"{original} of this file; nothing changed ({why})")
    st.keep = "" if st.adopt else drift(path, st)
    if st.keep and not force:
        raise RoicurateError(f"{path}: changed since roicurate wrote it ({st.keep}); revert would drop that: use "
                             f"--force to keep it beside the file and restore {original}")
    return _check_replaceable(path, backup, st)


def _check_replaceable(path, backup, st):
    check_dir_writable(path.parent)
    safeio.check_replaceable(path)
    safeio.check_replaceable(backup)
    return st


def _restore_from(path, backup, held, st, tx, original):
    """Put the open backup ``held`` in place of ``path`` (checked by ``_check_restore``); returns the note."""
    if st.adopt:                      # an interrupted run: the file already is the backup, byte for byte
        os.unlink(backup)
        fsync_dir(path.parent)
        return f"already {original}; {backup.name} removed"
    size = os.fstat(held.fileno()).st_size
    check_free_space(path.parent, size + (path.stat().st_size if st.keep else 0) + (8 << 20),
                     f"restoring {path.name}")
    pause_after_check()
    notes = []
    if st.keep:
        notes.append(f"{'edits' if not st.keep.startswith('unreadable') else 'the unreadable file'} kept in "
                     f"{keep_beside(path, tx).name}")
    tmp = temp_name(path)
    tx.created(tmp)
    clone_or_copy(held, tmp)
    if st.backup_sha and sha256_file(tmp) != st.backup_sha:
        raise RoicurateError(f"{backup}: its copy does not match the recorded sha256; nothing changed")
    atomic_replace(tmp, path, mode_from=backup)
    tx.undo.clear()                       # the original is back: nothing from here on is undone (kept edits stay)
    try:
        os.unlink(backup)
        fsync_dir(path.parent)
    except OSError as e:                  # the file is restored; the backup may be left (a re-run removes it)
        left = "could not be removed" if backup.exists() else "was removed but its folder not synced"
        raise RoicurateError("; ".join([f"{path}: restored from {backup.name}, but {backup.name} {left} "
                                        f"({e.strerror or e}); run roicurate revert again to finish"]
                                       + notes)) from None
    return "; ".join([f"restored from {backup.name}"] + notes)
