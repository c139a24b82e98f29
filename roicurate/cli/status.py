"""``roicurate status`` says what roicurate did to each plane/file: a thin layer over ``roicurate.api.iter_status``."""
import click

from roicurate.cli.common import Printer, cli, emit, json_mode, recursive_option, say


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@recursive_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per plane/file on stdout")
def status(paths, recursive=False, as_json=False):
    """Say, for every plane/file under PATHS, what roicurate did to it: not curated, curated by MODEL at THRESHOLD
    on DATE, edited since, or its backup missing. Reads only roicurate's record; writes nothing."""
    from roicurate.api import iter_status
    if as_json:
        json_mode()
    for result in iter_status(*paths, recursive=recursive, events=Printer(as_json)):
        emit(result.record()) if as_json else say(result.line)
