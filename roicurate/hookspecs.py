"""The hooks a roicurate plugin can implement. Each receives a ``register`` callback (or the CLI group),
so a plugin reads as a list of what it adds."""
import pluggy

hookspec = pluggy.HookspecMarker("roicurate")
hookimpl = pluggy.HookimplMarker("roicurate")


@hookspec
def register_sources(register):
    """Call ``register(source)`` for each pipeline format this plugin reads and writes
    (an object with ``name``, ``crop``, ``detect``, ``expand``, ``read``, ``write``, ``revert``;
    see ``roicurate.sources.Source``)."""


@hookspec
def register_models(register):
    """Call ``register(spec)`` with a ``roicurate.models.ModelSpec`` for each network or trained model."""


@hookspec
def register_commands(cli):
    """Add extra ``click`` commands to the ``roicurate`` command group."""
