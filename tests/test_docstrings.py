"""Every runnable example in the package's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mimetic_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(mimetic_jax.__path__, "mimetic_jax."))


def test_the_package_has_docstring_examples():
    examples = sum(
        len(t.examples) for name in MODULES for t in doctest.DocTestFinder().find(importlib.import_module(name))
    )
    assert examples >= 100, examples


#: Modules whose examples run in the slow pass only (``.ci/run`` runs both): the harness's (``experiments``)
#: train or build small models (7-21 s each on 2 cores) and ``analysis``'s build a ViT; their functions
#: have their own tests.
SLOW_MODULES = {m for m in MODULES if m.startswith("mimetic_jax.experiments")} | {"mimetic_jax.analysis"}


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_MODULES else m for m in MODULES])
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
