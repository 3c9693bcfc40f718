"""The documentation site's sources: the API reference covers the public API, the generated pages
(benchmark results, citation) come from their data files, the getting-started snippets run.

The full build (Sphinx, warnings as errors) runs in ``.ci/run``; these tests are the fast part.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import pytest

import mimetic_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def load_generator():
    """``docs/_ext/generated_pages.py`` as a module (a Sphinx extension, not part of the package)."""
    spec = importlib.util.spec_from_file_location("generated_pages", DOCS / "_ext" / "generated_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def api_names() -> set[str]:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    return set(re.findall(r"^\s+(mimetic_jax\.[\w.]+)\s*$", text, flags=re.M))


def test_the_api_reference_lists_every_public_name():
    listed = api_names()
    submodules = {"nn", "fuse"}
    expected = {f"mimetic_jax.{n}" for n in mimetic_jax.__all__ if n not in submodules}
    # the FuseInit names are documented under their module (and re-exported at the top level)
    fuse_names = {f"mimetic_jax.{n}" for n in mimetic_jax.fuse.__all__}
    missing = {n for n in expected - listed if n.replace("mimetic_jax.", "mimetic_jax.fuse.") not in listed}
    assert missing == set(), f"add to docs/api.rst: {sorted(missing)}"
    assert {n.replace("mimetic_jax.", "mimetic_jax.fuse.") for n in fuse_names} <= listed
    assert {f"mimetic_jax.nn.{n}" for n in mimetic_jax.nn.__all__} <= listed


def test_the_api_reference_names_only_objects_that_exist():
    for name in sorted(api_names()):
        module, _, attr = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attr), name


def test_every_result_file_but_smoke_runs_gets_a_page_naming_its_machine(tmp_path, monkeypatch):
    gen = load_generator()
    monkeypatch.setattr(gen, "OUT", tmp_path)
    gen.benchmark_pages()
    stems = sorted(p.name[: -len(".json")] for p in RESULTS.glob("*.json") if not p.name.endswith(".quick.json"))
    pages = sorted(p.stem for p in (tmp_path / "benchmarks").glob("*.md"))
    assert pages == stems and stems
    index = (tmp_path / "benchmarks.inc").read_text()
    for stem in stems:
        data = json.loads((RESULTS / f"{stem}.json").read_text())
        page = (tmp_path / "benchmarks" / f"{stem}.md").read_text()
        machine = data["machine"]
        assert "**Machine:**" in page and str(machine["cpu_model"]) in page, stem
        if machine["backend"] != "cpu":
            assert str(machine["device_kind"]) in page, stem
        assert f"_generated/benchmarks/{stem}.md" in index
        assert "|---|" in page, f"{stem}: no table"
    assert not list((tmp_path / "benchmarks").glob("*quick*"))


def test_a_training_page_shows_the_paired_result_of_its_json(tmp_path, monkeypatch):
    gen = load_generator()
    monkeypatch.setattr(gen, "OUT", tmp_path)
    gen.benchmark_pages()
    data = json.loads((RESULTS / "training.json").read_text())
    final = data["datasets"]["digits"]["main"]["per_checkpoint"][-1]
    page = (tmp_path / "benchmarks" / "training.md").read_text()
    row = gen.pm(final["diff_mean"], final["diff_std"])
    assert row in page and f"{final['wins']}/{final['ties']}/{final['losses']}" in page


def test_the_citation_page_cites_the_package_and_every_reference(tmp_path, monkeypatch):
    yaml = pytest.importorskip("yaml")
    gen = load_generator()
    monkeypatch.setattr(gen, "OUT", tmp_path)
    gen.citation_page()
    page = (tmp_path / "citation.inc").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert "@software{mimetic_jax" in page and cff["version"] in page
    for ref in cff["references"]:
        assert ref["title"] in page
    assert page.count("```bibtex") == 1 + len(cff["references"])


def test_every_scheme_page_has_the_math_the_paper_what_is_ours_results_and_caveats():
    for name in ("attention", "conv_mlp", "ssm", "emergence", "fuse"):
        text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
        for heading in ("## The math", "## What is ours", "## Measured results", "## Caveats"):
            assert heading in text, f"docs/{name}.md lacks {heading!r}"
        assert "**Paper" in text and "arxiv.org/abs/" in text, name
        assert "_generated/benchmarks/" in text or "benchmarks.md" in text, name


def test_the_getting_started_snippets_run():
    """Every Python block of docs/getting_started.md, in order, in one namespace."""
    text = (DOCS / "getting_started.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "getting_started.md", "exec"), namespace)
    report = namespace["report"]
    assert "params/attention/query/kernel" in str(report) and "params/fc1/kernel" not in str(report)
    printed = re.search(r"```text\n(.*?)```", text, flags=re.S).group(1)
    assert printed.strip() == str(report).strip()


def first_python_block(path: pathlib.Path) -> str:
    return re.search(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S).group(1)


def test_the_readme_and_the_landing_page_open_with_the_same_short_snippet_and_it_runs():
    """The first Python snippet: the same on both, at most 10 lines of at most 76 characters.

    76 characters fit the landing page's code column at 1280 px (about 78 measured in headless
    Chromium, tests/test_docs_browser.py) and GitHub's README column, so neither scrolls.
    """
    snippet = first_python_block(ROOT / "README.md")
    assert snippet == first_python_block(DOCS / "index.md"), "README.md and docs/index.md open with different snippets"
    lines = snippet.splitlines()
    assert len(lines) <= 10 and max(len(line) for line in lines) <= 76, lines
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    import jax

    before = namespace["model"].init(jax.random.key(0), namespace["x"])
    after = namespace["params"]
    assert jax.tree.structure(before) == jax.tree.structure(after)
    assert not (before["params"]["query"]["kernel"] == after["params"]["query"]["kernel"]).all()
