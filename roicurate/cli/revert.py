"""``roicurate revert`` puts the pipeline's original verdict back: a thin layer over ``roicurate.api.iter_revert``."""
import click

from roicurate.cli.common import Printer, cli, echo, recursive_option


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
        echo(result.line)
