"""Sphinx configuration of nixtest's documentation site.

The pages stay Markdown (myst-parser), so they read the same on a forge as on
the site; the command-line reference is generated from the click commands
(sphinx-click), so it cannot drift from `nixtest --help`.  Nothing is fetched
while building: no intersphinx, and furo ships its own assets.
"""

from __future__ import annotations

import importlib.metadata

project = "nixtest"
author = "the nixtest authors"
copyright = "the nixtest authors"
release = importlib.metadata.version("nixtest")
version = release

extensions = ["myst_parser", "sphinx_click"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# `[text](page.md#a-heading)` links are checked against the headings of the page.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

html_theme = "furo"
html_title = f"nixtest {release}"
