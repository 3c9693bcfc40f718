"""Run every notebook headless at a small budget: its figures for the gallery, its outputs for the site.

    python notebooks/_gallery.py [NAME ...]      # default: every notebook

Each notebook executes like in ``tests/test_notebooks.py`` (nbclient, a fresh kernel of this
interpreter with the checkout on ``PYTHONPATH``, a cell injected after the one tagged
``parameters``), with the budget of :data:`GALLERY` instead of the tests' tiny one and figures
drawn at :data:`DPI`. Two cells are injected: one tagged ``remove-cell`` that sets the figure
resolution (the documentation leaves it out) and one tagged ``injected-parameters`` that sets
the budget (shown on the rendered page, so that a reader sees which budget the outputs come
from). The run writes

* ``notebooks/executed/<notebook>.ipynb``: the notebook with its outputs, the notebook the
  documentation site renders (``docs/_ext/generated_pages.py``; the stored
  ``notebooks/<notebook>.ipynb`` stay without outputs, for Colab). Timing metadata is dropped
  and the notebook metadata is the stored one, so that a rerun changes only what the run
  changed;
* ``notebooks/figures/<notebook>_<n>.png``: every ``image/png`` output (``n`` from 1, in
  output order), the gallery of ``docs/notebooks.md``.

The printed text outputs go to stdout. ``tests/test_notebooks.py`` fails when an executed
notebook does not hold the cells of its stored notebook, when its injected budget is not the
one below, or when a figure differs from its output: rerun this script then.
"""

from __future__ import annotations

import base64
import copy
import pathlib
import sys
import tempfile
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_notebooks import NOTEBOOKS, execute, write_kernelspec

FIGURES = NOTEBOOKS / "figures"
EXECUTED = NOTEBOOKS / "executed"
DPI = 80
#: The tags of the two injected cells.
STYLE_TAGS = ["remove-cell", "injected-style"]
BUDGET_TAGS = ["injected-parameters"]
#: The first line of the injected budget cell.
BUDGET_HEADER = "# The budget of this rendered run (notebooks/_gallery.py), instead of the defaults above"

#: notebook -> the injected parameters: the notebooks' own defaults (a few minutes each on a
#: 2-core CPU), except mamba_recall, whose default budget wants a GPU: there a short run.
GALLERY = {
    "quickstart": "STEPS = 150\nSEEDS = 2\nWIDTH, DEPTH, HEADS = 32, 2, 2",
    "vit": "STEPS = 300\nSEEDS = 3\nWIDTH, DEPTH, HEADS = 32, 2, 2",
    "convmixer": "STEPS = 200\nSEEDS = 2\nWIDTH, DEPTH, KERNEL = 16, 3, 5\nTRAIN_FROZEN = True",
    "mamba_recall": "STEPS = 60\nSEEDS = 2\nD_MODEL, LAYERS, D_STATE = 32, 2, 8\nSEQ_LEN, PAIRS, VOCAB = 32, 4, 32",
    "emergence": "EPOCHS = 6\nSEEDS = 2\nALPHAS = [1.0, 1.1, 1.5, 2.0]\nWIDTH, HIDDEN_LAYERS = 128, 4",
    "fuseinit": "STEPS1 = 300\nSTEPS2 = 200\nSEEDS = 2\nWIDTH = 64",
}
#: set before pyplot is imported (the inline backend applies its own rc when it starts).
STYLE = (
    f'%config InlineBackend.rc = {{"figure.dpi": {DPI}}}\nimport matplotlib\nmatplotlib.rcParams["figure.dpi"] = {DPI}'
)


def budget_cell_source(name: str) -> str:
    """The source of the budget cell injected into ``name``."""
    return f"{BUDGET_HEADER}\n{GALLERY[name]}"


def with_gallery_cells(nb, name: str):
    """``nb`` with the style and the budget cells after its one cell tagged ``parameters``."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{name}: expected one cell tagged 'parameters', found {len(tagged)}")
    style = nbformat.v4.new_code_cell(STYLE, metadata={"tags": list(STYLE_TAGS)}, id="injected-style")
    budget = nbformat.v4.new_code_cell(
        budget_cell_source(name), metadata={"tags": list(BUDGET_TAGS)}, id="injected-parameters"
    )
    nb.cells[tagged[0] + 1 : tagged[0] + 1] = [style, budget]
    return nb


def is_injected(cell) -> bool:
    """Whether ``cell`` is one of the two cells :func:`with_gallery_cells` injects."""
    tags = cell.metadata.get("tags", [])
    return "injected-style" in tags or "injected-parameters" in tags


def cleaned(nb, stored):
    """``nb`` (executed) with the stored notebook's metadata and without timing metadata."""
    nb = copy.deepcopy(nb)
    nb.metadata = copy.deepcopy(stored.metadata)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def pngs(nb) -> list[bytes]:
    """Every ``image/png`` output of ``nb``, in output order."""
    return [
        base64.b64decode(out["data"]["image/png"])
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]


def save(nb, name: str) -> list[pathlib.Path]:
    """Write ``nb`` to ``executed/<name>.ipynb`` and its figures to ``figures/<name>_<n>.png``; print its text."""
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream":
                print(out.text, end="")
    EXECUTED.mkdir(exist_ok=True)
    nbformat.write(nb, EXECUTED / f"{name}.ipynb")
    paths = []
    for png in pngs(nb):
        path = FIGURES / f"{name}_{len(paths) + 1}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(GALLERY))
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; expected some of {sorted(GALLERY)}")
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kernels = write_kernelspec(pathlib.Path(tmp))
        for name in names or sorted(GALLERY):
            for old in FIGURES.glob(f"{name}_*.png"):
                old.unlink()
            stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
            start = time.perf_counter()
            print(f"=== {name}: {GALLERY[name]!r}", flush=True)
            nb = execute(with_gallery_cells(copy.deepcopy(stored), name), kernels, timeout=900)
            paths = save(cleaned(nb, stored), name)
            print(
                f"=== {name}: {time.perf_counter() - start:.0f} s, "
                f"{[f'{p.name} ({p.stat().st_size // 1024} KiB)' for p in paths]}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
