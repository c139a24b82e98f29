"""The ``roicurate`` command line: one module per command group (``apply``, ``revert``, ``status``, ``train``,
``label``, ``evaluate``, ``info``), the helpers they share in ``common``; plugins add commands through
``register_commands``."""
from roicurate.common import RoicurateError
from roicurate.cli import apply, evaluate, info, label, revert, status, train  # noqa: F401 (they register themselves)
from roicurate.cli.common import fail, cli

__all__ = ["cli", "main"]


def main():
    try:
        from roicurate.plugins import pm
    except RoicurateError as e:           # e.g. ROICURATE_LOAD_PLUGINS names a package that is not installed
        fail(e)
    pm.hook.register_commands(cli=cli)
    cli()
