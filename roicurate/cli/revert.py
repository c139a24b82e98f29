"""``roicurate revert`` puts the pipeline's original verdict back; ``roicurate status`` says what roicurate did to
each plane/file."""
import os

import click

from roicurate import RoicurateError
from roicurate.cli import cli, emit, expand_paths, json_mode, recursive_option, say
from roicurate.review_answers import review_note, reviewed_of


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--force", is_flag=True, help="revert even over hand edits made after roicurate wrote (they are kept "
              "beside the file)")
@recursive_option
def revert(paths, force, recursive=False):
    """Put back the pipeline's original verdict (byte for byte, after verifying roicurate's backup) and remove
    roicurate's files. Says "nothing to revert" (exit 0) where nothing is curated."""
    from roicurate.plugins import source_for
    from roicurate.safeio import NothingToRevert
    for path in paths:
        if not os.path.exists(source_for_or_none(path) or path):
            raise RoicurateError(f"{path}: does not exist")
    for path in expand_paths(paths, recursive):
        try:
            click.echo(f"{path}: {source_for(path).revert(path, force=force)}")
        except NothingToRevert as e:
            click.echo(str(e))


def source_for_or_none(path):
    """Where ``path`` lives on disk when a source claims it (``FILE`` of an NWB ``FILE::table``), else None."""
    from roicurate.plugins import sources
    return next((src.location(path) for src in sources().values() if src.detect(path)), None)


STATES = ("not curated", "curated", "edited since", "backup missing", "unreadable")


def unit_status(src, unit):
    """What roicurate did to ``unit``: {"path", "source", "state" (one of STATES), "model", "sha256", "threshold",
    "date", "backup", "detail"}."""
    row = {"path": str(unit), "source": src.name, "state": "not curated", "model": None, "sha256": None,
           "threshold": None, "date": None, "backup": None, "detail": None, "review": reviewed_of(src, unit)}
    try:
        rec = src.recorded(unit)
    except RoicurateError as e:
        return dict(row, state="unreadable", detail=str(e))
    if rec is None:
        return row
    backup = src.backup_path(unit) if hasattr(src, "backup_path") else None
    row.update(model=rec.get("model"), sha256=rec.get("sha256"), threshold=rec.get("threshold"),
               date=rec.get("date"), backup=None if backup is None else str(backup))
    if backup is not None and not backup.exists():
        row["state"] = "backup missing"
    elif not rec.get("intact"):
        row["state"] = "edited since"
    else:
        row["state"] = "curated"
    return row


def status_line(row):
    """'PATH: curated by MODEL at threshold T on DATE' and the other states, for people."""
    if row["state"] == "not curated":
        return f"{row['path']}: not curated by roicurate"
    if row["state"] == "unreadable":
        return f"{row['path']}: unreadable record ({row['detail']})"
    thr = "?" if row["threshold"] is None else f"{row['threshold']:.3f}"
    text = f"{row['path']}: curated by {row['model']} at threshold {thr}" + (f" on {row['date']}" if row["date"]
                                                                             else "")
    if row["state"] == "edited since":
        text += "; the verdict was edited since (roicurate apply keeps the edits beside it before writing)"
    elif row["state"] == "backup missing":
        text += f"; BACKUP MISSING: {row['backup']} (the pipeline's original verdict cannot be restored)"
    return text


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@recursive_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per plane/file on stdout")
def status(paths, recursive=False, as_json=False):
    """Say, for every plane/file under PATHS, what roicurate did to it: not curated, curated by MODEL at THRESHOLD
    on DATE, edited since, or its backup missing. Reads only roicurate's record; writes nothing."""
    from roicurate.plugins import source_for
    if as_json:
        json_mode()
    for path in expand_paths(paths, recursive, as_json):
        src = source_for(path)
        for unit in src.expand(path):
            row = unit_status(src, unit)
            emit(dict(row, type="unit")) if as_json else say(status_line(row) + review_note(row))
