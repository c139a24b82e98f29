"""Writing a verdict into a CaImAn HDF5 file and taking it back, by the write protocol (roicurate/sources.py).

The backup ``NAME.roicurate-backup.hdf5`` beside the file is an independent copy of CaImAn's original, made once
and never replaced. The verdict is written into a temp copy of the file (``caiman.verdict.store_in_group``) that
``atomic_replace`` puts in place; the backup's sha256 and the hash of everything roicurate does not write go into
the new file's attributes, so a later run can tell hand edits (``idx_components`` re-filtered) from a re-saved file
(a stale backup). Files of GBs are hashed block by block, and verified once per process while unchanged. h5py
writes the temp copy through ``fileguard.writing_copy``: a full disk or an I/O error there is one line naming the file
and the errno, with nothing changed. A file another process holds open for writing is refused
(``safeio.check_replaceable``).
"""
import os
from pathlib import Path
from types import SimpleNamespace


from roicurate import RoicurateError, hdf5_content
from roicurate.fileguard import writing_copy
from roicurate.safeio import atomic_replace, locked_transaction, sha256_file
from roicurate.sources import (check_whole_file_writable, prepare_whole_file, restore_whole_file,
                               settle_without_record)
from roicurate.rois import roi_fingerprint
from roicurate_plugins.caiman.read import already_selected, file_fingerprint, import_h5py, is_selected, open_hdf5
from roicurate_plugins.caiman.verdict import (ATTRS, CLASS_ATTRS, HUMAN_ATTR, POINT_ATTRS, SCALE_ATTRS, WRITTEN,
                                              edited_after_write, recorded, store_in_group, verdict)

BACKUP_TAG = ".roicurate-backup"   # NAME.hdf5 -> NAME.roicurate-backup.hdf5, beside it
# the backup's sha256 (a file hash) and the hash of everything write() does not set, both taken at the first apply
BACKUP_ATTRS = ("roicurate_backup_sha256", "roicurate_content_sha256")
ROI_ATTR = "roicurate_roi_sha256"   # roicurate.rois.roi_fingerprint of the components the verdict is for


def backup_path(path):
    """Where the original of ``path`` is kept."""
    path = Path(path)
    return path.with_name(path.stem + BACKUP_TAG + path.suffix)


def is_backup(path):
    return Path(path).stem.endswith(BACKUP_TAG)


def check_writable(path, force=False):
    """Everything ``write_file`` needs, checked before anything is written (and again under the lock); returns the
    file's verified state (``inspect``)."""
    path = Path(path)
    return check_whole_file_writable(path, inspect, force, lambda st: (
        st.edited and "idx_components changed since roicurate wrote it (re-filtered in CaImAn?); use --force to "
                      "overwrite those edits (the file is kept beside it)",
        st.stale and not st.rerun and f"differs from its backup {backup_path(path).name} in more than roicurate's "
                     f"own fields (re-saved since roicurate backed it up?); move the old backup away, or use --force (the old backup is "
                     f"kept as {path.stem}.roicurate-backup-stale-<time>{path.suffix} and the current file is "
                     f"backed up)"))


def write_file(path, roiset, curation, force=False, as_cnn_preds=False):
    """Under the folder's lock: verify (or make) the backup, an independent copy; keep hand edits beside; write
    the verdict into a temp copy of the file and ``atomic_replace`` it. A failure undoes every step. Returns a note
    for the user or None."""
    path = Path(path)
    backup = backup_path(path)
    K = len(curation.accepted)
    v = verdict(curation, as_cnn_preds)
    with locked_transaction(path.parent, path) as tx:
        st = check_writable(path, force=force)          # again: another run may have written meanwhile
        if st.K != K or len(roiset) != K:
            raise RoicurateError(f"{path}: has {st.K} components but the curation has {K} (RoiSet: {len(roiset)})")
        payload = sum(a.nbytes for a in v.fields.values())
        tmp, new_backup, notes = prepare_whole_file(path, backup, st, tx, extra=2 * payload)
        v.attrs["roicurate_backup_sha256"] = st.backup_sha or sha256_file(backup)
        v.attrs["roicurate_content_sha256"] = (not new_backup and st.content) or content_sha256(backup)
        v.attrs[ROI_ATTR] = roi_fingerprint(roiset)
        with writing_copy(tmp, path) as raw, import_h5py().File(raw, "r+") as f:   # an I/O error: one line
            store_in_group(f["estimates"], v)
        atomic_replace(tmp, path)
    return "; ".join(notes) or None


def read_recorded(path):
    """What roicurate recorded in the file (``Source.recorded``), or None; with a damaged backup
    (``backup_problem``), and for a file without a record beside a backup of another save: CaImAn re-ran (other
    components: ``rerun``) or re-saved it (``record_missing``)."""
    path, backup = Path(path), backup_path(path)
    with open_hdf5(path) as f:
        est = f.get("estimates")
        rec = recorded(est)
        K = int(est["A/shape"][1]) if rec is not None and "A/shape" in est else None
        sha = str(est.attrs["roicurate_backup_sha256"]) if rec is not None and \
            "roicurate_backup_sha256" in est.attrs else None
    if rec is None:
        if not backup.exists() or sha256_file(backup) == sha256_file(path):
            return None                    # never curated, or an interrupted first run (the backup is the file)
        if _other_rois(path, backup):
            return {"model": None, "threshold": None, "date": None, "intact": False, "rerun": True,
                    "notes": [f"{backup.name} belongs to the earlier save"]}
        return {"record_missing": f"{path.name} differs from its backup {backup.name} and carries no roicurate "
                                  f"record (re-saved since?); roicurate apply --force keeps that backup as "
                                  f"{path.stem}.roicurate-backup-stale-<time>{path.suffix} and backs up this file"}
    if backup.exists():
        try:
            _check_backup(backup, K, sha)
        except RoicurateError as e:
            rec["backup_problem"] = str(e).replace("; nothing changed", "")
    return rec


def revert_file(path, force=False):
    """Restore the verified backup byte for byte (``sources.restore_whole_file``), then remove it."""
    drift = lambda path, st: "idx_components re-filtered" if st.edited else "re-saved" if st.stale else ""
    return restore_whole_file(path, backup_path(Path(path)), _has_record, inspect, drift, force, "CaImAn's original")


def _has_record(path):
    """roicurate's verdict is in the file (its attributes on /estimates)."""
    with open_hdf5(path) as f:
        return recorded(f.get("estimates")) is not None


def inspect(path):
    """The verified state of a CaImAn file and its backup, before anything is written or restored: ``K``,
    ``rec`` (roicurate wrote it), ``edited`` (idx_components no longer says what roicurate wrote), ``stale``
    (the file was re-saved since the backup was made: it differs in more than roicurate's own fields),
    ``adopt`` (no record, but the backup is byte-identical: an interrupted first run), ``backup_sha`` and
    ``content`` (recorded hashes). Raises one line for a selected file, or a backup that does not load, has
    another component count, or differs from its recorded sha256. Reads block by block: memory stays small."""
    backup = backup_path(path)
    sig = (_signature(path), _signature(backup))
    cached = _VERIFIED.get(str(path))
    if cached and cached[0] == sig:          # checked a moment ago and not changed since: do not hash GBs twice
        return SimpleNamespace(**cached[1])
    st = _inspect_files(path, backup)
    _VERIFIED[str(path)] = (sig, dict(vars(st)))
    return st


_VERIFIED = {}      # path -> ((inode, size, mtime) of file and backup, the verified state): one process's memory


def _signature(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _inspect_files(path, backup):
    h5py = import_h5py()
    with open_hdf5(path) as f:
        est = f.get("estimates")
        if not isinstance(est, h5py.Group) or not isinstance(est.get("A"), h5py.Group) or "shape" not in est["A"]:
            raise RoicurateError(f"{path}: no estimates/A (not a CaImAn file written by cnm.save())")
        if is_selected(est):
            raise RoicurateError(already_selected(path))
        K = int(est["A/shape"][1])
        rec = "roicurate_model" in est.attrs
        get = lambda k: str(est.attrs[k]) if k in est.attrs else None
        st = SimpleNamespace(K=K, rec=rec, edited=rec and edited_after_write(est), stale=False, adopt=False,
                             rerun=False, backup_sha=get("roicurate_backup_sha256"),
                             content=get("roicurate_content_sha256"), roi_sha=get(ROI_ATTR))
    if settle_without_record(path, backup, rec, st, "CaImAn's original"):
        st.rerun = st.stale and _other_rois(path, backup)
        return st
    _check_backup(backup, K, st.backup_sha)
    st.stale = content_sha256(path) != (st.content or content_sha256(backup))
    return st


def _other_rois(path, backup):
    """The backup holds other components than the file (CaImAn re-ran and saved a new file under this name): their
    fingerprints differ. A backup whose A cannot be read is not called a re-run (the refusal stays)."""
    try:
        return file_fingerprint(path) != file_fingerprint(backup)
    except RoicurateError:
        return False


def _check_backup(backup, K, sha):
    h5py = import_h5py()
    if not h5py.is_hdf5(str(backup)):
        raise RoicurateError(f"{backup}: roicurate's backup is not an HDF5 file (truncated or corrupt); nothing changed")
    try:
        with h5py.File(backup, "r") as f:
            k = int(f["estimates/A/shape"][1])
    except (OSError, KeyError, ValueError, TypeError, IndexError) as e:
        raise RoicurateError(f"{backup}: roicurate's backup cannot be read ({type(e).__name__}); nothing changed") \
            from None
    if k != K:
        raise RoicurateError(f"{backup}: roicurate's backup has {k} components but the file has {K} (from another "
                             f"recording?); nothing changed")
    if sha and sha256_file(backup) != sha:
        raise RoicurateError(f"{backup}: differs from the sha256 roicurate recorded when it made this backup "
                             f"(changed or corrupt); nothing changed")


def content_sha256(path):
    """sha256 over everything in the file but what write() sets (roicurate/hdf5_content.py)."""
    skip = {f"estimates/{k}" for k in WRITTEN}
    ours = set(ATTRS + CLASS_ATTRS + BACKUP_ATTRS + SCALE_ATTRS + POINT_ATTRS + (HUMAN_ATTR, ROI_ATTR))
    return hdf5_content.content_sha256(path, skip.__contains__, lambda name, k: name == "estimates" and k in ours)
