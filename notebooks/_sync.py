"""Pair the notebooks of this folder with their plain-text sources and write the ``.ipynb`` files.

Each notebook has a source ``notebooks/<name>.md`` (MyST Markdown, paired by jupytext, as in
JAX's own documentation) and a committed ``notebooks/<name>.ipynb`` without outputs (Colab
opens it directly). Edit the ``.md`` (or the ``.ipynb`` in Jupyter with jupytext, then
``jupytext --sync notebooks/<name>.md``) and run::

    python notebooks/_sync.py           # refresh the sources, write the .ipynb files
    python notebooks/_sync.py --check   # exit 1 when something would change

Besides the cells, two parts of every notebook come from the repository address, whose one
place is ``[project.urls] Repository`` in ``pyproject.toml`` (:func:`repository`): the Colab
badge under the title and the setup cell (the first code cell), which installs the package
outside a checkout. This script rewrites both in the ``.md`` from the address: while there is
none, the notebooks have no badge and the setup cell installs ``mimetic_jax[cli]`` by name (it
says how to point it elsewhere). Every notebook has one code cell tagged ``parameters``
(papermill convention) holding its budget; ``tests/test_notebooks.py`` runs each notebook with
that cell overridden to a tiny budget and checks that every ``.ipynb`` holds the cells of its
``.md``.
"""

from __future__ import annotations

import pathlib
import re
import sys

import jupytext
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"
BRANCH = "main"
#: The text format of the sources (jupytext's format name).
FORMAT = "md:myst"
BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\([^)]*\)\n\n"
)


def repository(pyproject: pathlib.Path = PYPROJECT) -> str | None:
    """The repository address, from its one place: ``[project.urls] Repository`` in ``pyproject.toml``.

    ``None`` while the project declares none (not yet published): then the notebooks carry no
    Colab badge and their setup cell installs the package by its name (see :func:`setup_cell`).
    """
    text = pyproject.read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the one key by hand
        section = re.search(r"(?ms)^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text)
        match = section and re.search(r'(?m)^\s*"?Repository"?\s*=\s*"([^"]+)"', section.group(1))
        return match.group(1) if match else None
    return tomllib.loads(text).get("project", {}).get("urls", {}).get("Repository")


def requirement(repo: str | None) -> str:
    """What the setup cell installs outside a checkout: the repository by git when known, else the package name."""
    return f"mimetic_jax[cli] @ git+{repo}" if repo else "mimetic_jax[cli]"


def colab_url(repo: str | None, name: str) -> str | None:
    """The Colab address of ``notebooks/<name>.ipynb`` of a GitHub repository (``None`` otherwise)."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", repo or "")
    if not match:
        return None
    return f"https://colab.research.google.com/github/{match[1]}/{match[2]}/blob/{BRANCH}/notebooks/{name}.ipynb"


def badge(name: str, repo: str | None) -> str:
    """The Colab badge and a blank line, or nothing while the repository address is unknown."""
    url = colab_url(repo, name)
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})\n\n" if url else ""


def setup_cell(repo: str | None) -> str:
    """The first code cell: install mimetic_jax when it is not importable (a fresh Colab runtime)."""
    if repo:
        where = f"from its repository, {repo}"
    else:
        where = "by its package name (this notebook was generated before the repository had an address)"
    return f'''# Setup: install mimetic_jax when it is not importable (a fresh Colab runtime); a checkout uses its copy.
# Outside a checkout it is installed {where}.
# To install it from elsewhere, set REQUIREMENT (or the environment variable MIMETIC_JAX_REQUIREMENT) to any
# pip requirement: "mimetic_jax[cli] @ git+https://<repository address>", a wheel, or a folder you uploaded.
import os
REQUIREMENT = os.environ.get("MIMETIC_JAX_REQUIREMENT", "{requirement(repo)}")
try:
    import mimetic_jax
except ImportError:
    if os.path.exists("../pyproject.toml"):  # running from notebooks/ of a checkout
        %pip install -q -e "..[cli]"
    else:  # Colab / anywhere else
        %pip install -q "{{REQUIREMENT}}"
    import importlib, site
    site.main(); importlib.invalidate_caches()  # see the fresh install without a kernel restart
    try:
        import mimetic_jax
    except ImportError:
        raise ImportError(f"mimetic_jax is not installed and pip could not install {{REQUIREMENT!r}} (see its "
                          "message above). Set REQUIREMENT in this cell to where the package is: "
                          '"mimetic_jax[cli] @ git+https://<repository address>", a wheel, or an uploaded '
                          "checkout folder.") from None

import jax
print(f"mimetic_jax {{mimetic_jax.__version__}}, JAX {{jax.__version__}}, backend: {{jax.default_backend()}}",
      jax.devices())'''


def names(folder: pathlib.Path = HERE) -> list[str]:
    """The notebooks: every ``<name>.md`` source of ``folder``."""
    return sorted(p.stem for p in folder.glob("*.md"))


def cells(nb) -> list[tuple[str, str, list[str]]]:
    """What pairing keeps equal: every cell's type, source and tags."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def refresh(nb, name: str, repo: str | None):
    """``nb`` (a source read by jupytext) with its badge and setup cell made from ``repo``, in place."""
    first, setup = nb.cells[0], next(c for c in nb.cells if c.cell_type == "code")
    title, _, rest = BADGE.sub("", first.source).partition("\n\n")
    if first.cell_type != "markdown" or not title.startswith("# "):
        raise ValueError(f"{name}: the first cell must be Markdown starting with the '# ' title")
    first.source = f"{title}\n\n{badge(name, repo)}{rest}"
    setup.source = setup_cell(repo)
    return nb


def notebook(nb, name: str):
    """The ``.ipynb`` of a source: its cells without outputs, ids ``<name>-<i>``, Colab's metadata."""
    out = new_notebook()
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out.metadata["language_info"] = {"name": "python"}
    out.metadata["colab"] = {"provenance": []}
    out.metadata["accelerator"] = "GPU"
    for i, (kind, source, tags) in enumerate(cells(nb)):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        cell["id"] = f"{name}-{i}"
        out.cells.append(cell)
    nbformat.validate(out)
    return out


def main(folder: pathlib.Path = HERE, check: bool = False) -> list[str]:
    """Refresh every source of ``folder`` and write its ``.ipynb``; the files that changed (or would, with ``check``)."""
    repo, changed = repository(), []
    for name in names(folder):
        source = folder / f"{name}.md"
        nb = jupytext.read(source, fmt=FORMAT)
        before = cells(nb)
        refresh(nb, name, repo)
        if cells(nb) != before:
            changed.append(source.name)
            if not check:
                jupytext.write(nb, source, fmt=FORMAT)
        target, fresh = folder / f"{name}.ipynb", nbformat.writes(notebook(nb, name)) + "\n"
        if not target.exists() or target.read_text() != fresh:
            changed.append(target.name)
            if not check:
                target.write_text(fresh)
    return changed


if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    changed = main(check=check)
    print(("would change: " if check else "wrote: ") + (", ".join(changed) or "nothing"))
    sys.exit(1 if check and changed else 0)
