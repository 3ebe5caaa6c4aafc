"""Sphinx configuration for vmigrate's documentation (``make docs``: warnings are errors).

Pages are MyST Markdown. The plugin files are not a Python package and three of them are
called ``vmigrate.py``: each is imported here under a name of its own
(``vmigrate_modules_vmigrate``, ``vmigrate_runners_vmigrate``, ``vmigrate_utils_<name>``...)
before autodoc runs, and ``docs/_ext/vmigrate_docs.py`` writes one reference page per file
present (``docs/api/``) and renders the tables the code holds (the options table).
"""
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import vmigrate_docs  # noqa: E402  pylint: disable=wrong-import-position

# Every _modules/_runners/_states/_beacons/_utils file present now, under its own name.
vmigrate_docs.load_plugins()

project = "vmigrate"
author = "vmigrate maintainers"
copyright = "vmigrate maintainers"  # pylint: disable=redefined-builtin

extensions = ["myst_parser", "sphinx.ext.autodoc", "vmigrate_docs"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"      # plain public signatures: Salt pickles argspecs

html_theme = "furo"
html_title = "vmigrate"
