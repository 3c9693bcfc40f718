"""Every figure a reader sees comes from ``benchmarks/results/*.json``.

The README's results block is regenerated and compared (``benchmarks/_readme.py``); every
``{fig}``/``{src}`` reference and ``{results}`` directive of the documentation resolves against
the result files (``benchmarks/_figures.py``), and every page that quotes a result names where it
was measured; ``benchmarks/results/`` holds one current file per benchmark, each listed in
``benchmarks/README.md``. Fast: no JAX, no Sphinx.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
PAGES = sorted(DOCS.glob("*.md"))


def load(name: str):
    """``benchmarks/<name>.py`` as a module (scripts, not a package)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme = load("_readme")
figures = readme.figures  # the module the generator resolves with

DIRECTIVE = re.compile(r"^```\{results\}[ \t]+(\S+)[ \t]*\n(?::path:[ \t]*(.*)\n)?", re.M)


def test_the_readme_results_block_is_generated_from_the_result_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.BEGIN in text and readme.END in text
    assert readme.render(text) == text, "README.md's results block is stale: run python benchmarks/_readme.py"


def test_a_number_changed_by_hand_in_the_readme_block_is_caught():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = text.index(readme.BEGIN), text.index(readme.END)
    block = text[start:end]
    match = re.search(r"\d\.\d", block)
    assert match
    digit = block[match.end() - 1]
    forged = block[: match.end() - 1] + str((int(digit) + 1) % 10) + block[match.end() :]
    edited = text[:start] + forged + text[end:]
    assert readme.render(edited) == text != edited


def test_a_changed_result_changes_the_readme(monkeypatch):
    before = readme.block()
    real = figures.load

    def doctored(stem):
        data = real(stem)
        if stem == "training":
            data = {**data, "datasets": {**data["datasets"]}}
            digits = dict(data["datasets"]["digits"])
            main = dict(digits["main"])
            main["final"] = {**main["final"], "diff_mean": main["final"]["diff_mean"] + 0.01}
            digits["main"] = main
            data["datasets"]["digits"] = digits
        return data

    monkeypatch.setattr(figures, "load", doctored)
    assert readme.block() != before


def test_the_readme_shows_results_not_targets_and_stays_small():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "✅" not in text and "❌" not in text
    assert len(text.encode("utf-8")) <= 10_000


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_figure_reference_on_a_page_resolves(page):
    text = page.read_text(encoding="utf-8")
    for kind, arg in figures.references(text):
        try:
            figures.resolve(kind, arg)
        except figures.FigureError as err:
            pytest.fail(f"{page.name}: {{{kind}}}`{arg}`: {err}")
    for match in DIRECTIVE.finditer(text):
        figures.lookup(figures.load(match.group(1)), (match.group(2) or "").strip())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_result_quoted_on_a_page_is_named_with_its_machine(page):
    """A page quoting ``STEM`` by ``{fig}`` also names it by ``{src}`` or a ``{results}`` table."""
    text = page.read_text(encoding="utf-8")
    quoted = {figures.stem_of(k, a) for k, a in figures.references(text) if k == "fig"}
    named = {figures.stem_of(k, a) for k, a in figures.references(text) if k == "src"}
    named |= {m.group(1) for m in DIRECTIVE.finditer(text)}
    assert quoted <= named, f"{page.name}: add {{src}}`STEM` for {sorted(quoted - named)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_link_only_current_results_and_carry_no_internal_labels(page):
    text = page.read_text(encoding="utf-8")
    for stem in re.findall(r"_generated/benchmarks/([\w.-]+)\.md", text):
        assert (RESULTS / f"{stem}.json").is_file(), f"{page.name} links a removed result {stem}"
    assert not re.search(r"\bissue \d+", text, re.I), f"{page.name} names an internal issue"
    assert not re.search(r"\bcommit [0-9a-f]{7,40}\b", text), f"{page.name} names a commit"
    assert "current code" not in text, f"{page.name}: say the date of the result instead"


def test_the_changelog_carries_no_internal_labels():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert not re.search(r"\bissue \d+", text, re.I)
    assert not re.search(r"\b(commit|at) [0-9a-f]{7,40}\b", text)


def test_every_result_file_records_machine_versions_and_date_and_is_documented():
    stems = sorted(p.name[: -len(".json")] for p in RESULTS.glob("*.json") if ".quick." not in p.name)
    listed = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for stem in stems:
        assert re.search(r"\d{4}-\d\d-\d\d", figures.machine(stem)), stem
        assert f"`{stem}.json`" in listed, f"benchmarks/README.md does not say which script writes {stem}.json"
    for stem in re.findall(r"`([\w.-]+)\.json`", listed):
        if "NAME" not in stem and "TAG" not in stem and ".quick" not in stem:
            assert stem in stems, f"benchmarks/README.md lists {stem}.json, which is not in results/"


def test_a_reference_that_does_not_resolve_is_an_error():
    with pytest.raises(figures.FigureError, match="no result file"):
        figures.figure("no_such_result:a/b")
    with pytest.raises(figures.FigureError, match="no key"):
        figures.figure("training:datasets/no_such_set/main/final/p")
    with pytest.raises(figures.FigureError, match="not a number"):
        figures.figure("training:config/method#.2f")
    with pytest.raises(figures.FigureError, match="needs a PATH ending in mean"):
        figures.figure("training:datasets/digits/main/final/p#.2f±")


def test_references_read_the_json_values():
    data = figures.load("training")
    final = data["datasets"]["digits"]["main"]["final"]
    ref = "training:datasets/digits/main/final/diff_mean#%+.2f±"
    assert figures.figure(ref) == f"{100 * final['diff_mean']:+.2f} ± {100 * final['diff_std']:.2f}".replace("-", "−")
    # the paired difference computed from per-seed curves equals the one the script stored
    computed = "training:datasets/digits/main/mimetic~minus:datasets/digits/main/default~col:-1~mean"
    assert figures.value(data, computed.split(":", 1)[1]) == pytest.approx(final["diff_mean"], abs=1e-6)
    p = figures.value(data, "datasets/digits/main/mimetic~minus:datasets/digits/main/default~col:-1~p")
    assert p == pytest.approx(final["p"], rel=1e-3)
