"""The notebooks in ``notebooks/`` run headless, top to bottom, at a tiny budget.

Each notebook executes in a fresh IPython kernel of the interpreter running pytest (a
kernelspec written to a temporary folder: nothing is registered globally), with this
checkout first on ``PYTHONPATH`` (so the setup cell finds the package and skips its
install; figures use the inline backend) and the cell tagged ``parameters`` followed by an injected cell
that shrinks the budget (papermill's convention). Any cell that raises fails the test.
The stored notebooks must carry no outputs.
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

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

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
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mimetic_jax test", "language": "python", "env": env}))
    return root


def execute(nb, kernel_dir: pathlib.Path, timeout: int = 300):
    """Run ``nb`` in place in a fresh kernel of :func:`write_kernelspec` (cwd ``notebooks/``); raise on an error.

    The kernel is shut down afterwards: ``NotebookClient`` leaves a kernel of a manager it was
    given running.
    """
    km = KernelManager(kernel_name="mimetic-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout, allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
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


def test_setup_cell_installs_from_this_checkout_when_the_package_is_missing():
    """The Colab cell is valid IPython, and its checkout branch points at this repository's pyproject."""
    from IPython.core.inputtransformer2 import TransformerManager

    source = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4).cells[1].source
    python = TransformerManager().transform_cell(source)
    compile(python, "setup-cell", "exec")
    assert "run_line_magic('pip', 'install -q -e \"..[cli]\"')" in python
    assert (NOTEBOOKS / ".." / "pyproject.toml").is_file()
    assert "git+https://github.com/" in python and "except ImportError:" in python


@pytest.mark.slow  # about 15-35 s each: run by .ci/run after the default test run
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless_at_a_tiny_budget(name, kernel_dir):
    nb = execute(_with_tiny_budget(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), name), kernel_dir)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
