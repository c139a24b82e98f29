"""Plugin manager: built-in plugins register exactly like third-party ones (entry-point group ``roicurate``).

Third-party plugins are the packages that declare an entry point in the ``roicurate`` group. The environment
variable ``ROICURATE_LOAD_PLUGINS`` chooses which of them load (as ``LLM_LOAD_PLUGINS`` does for llm):

* unset: every installed plugin;
* empty (``ROICURATE_LOAD_PLUGINS=``): none, only the built-ins (tests, reproducing a result);
* ``pkg-a,pkg-b``: only those distributions' plugins.

A pipeline's default model is the one its source names (``Source.default_model``), never the one a plugin
happened to register first, so installing a plugin never changes what ``apply`` does without ``--model``.
"""
import importlib
import os
from importlib import metadata

import pluggy

from roicurate import hookspecs
from roicurate.common import RoicurateError

DEFAULT_PLUGINS = (
    "roicurate_plugins.nets",
    "roicurate_plugins.fourclass",
    "roicurate_plugins.suite2p",
    "roicurate_plugins.caiman",
    "roicurate_plugins.nwb",
    "roicurate_plugins.report_commands",
    "roicurate_plugins.unet",
    "roicurate_plugins.celltypes",
    "roicurate_plugins.review",
)
ENTRY_POINT_GROUP = "roicurate"

pm = pluggy.PluginManager("roicurate")
pm.add_hookspecs(hookspecs)


def load_plugins(only=None):
    """Register the built-in plugins, then the third-party ones ``only`` names (None: ``ROICURATE_LOAD_PLUGINS``,
    see the module docstring). Idempotent."""
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name)
    only = os.environ.get("ROICURATE_LOAD_PLUGINS") if only is None else only
    if only is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        return
    for dist_name in filter(None, (n.strip() for n in only.split(","))):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise RoicurateError(f"ROICURATE_LOAD_PLUGINS names '{dist_name}', which is not installed") from None
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and pm.get_plugin(ep.name) is None:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                pm._plugin_distinfo.append((plugin, dist))      # what `roicurate plugins` shows, as llm does


load_plugins()


def _collect(hook):
    items = {}

    def register(item):
        if item.name in items:
            raise RoicurateError(f"two plugins register '{item.name}'")
        items[item.name] = item

    hook(register=register)
    return items


def sources():
    return _collect(pm.hook.register_sources)


def model_specs():
    return _collect(pm.hook.register_models)


def image_providers():
    """{name: provider} of the images plugins derive from a recording (crop channels no pipeline file holds)."""
    return _collect(pm.hook.register_images)


def report_sections():
    """{name: section} of the extra per-plane sections plugins add to the HTML report."""
    return _collect(pm.hook.register_report_sections)


def source_for(path):
    """The source whose ``detect`` claims ``path``, or a one-line error."""
    srcs = sources()
    for src in srcs.values():
        if src.detect(path):
            return src
    raise RoicurateError(f"{path}: not a pipeline output roicurate can read "
                         f"(looked for: {', '.join(s.description for s in srcs.values())})")


def pipeline_source(pipeline):
    """The registered source that speaks for ``pipeline`` (its display name, default model and architecture)."""
    src = sources().get(pipeline)
    if src is None or not src.display_name:
        raise RoicurateError(f"no installed source speaks for pipeline '{pipeline or 'unknown'}' "
                             f"(installed: {', '.join(s.name for s in sources().values() if s.display_name)})")
    return src


def pipelines():
    """The pipelines whose sources are registered (the ``--pipeline`` choices)."""
    return sorted(name for name, src in sources().items() if src.display_name)


def default_model(pipeline):
    """The model ``apply`` uses for ``pipeline``'s ROIs when none is given: the one its source names, never the one
    a plugin happened to register first."""
    name = pipeline_source(pipeline).default_model
    if not name or name not in model_specs():
        raise RoicurateError(f"no trained model for {pipeline} is installed; pass --model")
    return name


def plugin_info():
    """[(name, version, [hooks])] for every registered plugin."""
    rows = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin))
        dist = dict(pm.list_plugin_distinfo()).get(plugin)
        version = getattr(dist, "version", None) if dist else None
        if version is None:
            from roicurate.common import __version__ as version
        rows.append((name, version, hooks))
    return rows
