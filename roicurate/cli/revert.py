"""``roicurate revert``: put the pipeline's original verdict back."""
import click

from roicurate import RoicurateError
from roicurate.cli import cli


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--force", is_flag=True, help="revert even over hand edits made after roicurate wrote (they are kept "
              "beside the file)")
def revert(paths, force):
    """Put back the pipeline's original verdict (byte for byte, after verifying roicurate's backup) and remove
    roicurate's files. Says "nothing to revert" (exit 0) where nothing is curated."""
    import os

    from roicurate.plugins import source_for
    from roicurate.safeio import NothingToRevert
    for path in paths:
        if not os.path.exists(path):
            raise RoicurateError(f"{path}: does not exist")
        try:
            click.echo(f"{path}: {source_for(path).revert(path, force=force)}")
        except NothingToRevert as e:
            click.echo(str(e))


