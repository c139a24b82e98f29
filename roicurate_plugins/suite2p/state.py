"""What roicurate keeps in a Suite2p plane (and combined/): the record roicurate.json, the backup
iscell_suite2p.npy, and the verified state of the three before anything is written or restored.

roicurate.json names the backup's sha256, what roicurate wrote and what it replaced, so a later run can tell
Suite2p's original, roicurate's verdict and hand edits made in the GUI apart; its ``types`` entry is what
``write_types`` wrote (kept across cell / not-cell runs).
"""
import datetime
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from roicurate import RoicurateError
from roicurate.safeio import sha256_bytes, sha256_file
from roicurate_plugins.suite2p.files import (BACKUP, ISCELL, RECORD, RED_BACKUP, REDCELL, load_iscell, load_redcell,
                                             plane_fingerprint, roi_count)

def npy_bytes(arr):
    """The bytes np.save writes for ``arr`` (what goes into the file, and whose sha256 is recorded)."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def json_bytes(record):
    """roicurate.json's bytes."""
    return (json.dumps(record, indent=2, default=str) + "\n").encode()


def parse_iscell(data):
    """iscell.npy's array from its bytes."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def read_bytes(path):
    """A file's bytes, read once (None when it does not exist): what is verified is what is then used, never a
    second read of a file another process may have replaced or removed in between."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RoicurateError(f"{path}: cannot be read ({e.strerror})") from None


def unreadable_record(path):
    """The one line for a roicurate.json that does not parse: ``apply`` (even with --force) and ``revert`` refuse it,
    so the advice is what works."""
    return (f"{path}: unreadable, so roicurate cannot tell which file is Suite2p's original; nothing written (restore "
            f"it, or move it and {BACKUP} away, keeping whichever iscell is Suite2p's own as {ISCELL})")


def read_record(folder):
    """roicurate.json as a dict ({} when there is none); an unreadable one is an unknown state."""
    path = Path(folder) / RECORD
    raw = read_bytes(path)
    if raw is None:
        return {}
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        rec = None
    if not isinstance(rec, dict):
        raise RoicurateError(unreadable_record(path))
    return rec


def orphan_backup(folder):
    """The line for a backup without a record (``apply`` and ``revert`` refuse it; ``status`` says it)."""
    folder = Path(folder)
    return (f"{folder / BACKUP}: roicurate's backup, but {RECORD} has no record of it (deleted?), so it is unknown "
            f"which file is Suite2p's original; nothing written (move {BACKUP} away if {ISCELL} is Suite2p's own "
            f"verdict, or put {RECORD} back)")


def is_rerun(folder, rec):
    """The ROIs in stat.npy are not those roicurate curated: the record's ``roi_sha256`` (absent in records made
    before it existed: never a re-run then) differs from their fingerprint now."""
    return bool(rec.get("roi_sha256")) and rec["roi_sha256"] != plane_fingerprint(folder)


def verified_state(folder, n):
    """What is on disk in a plane (or combined/), verified before anything is written or restored. Every file is
    read once and checked from those bytes.

    Returns ``record``, ``current`` (iscell.npy's bytes), ``sha``, ``backup`` (its bytes, or None),
    ``original_sha`` (the pipeline original's sha256, when known), ``edited`` (iscell.npy holds neither what
    roicurate wrote, nor what it replaced, nor the original: hand edits) and ``rerun`` (Suite2p re-ran since: the
    ROIs are not those of the record, whose files ``previous`` names; the backup is not checked then: it belongs
    to the earlier run). Raises one line for a backup that fails to load, has another ROI count than stat.npy,
    differs from its recorded sha256, or has no record."""
    folder = Path(folder)
    backup_path = folder / BACKUP
    current = read_bytes(folder / ISCELL)
    if current is None:
        raise RoicurateError(f"{folder / ISCELL}: file is missing")
    load_iscell(folder / ISCELL, n, data=current)
    rec = read_record(folder)
    written, original = rec.get("written_sha256"), rec.get("backup_sha256")
    sha = sha256_bytes(current)
    if is_rerun(folder, rec):
        return SimpleNamespace(record={}, previous=rec, current=current, sha=sha, backup=None, original_sha=None,
                               edited=False, rerun=True)
    backup = read_bytes(backup_path)
    if backup is not None:
        if not written:
            raise RoicurateError(orphan_backup(folder))
        rows = len(load_iscell(backup_path, data=backup))
        if rows != n:
            raise RoicurateError(f"{backup_path}: roicurate's backup has {rows} rows but stat.npy has {n} ROIs (a "
                                 f"stale backup: Suite2p re-run since?); nothing written (move {BACKUP} and {RECORD} "
                                 f"away to curate the new output)")
        if original and sha256_bytes(backup) != original:
            raise RoicurateError(f"{backup_path}: differs from the sha256 roicurate recorded when it made this backup "
                                 f"(changed or corrupt); nothing written")
        original = original or sha256_bytes(backup)           # a record from before backups were hashed
    elif written:
        if sha != original:
            raise RoicurateError(f"{backup_path}: missing, but {RECORD} says roicurate replaced {ISCELL}, so Suite2p's "
                                 f"original is not here; nothing written (put {BACKUP} back, or delete {RECORD} to "
                                 f"take {ISCELL} as Suite2p's verdict)")
        rec = {k: v for k, v in rec.items() if k == "types"}    # an interrupted revert: the original is in place
        written = None
    edited = bool(written) and sha not in {written, rec.get("prior_sha256"), original}
    return SimpleNamespace(record=rec, previous=None, current=current, sha=sha, backup=backup, original_sha=original,
                           edited=edited, rerun=False)


def types_record(plane):
    """roicurate.json's ``types`` entry ({} when there is none): what write_types wrote, kept across iscell runs."""
    try:
        rec = json.loads((Path(plane) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return {"types": rec["types"]} if isinstance(rec, dict) and rec.get("types") else {}


def red_entry(record):
    """The ``types.redcell`` entry of a roicurate.json record ({} when roicurate wrote no redcell.npy)."""
    return (record.get("types") or {}).get("redcell") or {}


def now_utc():
    """The time a record is written, ISO 8601 in UTC."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def is_curated(plane):
    """roicurate's backup or record is in ``plane`` (an earlier run wrote here)."""
    return (plane / BACKUP).exists() or (plane / RECORD).exists()


def verdict_of(rec):
    """Whose verdict a record's write was: {"model" (registered name or card path), "sha256", "threshold",
    "operating_point", "tta"}."""
    model = rec.get("model") if isinstance(rec.get("model"), dict) else {}
    return {"model": model.get("source") or model.get("name"), "sha256": model.get("sha256"),
            "threshold": rec.get("threshold"), "operating_point": rec.get("operating_point"),
            "tta": rec.get("tta") is True}


def read_recorded(path):
    """What roicurate recorded when it curated the plane (``Source.recorded``), or None; with what ``status`` must
    say beside it: a re-run (``rerun``), a damaged backup (``backup_problem``), a backup whose record is gone
    (``record_missing``), hand edits in combined/ (``notes``)."""
    plane = Path(path)
    raw = read_bytes(plane / RECORD)
    try:
        rec = None if raw is None else json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        rec = "unreadable"
    if rec is not None and not isinstance(rec, dict):
        raise RoicurateError(unreadable_record(plane / RECORD))
    if not (rec or {}).get("written_sha256"):               # none, or only cell types were written (write_types)
        return {"record_missing": orphan_backup(plane)} if (plane / BACKUP).exists() else None
    current = read_bytes(plane / ISCELL)
    rerun = is_rerun(plane, rec)
    diameter = rec.get("reference_diameter")
    return {**verdict_of(rec), "also_accept": rec.get("accepted_classes", [])[1:], "date": rec.get("time"),
            "diameter": (diameter["px"], diameter["source"]) if isinstance(diameter, dict) else None,
            "intact": current is not None and sha256_bytes(current) == rec["written_sha256"],
            "rerun": rerun, "backup_problem": None if rerun else backup_problem(plane, rec),
            "notes": combined_notes(plane)}


def backup_problem(plane, rec):
    """Why the plane's backup cannot give Suite2p's original back (one line), or None (sound, or missing: ``status``
    says that apart)."""
    path = plane / BACKUP
    data = read_bytes(path)
    if data is None:
        return None
    try:
        rows = len(load_iscell(path, data=data))
    except RoicurateError as e:
        return str(e)
    n = roi_count(plane)
    if rows != n:
        return f"{path}: has {rows} rows but stat.npy has {n} ROIs"
    if rec.get("backup_sha256") and sha256_bytes(data) != rec["backup_sha256"]:
        return f"{path}: differs from the sha256 roicurate recorded when it made this backup (changed or corrupt)"
    return None


def combined_notes(plane):
    """What ``status`` says of the combined/ folder beside ``plane``: flips made in the GUI's combined view (they
    stay there, and ``apply`` refuses to drop them without --force) or a broken combined/ state."""
    combined = Path(plane).parent / "combined"
    if not (combined / RECORD).exists():
        return []
    try:
        st = verified_state(combined, roi_count(combined))
    except RoicurateError as e:
        return [str(e)]
    if st.edited:
        return [f"{combined / ISCELL}: changed since roicurate rebuilt it (flips in the Suite2p GUI's combined view); "
                f"roicurate apply --force keeps them beside it"]
    return []


def red_labels(plane, n):
    """Suite2p's red-cell labels as features ``redcell`` / ``redcell_prob``: redcell.npy, or its original in
    redcell_suite2p.npy while redcell.npy still holds exactly what roicurate wrote (a model's output is not a
    label); and why there are none when the file is broken (cell / not-cell curation does not need it)."""
    path = plane / REDCELL
    red = red_entry(types_record(plane))
    if path.exists() and red.get("written_sha256") == sha256_file(path):
        path = plane / RED_BACKUP
    if not path.exists():
        return {}, None
    try:
        a = load_redcell(path, n)
    except RoicurateError as e:
        return {}, str(e)
    return {"redcell": a[:, 0].astype(np.float64), "redcell_prob": a[:, 1].astype(np.float64)}, None
