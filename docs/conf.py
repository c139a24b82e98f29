"""Sphinx configuration of the roicurate manual (MyST Markdown pages, the command reference generated from the
click commands by sphinx-click, hooks and classes by autodoc).

Build: ``pip install -r docs/requirements.txt`` in a venv where roicurate is installed, then
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # the package of this checkout, even where it is not installed in editable mode

# Document roicurate and its built-in plugins, not whatever third-party plugins the building machine has installed
# (roicurate/plugins.py: an empty ROICURATE_LOAD_PLUGINS loads the built-ins only). Set it to build with them.
os.environ.setdefault("ROICURATE_LOAD_PLUGINS", "")

import roicurate  # noqa: E402
from roicurate.cli import cli  # noqa: E402
from roicurate.plugins import pm  # noqa: E402

# Plugins add commands at run time (roicurate.cli.main does the same before running ``cli``): register them on the
# group object sphinx-click reads, so that report, explain, segment and any plugin's command are documented too.
pm.hook.register_commands(cli=cli)

project = "roicurate"
author = "the roicurate authors"
copyright = "the roicurate authors"
release = roicurate.__version__
version = release

extensions = ["myst_parser", "sphinx_click", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt"]

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3              # [text](page.md#a-heading) links, as GitHub renders them

autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "furo"
html_title = f"roicurate {release}"
