"""Sphinx configuration of the mimetic_jax documentation (``.ci/run`` builds it with warnings as errors).

The stack of Flax and optax: Sphinx, myst-nb (Markdown pages and notebooks, the notebooks rendered
without being executed), autodoc/autosummary/napoleon for the API reference, sphinx-book-theme.
Pages generated at build time (benchmark results, citation, notebook copies) come from
``_ext/generated_pages.py`` and land in ``_generated/`` (not committed). No intersphinx: the
build needs no network.
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

import mimetic_jax  # noqa: E402

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
    "generated_pages",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: $...$ / $$...$$ math, ::: fences, heading anchors for links to sections.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Notebooks are rendered as stored (no outputs), never executed at build time.
nb_execution_mode = "off"

# API reference: a page per public object, Google-style docstrings, type hints in the description.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
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
html_static_path: list[str] = []
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
