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
from roicurate_plugins.suite2p.files import BACKUP, ISCELL, RECORD, RED_BACKUP, REDCELL, load_iscell, load_redcell

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


def read_record(folder):
    """roicurate.json as a dict ({} when there is none); an unreadable one is an unknown state."""
    path = Path(folder) / RECORD
    if not path.exists():
        return {}
    try:
        rec = json.loads(path.read_text())
    except (ValueError, OSError, UnicodeDecodeError):
        rec = None
    if not isinstance(rec, dict):
        raise RoicurateError(f"{path}: unreadable, so roicurate cannot tell which file is Suite2p's original; "
                             f"nothing written (restore it, or move it and {BACKUP} away)")
    return rec


def verified_state(folder, n):
    """What is on disk in a plane (or combined/), verified before anything is written or restored.

    Returns ``record``, ``current`` (iscell.npy's bytes), ``sha``, ``backup`` (its bytes, or None),
    ``original_sha`` (the pipeline original's sha256, when known) and ``edited`` (iscell.npy holds neither what
    roicurate wrote, nor what it replaced, nor the original: hand edits). Raises one line for a backup that
    fails to load, has another ROI count than stat.npy, differs from its recorded sha256, or has no record."""
    folder = Path(folder)
    backup_path = folder / BACKUP
    load_iscell(folder / ISCELL, n)
    current = (folder / ISCELL).read_bytes()
    rec = read_record(folder)
    written, original = rec.get("written_sha256"), rec.get("backup_sha256")
    sha = sha256_bytes(current)
    backup = None
    if backup_path.exists():
        if not written:
            raise RoicurateError(f"{backup_path}: roicurate's backup, but {RECORD} has no record of it (deleted?), so "
                                 f"it is unknown which file is Suite2p's original; nothing written (move {BACKUP} "
                                 f"away if {ISCELL} is Suite2p's own verdict)")
        rows = len(load_iscell(backup_path))
        backup = backup_path.read_bytes()
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
    return SimpleNamespace(record=rec, current=current, sha=sha, backup=backup, original_sha=original,
                           edited=edited)


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


def read_recorded(path):
    """What roicurate recorded when it curated the plane (``Source.recorded``), or None."""
    record = Path(path) / RECORD
    if not record.exists():
        return None
    try:
        rec = json.loads(record.read_text())
        model = rec.get("model") or {}
    except (ValueError, OSError, AttributeError):
        raise RoicurateError(f"{record}: unreadable; use --force to overwrite iscell.npy anyway") from None
    if not rec.get("written_sha256"):
        return None                                        # only cell types were written (write_types)
    iscell = Path(path) / ISCELL
    return {"model": model.get("source") or model.get("name"), "sha256": model.get("sha256"),
            "threshold": rec.get("threshold"), "also_accept": rec.get("accepted_classes", [])[1:],
            "date": rec.get("time"), "diameter": (lambda d: (d["px"], d["source"]) if isinstance(d, dict) else None)(
                rec.get("reference_diameter")),
            "intact": bool(rec.get("written_sha256")) and iscell.exists()
            and sha256_file(iscell) == rec["written_sha256"]}


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
