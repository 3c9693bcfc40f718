"""Sphinx configuration of the mimetic_jax documentation (``.ci/run`` builds it with warnings as errors).

The stack of Flax and optax: Sphinx, myst-nb (Markdown pages and notebooks), autodoc/autosummary/
napoleon for the API reference, sphinx-book-theme. Pages generated at build time (benchmark
results, citation, notebook copies) come from ``_ext/generated_pages.py`` and land in
``_generated/`` (not committed). No intersphinx: the build needs no network, and neither does
the built site.

Math: MathJax 3.2.2 served from the site itself, by the ``sphinx-mathjax-offline`` wheel (the
``docs`` extra), which copies its packaged MathJax (the TeX input, CommonHTML output and its
woff fonts, about 24 MB) to ``_build/html/_static/mathjax/`` and points ``mathjax_path`` at
it. Chosen over the alternatives because it installs with the rest of the ``docs`` extra from
PyPI, with no apt or npm step in ``.ci/run`` and nothing copied by hand: Debian's
``libjs-mathjax`` (MathJax 2.7, an apt step, and a path outside the venv to copy from), the npm
``mathjax`` package (a Node.js step at build time) and KaTeX prerendering
(``sphinxcontrib-katex`` prerenders only with a Node.js ``katex`` binary, otherwise it renders
in the browser from a CDN). Sphinx's own default loads MathJax 4 from a CDN, so a reader
without network saw raw TeX.

Notebooks: rendered with the outputs of ``python notebooks/_gallery.py`` (committed in
``notebooks/executed/``), never executed at build time: a full build took 1.5 min (41 s of CPU)
on a shared 2-core CPU box, and the pages show the figures of the gallery budgets, not of the
tests' tiny one. ``tests/test_notebooks.py``
fails when an executed copy is missing or stale.

``tests/test_docs_browser.py`` (run by ``.ci/run`` after this build) opens the built pages in
headless Chromium with no network and checks that the math rendered, every image loaded, no
script failed and no code block is cut.
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

import mimetic_jax

project = "mimetic_jax"
author = "mimetic_jax developers"
copyright = "the mimetic_jax developers; Apache-2.0"
release = version = mimetic_jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax copied into the built site, mathjax_path pointing at it (see the docstring above).
    "sphinx-mathjax-offline",
    "generated_pages",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: $...$ / $$...$$ math, ::: fences, heading anchors for links to sections.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Notebooks are rendered with the outputs stored in notebooks/executed/ (notebooks/_gallery.py),
# never executed at build time.
nb_execution_mode = "off"

# API reference: a page per public object, Google-style docstrings, type hints in the description.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# Defaults as written in the source (``layouts=DEFAULT_LAYOUTS``), not their values: a printed
# tuple of layouts made signatures thousands of characters long.
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields, not a second description of each dataclass field

# Nitpicky (-n): every reference to this package must resolve. References into JAX, Flax, NumPy
# and the standard typing module cannot without intersphinx (no network at build time), so
# those alone are ignored.
# References to this package's objects resolve by their public names as well (a missing one is
# retried as mimetic_jax.<name>, see _ext/generated_pages.py), so docstrings may name the
# implementation module; implementation modules themselves are not documented.
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|flax|numpy|np|jnp|nnx|optax|equinox|eqx|typing|collections|types)(\..*)?"),
    (r"py:.*", r"(Array|ArrayLike|PyTree|DTypeLike|Dtype|DotGeneralT|Initializer|Any|Callable|Sequence|Mapping)"),
    (r"py:mod", r"mimetic_jax\.(?!nn$|fuse$)\w+"),
    # Named by docstrings but not public (yet): drop an entry once its object is exported and
    # listed in api.rst.
    (r"py:.*", r"(mimetic_jax\.\w+\.)?(gaussian|SIGMA_RANGE|SCHEMES|DEPTHWISE_NAMES|MLP_NAMES)"),
]

html_theme = "sphinx_book_theme"
html_title = f"mimetic_jax {version}"
# custom.css: notebook cells and outputs, and the BibTeX entries, wrap their long lines.
html_static_path = ["_static"]
html_css_files = ["custom.css"]
# The theme's light/dark mode follows the reader's system; unset, pydata-sphinx-theme logs a
# console error ("Got invalid theme mode") on every page.
html_context = {"default_mode": "auto"}
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
