"""The library and the experiment harness are split: what ``import mimetic_jax`` loads, what the
install declares (pyproject.toml), and what a base install's command line and plotting say."""

from __future__ import annotations

import ast
import json
import pathlib
import re
import subprocess
import sys

import pytest

import mimetic_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mimetic_jax"
#: Import name -> distribution name of the harness's third-party packages.
HARNESS = {
    "optax": "optax",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "mnist1d": "mnist1d",
}
LIBRARY_DEPENDENCIES = {"jax", "jaxlib", "flax", "numpy"}


def _library_modules() -> list[pathlib.Path]:
    """The library's modules: all but the harness and ``__main__`` (``python -m mimetic_jax``, the command line)."""
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if "experiments" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"
    )


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """``(top-level package, at module level?)`` of every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_level = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in module_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in module_level))
    return found


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_importing_the_library_loads_nothing_of_the_harness():
    # optax is in sys.modules after `import mimetic_jax`, but by flax's doing: `import flax.nnx`
    # alone loads it (flax/nnx/training/optimizer.py imports optax; flax depends on it), while
    # `import flax` and `import flax.linen` do not. The library needs flax.nnx (its NNX layers and
    # NNX state handling). What we control: after jax, numpy and flax (linen and nnx) are imported,
    # importing mimetic_jax adds no harness module, and never loads mimetic_jax.experiments.
    code = (
        "import json, sys\n"
        "harness = lambda: {m for m in sys.modules if m.split('.')[0] in "
        f"{tuple(HARNESS) + ('chex',)!r} or m.startswith('mimetic_jax.experiments')}}\n"
        "import jax, numpy, flax, flax.linen\n"
        "linen = harness()\n"
        "import flax.nnx\n"
        "nnx = harness() - linen\n"
        "import mimetic_jax\n"
        "print(json.dumps({'linen': sorted(linen), 'nnx': sorted({m.split('.')[0] for m in nnx}), "
        "'ours': sorted(harness() - linen - nnx)}))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["ours"] == []
    assert loaded["linen"] == [] and set(loaded["nnx"]) <= {"optax"}


def test_library_modules_import_only_the_declared_dependencies():
    # optax itself may be in sys.modules after `import mimetic_jax`: flax depends on it and
    # flax.nnx imports it. What the library must not do is import it (or any harness package).
    allowed = LIBRARY_DEPENDENCIES | {"mimetic_jax"} | set(sys.stdlib_module_names)
    bad = []
    for path in _library_modules():
        for module, at_top in _imports(path):
            root = module.split(".")[0]
            if module.startswith("mimetic_jax.experiments"):
                bad.append(f"{path.name}: {module}")
            elif root == "matplotlib" and path.name == "analysis.py" and not at_top:
                continue  # plot_analysis, lazily, with an ImportError naming the extra
            elif root not in allowed:
                bad.append(f"{path.name}: {module}")
    assert bad == []


def test_harness_imports_are_declared_by_the_experiments_extra():
    extra = {_name(r) for r in _pyproject()["project"]["optional-dependencies"]["experiments"]}
    allowed = LIBRARY_DEPENDENCIES | {"mimetic_jax"} | set(sys.stdlib_module_names)
    undeclared = set()
    for path in sorted((PACKAGE / "experiments").rglob("*.py")):
        for module, _ in _imports(path):
            root = module.split(".")[0]
            if root not in allowed and HARNESS.get(root) not in extra:
                undeclared.add(f"{path.name}: {module}")
    assert undeclared == set()


def test_base_dependencies_are_jax_flax_and_numpy_only():
    project = _pyproject()["project"]
    assert {_name(r) for r in project["dependencies"]} == LIBRARY_DEPENDENCIES


def test_chex_is_neither_declared_nor_imported():
    project = _pyproject()["project"]
    declared = [
        r
        for reqs in [project["dependencies"], *project["optional-dependencies"].values()]
        for r in reqs
        if _name(r) == "chex"
    ]
    imported = [str(p) for p in PACKAGE.rglob("*.py") if any(m.split(".")[0] == "chex" for m, _ in _imports(p))]
    assert declared == [] and imported == []


def test_every_extra_says_what_it_is_for_and_pulls_the_harness_where_needed():
    extras = _pyproject()["project"]["optional-dependencies"]
    harness = {_name(r) for r in extras["experiments"]}
    assert harness == set(HARNESS.values())
    # the other extras name the harness once, by self-reference, never by a second copy of its list
    assert extras["cli"] == ["mimetic_jax[experiments]"]  # the earlier name of the same set
    for name in ("test", "benchmarks", "notebooks"):
        assert "mimetic_jax[experiments]" in extras[name], name
        assert not harness & {_name(r) for r in extras[name]}, name
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines()
    for name in extras:
        line = next(i for i, t in enumerate(text) if t.startswith(f"{name} = ["))
        assert text[line - 1].startswith("#"), f"extra {name!r} has no comment saying what it is for"


def test_the_version_has_one_source():
    toml = _pyproject()
    assert "version" not in toml["project"] and "version" in toml["project"]["dynamic"]
    assert toml["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mimetic_jax.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|(a|b|rc)\d+)?", mimetic_jax.__version__)
    literals = [p.name for p in PACKAGE.rglob("*.py") if mimetic_jax.__version__ in p.read_text(encoding="utf-8")]
    assert literals == ["__init__.py"]


def test_classifiers_name_the_tested_pythons_and_the_license_is_an_spdx_expression():
    project = _pyproject()["project"]
    classifiers = set(project["classifiers"])
    assert {f"Programming Language :: Python :: 3.{v}" for v in (10, 11, 12)} <= classifiers
    assert {
        "Typing :: Typed",
        "Intended Audience :: Science/Research",
        "Development Status :: 3 - Alpha",
    } <= classifiers
    assert project["requires-python"] == ">=3.10" and project["license"] == "Apache-2.0"
    assert (PACKAGE / "py.typed").exists()


def test_the_console_script_is_the_harness_cli():
    target = _pyproject()["project"]["scripts"]["mimetic-jax"]
    assert target == "mimetic_jax.experiments.cli:main"


def test_plot_analysis_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'matplotlib.*pip install "mimetic_jax\[experiments\]"'):
        mimetic_jax.plot_analysis(mimetic_jax.Analysis())


def test_the_two_command_modules_do_not_import_each_other():
    # cli runs cli_ssm's task; what both need lives in experiments._common, so cli_ssm never imports cli.
    experiments = PACKAGE / "experiments"
    assert "mimetic_jax.experiments.cli" not in {m for m, _ in _imports(experiments / "cli_ssm.py")}
    assert "mimetic_jax.experiments.cli_ssm" not in {m for m, _ in _imports(experiments / "_common.py")}
    assert "mimetic_jax.experiments.cli" not in {m for m, _ in _imports(experiments / "_common.py")}
