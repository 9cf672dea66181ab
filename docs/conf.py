"""Sphinx configuration of the qlandscape docs site.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (or ``make -C docs html``). The
gallery renders the committed, executed notebooks (``notebooks/*.ipynb``, produced by
``python docs/notebooks.py execute``) without executing them again, so the build takes a minute
and needs no GPU or data; ``python docs/notebooks.py check`` (run by the test suite) guarantees that
each of them is in sync with its reviewed ``.py`` source.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

project = "qlandscape"
author = "the qlandscape developers"
copyright = "2026, the qlandscape developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# The gallery: copies of the executed notebooks and their figures, refreshed at every build.
GALLERY = DOCS / "gallery"


def _copy_gallery() -> None:
    GALLERY.mkdir(exist_ok=True)
    for old in GALLERY.glob("*.ipynb"):
        old.unlink()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy2(nb, GALLERY / nb.name)


_copy_gallery()

nb_execution_mode = "off"          # render the committed outputs; CI executes the sources separately
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "notebooks.py", "README.md"]
suppress_warnings = ["mystnb.unknown_mime_type", "ref.python"]  # ref.python: an attribute name shared by two classes

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False

html_theme = "furo"
html_title = "qlandscape"
html_static_path: list[str] = []
