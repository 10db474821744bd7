"""Sphinx configuration of the sksemiparam documentation.

Build from the repository root with warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

``SKSEMIPARAM_QUICK=1`` in the environment makes every gallery example shrink its work (fewer epochs,
rows or candidates), which is what the test suite and CI do; ``-D plot_gallery=0`` skips running the
examples altogether.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the checkout being built, not whatever sksemiparam happens to be installed: a clone's
# docstrings are what its docs must show. (A copy of docs/ without the package next to it, as in
# tests/test_docs.py, falls back to the installed package.)
if (ROOT / "sksemiparam" / "__init__.py").is_file():
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))  # _benchmarks_page, _gallery

import _benchmarks_page  # noqa: E402

import sksemiparam  # noqa: E402

_benchmarks_page.write(DOCS / "benchmarks", DOCS / "benchmarks.rst")

# -- Project ------------------------------------------------------------------------------------------
project = "sksemiparam"
author = "the sksemiparam developers"
copyright = "the sksemiparam developers"  # noqa: A001
release = sksemiparam.__version__
version = release

# -- General ------------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_templates", "**.ipynb_checkpoints", "auto_examples/*.ipynb"]
nitpicky = False
default_role = "literal"  # `x` in a docstring is code, as the docstrings mean it

# -- MyST: the user-guide pages are Markdown ----------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference ------------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_member_order = "groupwise"
numpydoc_show_class_members = False  # the class template lists the methods itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Keep inherited methods written in sksemiparam (fit, predict, end_task, ...) and drop the ones
    scikit-learn's mixins add (get_params, set_output, set_fit_request, ...): their docstrings point
    into scikit-learn's own documentation, which this site does not contain."""
    module = getattr(obj, "__module__", None) or getattr(getattr(obj, "fget", None), "__module__", None)
    if what == "class" and module is not None and not module.startswith("sksemiparam"):
        return True
    return None


# -- Gallery ------------------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every script in examples/ is part of the gallery and runs at build time, the quickstart too.
    "filename_pattern": r"\.py$",
    "ignore_pattern": r"__init__\.py$",
    "within_subsection_order": "_gallery.QuickstartFirst",
    "download_all_examples": False,
    "doc_module": ("sksemiparam",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"sksemiparam": None},
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "show_memory": False,
    "abort_on_example_error": False,  # report every failing example, then fail the build
}

# -- HTML ---------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sksemiparam {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_show_sourcelink = False
html_last_updated_fmt = None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
