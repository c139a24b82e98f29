"""Plugin manager: built-in plugins register exactly like third-party ones (entry-point group ``roicurate``)."""
import importlib

import pluggy

from roicurate import RoicurateError, hookspecs

# pluggy calls the last registered plugin first: fourclass comes before nets so that a pipeline's default model
# (the first bundled one registered for it) stays the two-class one
DEFAULT_PLUGINS = (
    "roicurate_plugins.fourclass",
    "roicurate_plugins.nets",
    "roicurate_plugins.suite2p",
    "roicurate_plugins.caiman",
    "roicurate_plugins.report_commands",
    "roicurate_plugins.unet",
    "roicurate_plugins.celltypes",
)

pm = pluggy.PluginManager("roicurate")
pm.add_hookspecs(hookspecs)

for _name in DEFAULT_PLUGINS:
    pm.register(importlib.import_module(_name), _name)
pm.load_setuptools_entrypoints("roicurate")


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
            from roicurate import __version__ as version
        rows.append((name, version, hooks))
    return rows
