"""``roicurate status`` says what roicurate did to each plane/file: a thin layer over ``roicurate.api.iter_status``."""
import sys

import click

from roicurate.cli.common import Printer, cli, echo, emit, json_mode, recursive_option, say


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@recursive_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per plane/file on stdout")
def status(paths, recursive=False, as_json=False):
    """Say, for every plane/file under PATHS, what roicurate did to it: not curated, curated by MODEL at THRESHOLD
    on DATE, edited since, re-run by the pipeline since, its backup missing or damaged, its record missing, or
    unreadable. Reads only; writes nothing. Every unit is reported, a broken one as unreadable; the exit status is
    1 when some unit could not be read (after all were reported), else 0."""
    from roicurate.api import iter_status
    if as_json:
        json_mode()
    unreadable = 0
    for result in iter_status(*paths, recursive=recursive, events=Printer(as_json)):
        unreadable += result.state == "unreadable"
        emit(result.record()) if as_json else say(result.line)
    if unreadable:
        echo(f"roicurate: {unreadable} plane(s)/file(s) could not be read (said above)", err=True)
        sys.exit(1)
