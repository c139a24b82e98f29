"""The engines of ``revert`` (put the pipeline's original verdict back) and ``status`` (what roicurate did to each
unit), one result at a time."""
from roicurate.common import RoicurateError
from roicurate.api.lines import status_line
from roicurate.api.paths import as_paths, check_exist, expand
from roicurate.api.results import Events, RevertResult, StatusResult
from roicurate.review_answers import review_note, reviewed_of

STATES = ("not curated", "curated", "edited since", "re-run", "backup missing", "backup damaged", "record missing",
          "unreadable")


def iter_revert(*paths, force=False, recursive=False, events=None):
    """``roicurate.revert`` one path at a time: a generator of RevertResult, each yielded once that path is
    restored."""
    from roicurate.plugins import source_for
    from roicurate.safeio import NothingToRevert
    events = events or Events()
    paths = as_paths(paths)
    check_exist(paths)
    for path in expand(paths, recursive, events):
        try:
            message = source_for(path).revert(path, force=force)
        except NothingToRevert as e:
            yield RevertResult(str(path), False, str(e), str(e))
        else:
            yield RevertResult(str(path), True, message, f"{path}: {message}")


def unit_status(src, unit):
    """What roicurate did to ``unit``: {"path", "source", "state" (one of STATES), "model", "sha256", "threshold",
    "operating_point", "tta", "date", "backup", "detail", "review" ('reviewed N of M', None without review
    answers)}. A unit whose files cannot be read is ``unreadable`` with the reason in ``detail``, never an
    exception: one broken unit does not stop the others' status."""
    row = {"path": str(unit), "source": src.name, "state": "not curated", "model": None, "sha256": None,
           "threshold": None, "operating_point": None, "tta": False, "date": None, "backup": None, "detail": None,
           "review": None}
    try:
        row["review"] = reviewed_of(src, unit)
        rec = src.recorded(unit)
        backup = src.backup_path(unit)
        exists = backup is not None and backup.exists()
    except (RoicurateError, OSError) as e:
        return dict(row, state="unreadable", detail=str(e).splitlines()[0] if str(e) else type(e).__name__)
    if rec is None:
        return row
    row["backup"] = None if backup is None else str(backup)
    if rec.get("record_missing"):
        return dict(row, state="record missing", detail=rec["record_missing"])
    row.update(model=rec.get("model"), sha256=rec.get("sha256"), threshold=rec.get("threshold"),
               operating_point=rec.get("operating_point"), tta=bool(rec.get("tta")), date=rec.get("date"))
    notes = list(rec.get("notes") or [])
    if backup is not None and not exists:
        row["state"] = "backup missing"
    elif rec.get("rerun"):
        row["state"] = "re-run"
    elif rec.get("backup_problem"):
        row["state"] = "backup damaged"
        notes.insert(0, rec["backup_problem"])
    elif not rec.get("intact"):
        row["state"] = "edited since"
    else:
        row["state"] = "curated"
    row["detail"] = "; ".join(notes) or None
    return row


def iter_status(*paths, recursive=False, events=None):
    """``roicurate.status`` one unit at a time: a generator of StatusResult. A path whose units cannot even be
    listed (a truncated file) is one ``unreadable`` result, and the others follow."""
    from roicurate.plugins import source_for
    events = events or Events()
    paths = as_paths(paths)
    check_exist(paths)
    for path in expand(paths, recursive, events):
        src = source_for(path)
        try:
            units = src.expand(path)
        except (RoicurateError, OSError) as e:
            row = {"path": str(path), "source": src.name, "state": "unreadable", "model": None, "sha256": None,
                   "threshold": None, "date": None, "backup": None, "detail": str(e).splitlines()[0], "review": None}
            yield StatusResult(**row, line=status_line(row))
            continue
        for unit in units:
            row = unit_status(src, unit)
            yield StatusResult(**row, line=status_line(row) + review_note(row))
