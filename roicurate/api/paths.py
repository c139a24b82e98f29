"""The paths the API is given: normalised, checked, and (``recursive``) every pipeline output found under them."""
import os

from roicurate.common import RoicurateError


def as_paths(paths):
    """``paths`` (str or os.PathLike, at least one; or one list of them, e.g. a glob's) as strings, the way the
    command line passes them."""
    if len(paths) == 1 and isinstance(paths[0], (list, tuple)):
        paths = paths[0]
    if not paths:
        raise RoicurateError("no path given (a Suite2p plane or suite2p/ folder, a CaImAn .hdf5 or an NWB file)")
    try:
        return [os.fspath(p) for p in paths]
    except TypeError:
        raise RoicurateError(f"paths must be str or os.PathLike, got {paths!r}") from None


def as_names(value):
    """A name or an iterable of names as a tuple (a single string is one name, not its letters)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def image_items(add_image):
    """``add_image`` as ``NAME=FILE`` strings: one such string, an iterable of them, or a {name: file} dict."""
    if isinstance(add_image, dict):
        return tuple(f"{name}={os.fspath(file)}" for name, file in add_image.items())
    return as_names(add_image)


def location(path):
    """Where ``path`` lives on disk: ``FILE`` of an NWB ``FILE::table`` when a source claims it, else ``path``."""
    from roicurate.plugins import sources
    return next((src.location(path) for src in sources().values() if src.detect(path)), None) or path


def check_exist(paths):
    for path in paths:
        if not os.path.exists(location(path)):
            raise RoicurateError(f"{path}: does not exist")


def find_listing(roots):
    """[(path, source, units)] of every pipeline output under the folders ``roots`` (``--recursive``)."""
    from roicurate.discover import find_outputs
    return [(path, src, src.expand(path)) for src, path in find_outputs(roots)]


def expand(paths, recursive, events):
    """``paths`` as given, or with ``recursive`` every pipeline output under them, told to ``events.found`` (how
    many units of each kind) before anything is read or written."""
    if not recursive:
        return list(paths)
    listing = find_listing(paths)
    events.found(paths, listing)
    if not listing:
        raise RoicurateError(f"no pipeline output found under {', '.join(map(str, paths))}")
    return [path for path, _, _ in listing]
