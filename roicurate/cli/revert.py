"""``roicurate revert`` puts the pipeline's original verdict back; ``roicurate status`` says what roicurate did to
each plane/file. Thin layers over ``roicurate.api.iter_revert`` / ``iter_status``."""
import click

from roicurate.cli import Printer, cli, emit, json_mode, recursive_option, say


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--force", is_flag=True, help="revert even over hand edits made after roicurate wrote (they are kept "
              "beside the file)")
@recursive_option
def revert(paths, force, recursive=False):
    """Put back the pipeline's original verdict (byte for byte, after verifying roicurate's backup) and remove
    roicurate's files. Says "nothing to revert" (exit 0) where nothing is curated."""
    from roicurate.api import iter_revert
    for result in iter_revert(*paths, force=force, recursive=recursive, events=Printer()):
        click.echo(result.line)


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
