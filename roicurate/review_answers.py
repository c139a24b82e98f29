"""A person's review answers, kept in a labels file beside the unit (``Source.review_path``: Suite2p
``plane0/roicurate_review.json``, CaImAn / NWB ``NAME.roicurate-review.json``).

Every answer is written at once, under the unit's lock, through ``safeio``'s atomic write (the same path the
verdict takes), so a killed server loses nothing. The file names the ROIs it is for: their count and the sha256 of
their pixels (``labels.mask_fingerprint``); answers for other ROIs (a pipeline re-run) are never applied.

A human answer always beats the model: ``sources.read_units`` attaches the answers to the RoiSet (``human``),
``curation.curate`` makes them the verdict, and ``labels.attach_labels`` makes them labels. The file::

    {"format": "roicurate-review", "version": 1, "rois": N, "masks_sha256": "...",
     "answers": [{"roi": 12, "label": 1, "time": "2026-12-06T04:00:00+00:00"}, ...]}

``answers`` is in the order they were given (the last is what ``undo`` takes back); an ROI appears once (a new
answer replaces its old one). ``label`` is 1 (cell) or 0 (not a cell).
"""
import datetime
import json
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError
from roicurate.safeio import free_name, locked_transaction

FORMAT, VERSION = "roicurate-review", 1
LABELS = (0, 1)


def human_summary(human):
    """{"reviewed", "cell", "not_cell"} of a ``human`` array (None: nothing reviewed)."""
    h = np.zeros(0, np.int8) if human is None else np.asarray(human)
    return {"reviewed": int((h >= 0).sum()), "cell": int((h == 1).sum()), "not_cell": int((h == 0).sum())}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def encode(record):
    """The file's bytes: sorted keys, one answer per line-ish (indent 1), a final newline: stable and diffable."""
    return (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()


def new_record(roiset):
    from roicurate.labels import mask_fingerprint
    return {"format": FORMAT, "version": VERSION, "rois": len(roiset), "masks_sha256": mask_fingerprint(roiset),
            "answers": []}


def read_record(path):
    """The record in ``path`` (None when there is no file); a file that is not one is a one-line error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RoicurateError(f"{path}: cannot read review answers ({e.strerror})") from None
    try:
        record = json.loads(data)
        ok = (record.get("format") == FORMAT and isinstance(record.get("rois"), int)
              and isinstance(record.get("masks_sha256"), str) and isinstance(record.get("answers"), list)
              and all(isinstance(a, dict) and isinstance(a.get("roi"), int) and a.get("label") in LABELS
                      for a in record["answers"]))
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise RoicurateError(f"{path}: not a roicurate review file (format {FORMAT!r} with rois, masks_sha256 and "
                             f"answers [{{roi, label 0/1}}])")
    return record


def mismatch(record, roiset):
    """Why ``record`` is not for ``roiset``'s ROIs ("" when it is)."""
    from roicurate.labels import mask_fingerprint
    if record["rois"] != len(roiset):
        return f"made for {record['rois']} ROIs, the unit has {len(roiset)} now (pipeline re-run?)"
    if record["masks_sha256"] != mask_fingerprint(roiset):
        return "made for other ROI masks than the unit has now (pipeline re-run?)"
    bad = [a["roi"] for a in record["answers"] if not 0 <= a["roi"] < len(roiset)]
    if bad:
        return f"answers for ROI {bad[0]}, which the unit does not have"
    return ""


def human_labels(record, n):
    """int8 (n,): the answer per ROI, -1 where there is none."""
    human = np.full(n, -1, np.int8)
    for a in record["answers"]:
        human[a["roi"]] = a["label"]
    return human


def attach(src, unit_path, roiset):
    """Set ``roiset.human`` from the unit's review file (None when there is none, or it was made for other ROIs:
    then ``roiset.origin["review_problem"]`` says why and nothing is applied). Returns the RoiSet."""
    path = src.review_path(unit_path)
    record = read_record(path)
    roiset.human = None
    roiset.origin.pop("review_problem", None)
    if record is None:
        return roiset
    problem = mismatch(record, roiset)
    if problem:
        roiset.origin["review_problem"] = f"{path}: {problem}; its answers are not applied"
    elif record["answers"]:
        roiset.human = human_labels(record, len(roiset))
    return roiset


def _change(src, unit_path, roiset, edit):
    """Under the unit's lock: read the file again (another tab may have written), set a file for other ROIs aside
    (kept under a free name), apply ``edit(record)`` and write it atomically. Returns the new record."""
    path = Path(src.review_path(unit_path))
    where = src.location(unit_path)
    folder = where if where.is_dir() else where.parent
    with locked_transaction(folder, path) as tx:
        record = read_record(path)
        if record is not None and mismatch(record, roiset):
            aside = free_name(path.parent, path.name.removesuffix(".json") + "-stale", ".json")
            tx.create(aside, path.read_bytes())
            record = None
        record = record or new_record(roiset)
        edit(record)
        tx.write(path, encode(record))
    roiset.human = human_labels(record, len(roiset)) if record["answers"] else None
    return record


def answer(src, unit_path, roiset, roi, label):
    """Record ``label`` (1 cell, 0 not a cell) for ROI ``roi``, replacing an earlier answer for it."""
    if label not in LABELS:
        raise RoicurateError(f"label must be 0 (not a cell) or 1 (cell), got {label!r}")
    if not 0 <= roi < len(roiset):
        raise RoicurateError(f"ROI {roi}: the unit has ROIs 0 to {len(roiset) - 1}")

    def edit(record):
        record["answers"] = [a for a in record["answers"] if a["roi"] != roi]
        record["answers"].append({"roi": int(roi), "label": int(label), "time": _now()})
    return _change(src, unit_path, roiset, edit)


def undo(src, unit_path, roiset):
    """Take back the last answer. Returns (the new record, the ROI it was for, or None when there was none)."""
    taken = []

    def edit(record):
        if record["answers"]:
            taken.append(record["answers"].pop()["roi"])
    record = _change(src, unit_path, roiset, edit)
    return record, (taken[0] if taken else None)


def reviewed_of(src, unit_path):
    """'reviewed N of M' for ``status`` (None when the unit has no review file); reads that file only."""
    try:
        record = read_record(src.review_path(unit_path))
    except RoicurateError as e:
        return f"review answers unreadable ({e})"
    return None if record is None else f"reviewed {len(record['answers'])} of {record['rois']}"


def review_note(row):
    """What ``status`` adds to a unit's line: '; reviewed N of M' ('' without a review file)."""
    return f"; {row['review']}" if row.get("review") else ""
