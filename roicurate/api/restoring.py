"""The engines of ``revert`` (put the pipeline's original verdict back) and ``status`` (what roicurate did to each
unit), one result at a time."""
from roicurate.common import RoicurateError
from roicurate.api.lines import status_line
from roicurate.api.paths import as_paths, check_exist, expand
from roicurate.api.results import Events, RevertResult, StatusResult
from roicurate.review_answers import review_note, reviewed_of

STATES = ("not curated", "curated", "edited since", "backup missing", "unreadable")


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
    "date", "backup", "detail", "review" ('reviewed N of M', None without review answers)}."""
    row = {"path": str(unit), "source": src.name, "state": "not curated", "model": None, "sha256": None,
           "threshold": None, "date": None, "backup": None, "detail": None, "review": reviewed_of(src, unit)}
    try:
        rec = src.recorded(unit)
    except RoicurateError as e:
        return dict(row, state="unreadable", detail=str(e))
    if rec is None:
        return row
    backup = src.backup_path(unit)
    row.update(model=rec.get("model"), sha256=rec.get("sha256"), threshold=rec.get("threshold"),
               date=rec.get("date"), backup=None if backup is None else str(backup))
    if backup is not None and not backup.exists():
        row["state"] = "backup missing"
    elif not rec.get("intact"):
        row["state"] = "edited since"
    else:
        row["state"] = "curated"
    return row


def iter_status(*paths, recursive=False, events=None):
    """``roicurate.status`` one unit at a time: a generator of StatusResult."""
    from roicurate.plugins import source_for
    events = events or Events()
    paths = as_paths(paths)
    check_exist(paths)
    for path in expand(paths, recursive, events):
        src = source_for(path)
        for unit in src.expand(path):
            row = unit_status(src, unit)
            yield StatusResult(**row, line=status_line(row) + review_note(row))
