"""``apply ROOT --recursive``: every pipeline output under a folder tree, found by the registered sources.

Each source walks the tree on its own, top-down, and claims what its ``detect`` accepts; it does not look inside
what it claimed (a folder holding ``suite2p/`` is one Suite2p output, its planes are its units): ``walk_claims``,
the default of ``Source.find``, which a source may override with a cheaper search. roicurate's own files (``*.roicurate-backup*``,
``*.roicurate-edited*``, temp files) and hidden folders are never outputs.
"""
import os
from pathlib import Path

from roicurate.common import RoicurateError

OWN_FILES = ".roicurate-"


def _ours(name):
    return name.startswith(".") or OWN_FILES in name


def walk_claims(src, root):
    """The paths under ``root`` (itself included) that ``src.detect`` claims, top-down, in sorted order."""
    claimed = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if src.detect(here):
            claimed.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not _ours(d))
        claimed += [here / f for f in sorted(filenames) if not _ours(f) and src.detect(here / f)]
    return claimed


def find_outputs(roots):
    """[(source, path)] for every pipeline output under the folders ``roots``, sorted by path; a path two sources
    claim goes to the first (as ``source_for`` would choose)."""
    from roicurate.plugins import sources
    found = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise RoicurateError(f"{root}: --recursive needs a folder")
        for src in sources().values():
            for path in src.find(root):
                found.setdefault(str(path), src)
    return sorted(((src, path) for path, src in found.items()), key=lambda item: item[1])
