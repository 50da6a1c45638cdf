"""Sphinx configuration of the tg_rapidalign documentation.

Build it with ``bash scripts/build_docs.sh`` (warnings are errors, and every
``exec-code`` example in the guides runs during the build).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

import tg_rapidalign  # noqa: E402  (the installed package, or the one on PYTHONPATH)

project = "tg_rapidalign"
author = "the tg_rapidalign developers"
copyright = "the tg_rapidalign developers"
release = tg_rapidalign.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "exec_code",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt", "Thumbs.db", ".DS_Store"]
templates_path = []

# Code: blocks without a language are shown as plain text.
highlight_language = "none"
pygments_style = "friendly"

# autodoc: the docstrings are the reference. Signatures keep the defaults as
# written; type hints stay in the signature (they are strings in the sources).
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # no torch.nn.Module boilerplate on forward()
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}
add_module_names = False

# napoleon: Google-style "Args:" / "Returns:" sections, as PyG writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# MyST (the guides are Markdown): $...$ math, ::: fences, definition lists.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"tg_rapidalign {release}"
html_static_path = []
