"""Run every notebook headless at a small budget and save its figures for the README gallery.

    python notebooks/_gallery.py [NAME ...]      # default: every notebook

Each notebook executes like in ``tests/test_notebooks.py`` (nbclient, a fresh kernel of this
interpreter with the checkout on ``PYTHONPATH``, a cell injected after the one tagged
``parameters``), with the budget of :data:`GALLERY` instead of the tests' tiny one and figures
drawn at :data:`DPI`. Every ``image/png`` output is written to
``notebooks/figures/<notebook>_<n>.png`` (``n`` from 1, in output order); the printed text
outputs go to stdout. The notebooks themselves are not changed.
"""

from __future__ import annotations

import base64
import pathlib
import sys
import tempfile
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_notebooks import NOTEBOOKS, execute, with_parameters, write_kernelspec  # noqa: E402

FIGURES = NOTEBOOKS / "figures"
DPI = 80

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


def save_figures(nb, name: str) -> list[pathlib.Path]:
    """Write every ``image/png`` output of ``nb`` to ``figures/<name>_<n>.png``; print the text outputs."""
    paths = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream":
                print(out.text, end="")
            png = out.get("data", {}).get("image/png")
            if png:
                path = FIGURES / f"{name}_{len(paths) + 1}.png"
                path.write_bytes(base64.b64decode(png))
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
            nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
            start = time.perf_counter()
            print(f"=== {name}: {GALLERY[name]!r}", flush=True)
            nb = execute(with_parameters(nb, name, f"{STYLE}\n{GALLERY[name]}"), kernels, timeout=900)
            paths = save_figures(nb, name)
            print(
                f"=== {name}: {time.perf_counter() - start:.0f} s, "
                f"{[f'{p.name} ({p.stat().st_size // 1024} KiB)' for p in paths]}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
