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


@hookspec
def register_images(register):
    """Call ``register(image)`` for each image this plugin derives from a recording (an object with ``name``,
    ``description`` and ``compute(roiset)`` returning a float32 (Ly, Lx) frame, e.g. from ``roiset.images["mean"]``;
    see ``roicurate.crops.DerivedImage``). A model whose crop names that channel gets it even though no pipeline
    file holds it: ``crops.summary_image`` computes it once per RoiSet and keeps it in ``roiset.images``."""


@hookspec
def register_report_sections(register):
    """Call ``register(section)`` for each extra section this plugin adds to every plane/file of the HTML report
    (``roicurate report``, ``apply --report``): an object with ``name`` and ``render(roiset, curation, folder)``
    that writes its PNG figures into ``folder`` (that plane's figure folder) and returns a
    ``roicurate.report.ReportSection`` (title, HTML fragment, figure file names), or None to leave it out."""
