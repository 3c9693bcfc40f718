"""The notebooks in ``notebooks/`` run headless, top to bottom, at a tiny budget.

Each notebook executes in a fresh IPython kernel of the interpreter running pytest (a
kernelspec written to a temporary folder: nothing is registered globally), with this
checkout first on ``PYTHONPATH`` (so the setup cell finds the package and skips its
install; figures use the inline backend) and the cell tagged ``parameters`` followed by an injected cell
that shrinks the budget (papermill's convention). Any cell that raises fails the test.
The stored notebooks must carry no outputs. The documentation site renders the executed copies
that ``notebooks/_gallery.py`` writes to ``notebooks/executed/``: each must hold the cells of its
stored notebook, the gallery's budget, an output for every cell and the figures of
``notebooks/figures/``, or the test names the command that refreshes it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

#: notebook -> the injected parameters (the tiny CI budget).
TINY = {
    "quickstart": "STEPS = 4\nSEEDS = 1\nWIDTH, DEPTH, HEADS = 16, 1, 2",
    "vit": "STEPS = 4\nSEEDS = 1\nWIDTH, DEPTH, HEADS = 16, 1, 2",
    "convmixer": "STEPS = 4\nSEEDS = 1\nWIDTH, DEPTH, KERNEL = 8, 2, 3\nTRAIN_FROZEN = True",
    "mamba_recall": "STEPS = 4\nSEEDS = 1\nD_MODEL, LAYERS, D_STATE = 16, 1, 4\nSEQ_LEN, PAIRS, VOCAB = 16, 2, 16\nBATCH = 16",
    "emergence": "EPOCHS = 0\nSEEDS = 1\nALPHAS = [1.0, 1.5]\nWIDTH, HIDDEN_LAYERS = 16, 2",
    "fuseinit": "STEPS1 = 4\nSTEPS2 = 4\nSEEDS = 1\nWIDTH = 16",
}
NAMES = sorted(TINY)


def with_parameters(nb, name: str, source: str):
    """``nb`` with a cell of ``source`` after its one cell tagged ``parameters`` (papermill's convention)."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
    return nb


def _with_tiny_budget(nb, name: str):
    return with_parameters(nb, name, TINY[name])


def write_kernelspec(root: pathlib.Path) -> pathlib.Path:
    """A kernelspec ``mimetic-test`` in ``root`` running this interpreter with the checkout on PYTHONPATH."""
    spec = root / "mimetic-test"
    spec.mkdir(parents=True, exist_ok=True)
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mimetic_jax test",
                "language": "python",
                "env": env,
            }
        )
    )
    return root


def execute(nb, kernel_dir: pathlib.Path, timeout: int = 300):
    """Run ``nb`` in place in a fresh kernel of :func:`write_kernelspec` (cwd ``notebooks/``); raise on an error.

    The kernel is shut down afterwards: ``NotebookClient`` leaves a kernel of a manager it was
    given running.
    """
    km = KernelManager(kernel_name="mimetic-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(
        nb, km=km, timeout=timeout, allow_errors=False, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    try:
        client.execute()  # raises CellExecutionError naming the cell when one fails
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec running this interpreter with the checkout on PYTHONPATH."""
    return write_kernelspec(tmp_path_factory.mktemp("kernels"))


def test_every_notebook_is_tested_and_has_a_tiny_budget():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, name
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has stored outputs"
    assert "mimetic_jax" in code[0].source and "%pip install" in code[0].source  # the Colab setup cell


def load_gallery():
    """``notebooks/_gallery.py`` as a module (a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebooks_gallery", NOTEBOOKS / "_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_the_executed_copy_the_site_renders_is_the_current_notebook_run_at_the_gallery_budget(name):
    gallery = load_gallery()
    path = NOTEBOOKS / "executed" / f"{name}.ipynb"
    refresh = f"run python notebooks/_gallery.py {name}"
    assert path.is_file(), f"no notebooks/executed/{name}.ipynb: {refresh}"
    executed = nbformat.read(path, as_version=4)
    nbformat.validate(executed)
    stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # the stored cells, in order, and the two injected ones right after the `parameters` cell
    kept = [c for c in executed.cells if not gallery.is_injected(c)]
    assert load_sync().cells(nbformat.v4.new_notebook(cells=kept)) == load_sync().cells(stored), (
        f"notebooks/executed/{name}.ipynb does not hold the cells of notebooks/{name}.ipynb: {refresh}"
    )
    at = next(i for i, c in enumerate(executed.cells) if "parameters" in c.metadata.get("tags", []))
    injected = [c.source for c in executed.cells[at + 1 : at + 3]]
    assert injected == [gallery.STYLE, gallery.budget_cell_source(name)], f"not the gallery's budget: {refresh}"
    # every code cell ran, in order, without an error, and the figures are its figures
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"not run top to bottom: {refresh}"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = sorted(NOTEBOOKS.glob(f"figures/{name}_*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert figures and [p.read_bytes() for p in figures] == gallery.pngs(executed), (
        f"notebooks/figures/{name}_*.png are not the figures of notebooks/executed/{name}.ipynb: {refresh}"
    )
    assert str(ROOT) not in path.read_text(encoding="utf-8"), "an output names this machine's checkout path"


def test_the_gallery_cells_follow_the_parameters_cell_and_are_recognised():
    gallery = load_gallery()
    nb = gallery.with_gallery_cells(nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4), "quickstart")
    nbformat.validate(nb)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    style, budget = nb.cells[at + 1 : at + 3]
    assert "remove-cell" in style.metadata.tags and gallery.is_injected(style) and gallery.is_injected(budget)
    assert budget.source.startswith("# ") and "STEPS = 150" in budget.source
    assert sum(gallery.is_injected(c) for c in nb.cells) == 2
    with pytest.raises(ValueError, match="parameters"):
        gallery.with_gallery_cells(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), "x")


def load_sync():
    """``notebooks/_sync.py`` as a module (it is a script, not part of the package)."""
    import importlib.util

    pytest.importorskip("jupytext")
    spec = importlib.util.spec_from_file_location("notebooks_sync", NOTEBOOKS / "_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_python(name: str) -> str:
    """The setup cell of ``name`` as the Python IPython runs (``%pip`` -> ``get_ipython().run_line_magic``)."""
    from IPython.core.inputtransformer2 import TransformerManager

    source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells[1].source
    return TransformerManager().transform_cell(source)


class FakeShell:
    """Records the line magics a setup cell runs (``{var}`` expanded as IPython does) instead of running pip."""

    def __init__(self, namespace: dict):
        self.namespace, self.calls = namespace, []

    def run_line_magic(self, magic: str, line: str) -> None:
        self.calls.append((magic, line.format(**self.namespace)))


def run_setup_cell(name: str, cwd: pathlib.Path, monkeypatch) -> tuple[list, Exception | None]:
    """Run the setup cell of ``name`` in ``cwd`` with mimetic_jax not importable and pip faked."""
    import site

    monkeypatch.setitem(sys.modules, "mimetic_jax", None)  # `import mimetic_jax` raises ImportError
    monkeypatch.setattr(site, "main", lambda: None)
    monkeypatch.chdir(cwd)
    namespace: dict = {}
    shell = FakeShell(namespace)
    namespace["get_ipython"] = lambda: shell
    try:
        exec(compile(setup_python(name), f"{name}-setup", "exec"), namespace)
    except ImportError as err:  # the fake pip installed nothing
        return shell.calls, err
    return shell.calls, None


@pytest.mark.parametrize("name", NAMES)
def test_setup_cell_is_valid_ipython_without_placeholders(name):
    python = setup_python(name)
    compile(python, "setup-cell", "exec")
    text = (NOTEBOOKS / f"{name}.ipynb").read_text()
    assert "OWNER" not in text and "PLACEHOLDER" not in text.upper()


def test_setup_cell_in_a_checkout_installs_the_checkout(monkeypatch):
    calls, err = run_setup_cell("quickstart", NOTEBOOKS, monkeypatch)
    assert calls == [("pip", 'install -q -e "..[cli]"')]
    assert (NOTEBOOKS / ".." / "pyproject.toml").is_file()
    assert "REQUIREMENT" in str(err)  # the fake install did not make it importable: a clear message, not a trace


def test_setup_cell_elsewhere_installs_the_requirement_generated_from_pyproject(tmp_path, monkeypatch):
    sync = load_sync()
    monkeypatch.delenv("MIMETIC_JAX_REQUIREMENT", raising=False)
    calls, err = run_setup_cell("quickstart", tmp_path, monkeypatch)
    assert calls == [("pip", f'install -q "{sync.requirement(sync.repository())}"')]
    assert "could not install" in str(err) and "REQUIREMENT" in str(err)
    monkeypatch.setenv("MIMETIC_JAX_REQUIREMENT", "/content/mimetic_jax[cli]")
    calls, _ = run_setup_cell("quickstart", tmp_path, monkeypatch)
    assert calls == [("pip", 'install -q "/content/mimetic_jax[cli]"')]


def test_badges_and_install_source_come_from_the_one_repository_address(tmp_path):
    sync = load_sync()
    with_urls = tmp_path / "pyproject.toml"
    with_urls.write_text(
        '[project]\nname = "mimetic_jax"\n\n[project.urls]\nRepository = "https://github.com/someone/mimetic_jax"\n'
    )
    repo = sync.repository(with_urls)
    assert repo == "https://github.com/someone/mimetic_jax"
    assert sync.requirement(repo) == "mimetic_jax[cli] @ git+https://github.com/someone/mimetic_jax"
    assert sync.colab_url(repo, "vit") == (
        "https://colab.research.google.com/github/someone/mimetic_jax/blob/main/notebooks/vit.ipynb"
    )
    assert "colab-badge" in sync.badge("vit", repo) and sync.badge("vit", None) == ""
    assert sync.requirement(None) == "mimetic_jax[cli]" and sync.colab_url(None, "vit") is None
    # the stored notebooks follow this checkout's pyproject: a badge exactly when it names a repository
    stored = sync.repository()
    for name in NAMES:
        first = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells[0].source
        assert ("colab-badge" in first) == (stored is not None)


def test_every_notebook_has_a_paired_text_source():
    sync = load_sync()
    assert sync.names(NOTEBOOKS) == NAMES
    header = (NOTEBOOKS / "quickstart.md").read_text().split("---")[1]
    assert "formats: ipynb,md:myst" in header  # `jupytext --sync` pairs them too


@pytest.mark.parametrize("name", NAMES)
def test_notebook_holds_the_cells_of_its_text_source(name):
    jupytext = pytest.importorskip("jupytext")
    sync = load_sync()
    source = jupytext.read(NOTEBOOKS / f"{name}.md", fmt=sync.FORMAT)
    stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert sync.cells(stored) == sync.cells(source), (
        f"notebooks/{name}.ipynb differs from notebooks/{name}.md: run python notebooks/_sync.py"
    )


def test_stored_notebooks_are_what_sync_writes(tmp_path):
    import shutil

    sync = load_sync()
    for name in NAMES:
        shutil.copy(NOTEBOOKS / f"{name}.md", tmp_path)
    sync.main(tmp_path)
    for name in NAMES:
        assert (tmp_path / f"{name}.md").read_text() == (NOTEBOOKS / f"{name}.md").read_text(), (
            f"notebooks/{name}.md does not follow pyproject.toml's repository address: run python notebooks/_sync.py"
        )
        assert (tmp_path / f"{name}.ipynb").read_text() == (NOTEBOOKS / f"{name}.ipynb").read_text(), (
            f"notebooks/{name}.ipynb is stale: run python notebooks/_sync.py"
        )
    assert sync.main(NOTEBOOKS, check=True) == []


def test_sync_refreshes_the_badge_and_the_setup_cell_of_a_source():
    jupytext = pytest.importorskip("jupytext")
    sync = load_sync()
    nb = jupytext.read(NOTEBOOKS / "vit.md", fmt=sync.FORMAT)
    repo = "https://github.com/someone/mimetic_jax"
    sync.refresh(nb, "vit", repo)
    title, badge_line = nb.cells[0].source.split("\n\n")[:2]
    assert title.startswith("# ") and badge_line == sync.badge("vit", repo).strip()
    assert sync.requirement(repo) in nb.cells[1].source
    sync.refresh(nb, "vit", None)  # and back: no badge, the package by name
    assert "colab-badge" not in nb.cells[0].source and nb.cells[0].source.startswith(title + "\n\n")
    assert nb.cells[1].source == sync.setup_cell(None)


def test_quickstart_shows_nnx_and_the_one_call_on_a_users_model():
    code = "\n".join(
        c.source for c in nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4).cells if c.cell_type == "code"
    )
    assert "from flax import nnx" in code and "nnx.MultiHeadAttention" in code
    assert "mj.mimetic_attention(nnx_attn" in code
    assert 'mj.mimetic(enc_params, jax.random.key(1), preset="vit"' in code
    assert 'mj.mimetic(nnx_encoder, jax.random.key(1), preset="vit"' in code


@pytest.mark.slow  # about 15-35 s each: run by .ci/run after the default test run
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless_at_a_tiny_budget(name, kernel_dir):
    nb = execute(_with_tiny_budget(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), name), kernel_dir)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
