"""Pages generated at build time, so that nothing on them is typed by hand.

A Sphinx extension (``builder-inited``, before the sources are read) that writes, under
``docs/_generated/`` (not committed):

* ``benchmarks/<stem>.md``, one page per ``benchmarks/results/<stem>.json`` (``*.quick.json``,
  smoke runs, skipped), and ``benchmarks.inc``, the list of them that ``benchmarks.md``
  includes. Each page names the machine recorded in its file and renders its tables
  generically: a table per list of records or per dictionary of records, accuracy curves
  (seeds x checkpoints) as mean ± std per step. See :func:`benchmark_page`.
* ``citation.inc``: how to cite the package and the papers, read from ``CITATION.cff``.
* ``notebooks/<name>.ipynb``: copies of ``notebooks/executed/*.ipynb``, the notebooks with the
  outputs of ``python notebooks/_gallery.py`` (rendered as stored, not executed at build time).

It also gives the pages three ways to show a figure of ``benchmarks/results/`` without typing it
(resolved by ``benchmarks/_figures.py``; a reference that does not resolve fails the build):

* the role ``{fig}`STEM:PATH#FORMAT```: one value (hover: the file and its machine);
* the role ``{src}`STEM```: a link to the result's page, with machine, versions and date;
* the directive ``{results} STEM`` (option ``:path:``): a part of a result as generated tables.

Run it by hand with ``python docs/_ext/generated_pages.py`` (writes the same files).
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import shutil
import statistics
import sys
from typing import Any

DOCS = pathlib.Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
OUT = DOCS / "_generated"
RESULTS = ROOT / "benchmarks" / "results"

sys.path.insert(0, str(ROOT / "benchmarks"))
import _figures as figures  # benchmarks/ is scripts, not a package

#: Raw data the tables leave out: timing samples, load averages, spectra, per-layer lists.
NOISE = re.compile(
    r"^(times_s|layer_times_s|per_layer_s|load_average.*|interleaved_with|.*spectrum.*|"
    r"ls_error_.*|position_diag_mean|head_diag_mean|after_import)$"
)
#: Columns beyond which a table of few rows is transposed (a row per field).
WIDE = 9


def write_if_changed(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it holds it already (Sphinx rebuilds what changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- formatting


def fmt(x: Any) -> str:
    """A cell: numbers to 4 significant digits, lists inline, Markdown table characters escaped."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "—"
        if x == int(x) and abs(x) < 1e6:
            return str(int(x)) if abs(x) >= 1 or x == 0 else f"{x:g}"
        return f"{x:.4g}"
    if isinstance(x, list):
        return ", ".join(fmt(v) for v in x)
    return str(x).replace("|", "\\|").replace("\n", " ")


def pm(mean: Any, std: Any) -> str:
    """``mean ± std``, the std to two significant digits and the mean to the same decimal place."""
    if not is_number(mean):
        return fmt(mean)
    if not is_number(std) or not math.isfinite(std):
        return fmt(mean)
    if std == 0:
        return f"{fmt(mean)} ± 0"
    decimals = min(8, max(0, 1 - math.floor(math.log10(abs(std)))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def mean_std(values: list[float]) -> str:
    """``mean ± std (n)`` of a sample (std with ddof=1, as the benchmark scripts report)."""
    values = [v for v in values if is_number(v) and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt(values[0])
    return f"{pm(statistics.mean(values), statistics.stdev(values))} (n={len(values)})"


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_vector(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(is_number(v) or v is None for v in x)


def is_matrix(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(is_vector(r) for r in x) and len({len(r) for r in x}) == 1


def cell(x: Any, name: str = "") -> str:
    """A leaf as a table cell: short or integer lists inline, samples of floats as mean ± std.

    A byte count (a ``*bytes`` field) is shown in GiB.
    """
    if str(name).endswith("bytes") and is_number(x):
        return f"{x / 2**30:.2f} GiB"
    if is_matrix(x):
        return f"{len(x)}×{len(x[0])} values"
    if is_vector(x):
        if len(x) <= 2 or all(isinstance(v, int) for v in x):
            return fmt(x) if len(x) <= 8 else f"{len(x)} values"
        return mean_std(x)
    return fmt(x)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; transposed (a row per column) when it is wide and has few rows."""
    if len(headers) > WIDE and len(rows) < len(headers) - 1:
        headers, rows = (
            [headers[0]] + [r[0] for r in rows],
            [[h] + [r[i] for r in rows] for i, h in enumerate(headers) if i > 0],
        )
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- records


def leaves(record: dict, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """The leaves of a record, nested keys joined by `` / `` (at most three levels), noise left out."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if NOISE.match(str(k)):
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            out.update(leaves(v, f"{name} / ", depth + 1))
        elif not isinstance(v, (dict, list)) or is_vector(v):  # matrices: curves tables (walk)
            out[name] = v
    return out


def is_record(x: Any) -> bool:
    """A dict whose leaves (up to two levels) are scalars or numbers, i.e. a table row."""
    if not isinstance(x, dict) or not x:
        return False

    def flat(d: dict, depth: int) -> bool:
        for k, v in d.items():
            if isinstance(v, dict):
                if depth >= 1 or not flat(v, depth + 1):
                    return False
            elif isinstance(v, list) and not (is_vector(v) or is_matrix(v) or NOISE.match(str(k))):
                return False
        return True

    return flat(x, 0)


def records_alike(values: list) -> bool:
    """Rows of one table: records sharing most of their keys, none with curves of its own (``*steps``)."""
    if not all(is_record(r) for r in values):
        return False
    if any(str(k).endswith("steps") and is_vector(r[k]) for r in values for k in r):
        return False
    # a failed run records an error instead of its data: it is a row all the same
    keys = [set(r) for r in values if "error" not in r] or [set(r) for r in values]
    return len(set.intersection(*keys)) * 2 >= len(set.union(*keys))


def merge_columns(columns: list[str]) -> list[tuple[str, list[str]]]:
    """Columns to show: ``X_mean``/``X_std`` as one ``X`` (mean ± std), ``wins/ties/losses`` as W/T/L."""
    out, used = [], set()
    for c in columns:
        if c in used:
            continue
        stem = c[: -len("mean")] if c.endswith("mean") else None
        if stem is not None and f"{stem}std" in columns:
            out.append((stem.rstrip("_ /") or "mean ± std", [c, f"{stem}std"]))
            used |= {c, f"{stem}std"}
        elif c.endswith("wins") and c[:-4] + "losses" in columns:
            group = [c] + [c[:-4] + s for s in ("ties", "losses") if c[:-4] + s in columns]
            out.append((c[:-4] + "W/T/L" if len(group) == 3 else c[:-4] + "W/L", group))
            used |= set(group)
        else:
            out.append((c, [c]))
    return out


def record_table(names: list[str] | None, records: list[dict], first: str = "") -> str:
    """A table of records (a row each; ``names`` in a first column when given)."""
    flat = [leaves(r) for r in records]
    columns: list[str] = []
    for f in flat:
        columns += [c for c in f if c not in columns]
    shown = merge_columns(columns)
    headers = ([first or "name"] if names is not None else []) + [h for h, _ in shown]
    rows = []
    for i, f in enumerate(flat):
        row = [fmt(names[i])] if names is not None else []
        for _, keys in shown:
            if len(keys) == 2 and keys[0].endswith("mean"):
                m, s = f.get(keys[0]), f.get(keys[1])
                row.append("—" if m is None else pm(m, s))
            elif len(keys) > 1:
                row.append("/".join(fmt(f.get(k)) for k in keys))
            else:
                row.append(cell(f.get(keys[0]), keys[0]))
        rows.append(row)
    return table(headers, rows)


def curves_table(steps: list, curves: dict[str, list[list[float]]]) -> str:
    """Curves (seeds × checkpoints, one per arm): a row per step, mean ± std over seeds per arm."""
    headers = ["step"] + [fmt(k) for k in curves]
    rows = [[fmt(s)] + [mean_std([seed[j] for seed in m]) for m in curves.values()] for j, s in enumerate(steps)]
    return table(headers, rows)


# --------------------------------------------------------------------------- the walk


def walk(node: Any, title: str, level: int, steps: list | None) -> str:
    """Markdown for one part of a result: scalars as a list, records as tables, the rest by section."""
    if not isinstance(node, dict):
        return ""
    steps = node.get("steps") if is_vector(node.get("steps")) else steps
    parts: list[str] = []
    scalars = {
        k: v
        for k, v in node.items()
        if not NOISE.match(str(k))
        and (not isinstance(v, (dict, list)) or is_vector(v))
        and not (str(k).endswith("steps") and is_vector(v))
    }
    if scalars:
        parts.append("".join(f"- {fmt(k)}: {cell(v, k)}\n" for k, v in scalars.items()) + "\n")
    step_keys = [k for k, v in node.items() if str(k).endswith("steps") and is_vector(v)]
    grouped: dict[str, dict[str, list]] = {}
    for k, v in node.items():
        if is_matrix(v) and not NOISE.match(str(k)):
            fits = [s for s in step_keys if len(node[s]) == len(v[0])]
            own = [s for s in fits if str(k).startswith(str(s)[: -len("steps")])]
            if own or fits:
                grouped.setdefault((own or fits)[0], {})[k] = v
            elif steps is not None and len(steps) == len(v[0]):  # the steps of an enclosing part
                grouped.setdefault("", {})[k] = v
    for key, curves in grouped.items():
        parts.append(
            f"Curves{f' (`{key}`)' if key else ''}, mean ± std over seeds:\n\n"
            + curves_table(node[key] if key else steps, curves)
            + "\n"
        )
    subs = {
        k: v
        for k, v in node.items()
        if isinstance(v, (dict, list)) and not NOISE.match(str(k)) and not is_vector(v) and not is_matrix(v)
    }
    siblings = {k: v for k, v in subs.items() if isinstance(v, dict)}

    def is_table(d: dict) -> bool:  # a dictionary of records is a table of its own, not a row
        return len(d) >= 2 and all(isinstance(r, dict) for r in d.values()) and records_alike(list(d.values()))

    if (
        len(siblings) >= 2
        and len(siblings) < len(subs | scalars)
        and not any(is_table(v) for v in siblings.values())
        and records_alike(list(siblings.values()))
    ):
        # records beside scalars (``{"default": {...}, "mimetic": {...}, "seconds": 98}``): one table
        parts.append(record_table([str(k) for k in siblings], list(siblings.values()), first=title) + "\n")
        subs = {k: v for k, v in subs.items() if k not in siblings}
    for k, v in subs.items():
        heading = "#" * min(level, 6) + f" {fmt(k)}\n\n"
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            records = [r for r in v if is_record(r)]
            if records:
                rows = ["step"] if steps is not None and len(steps) == len(records) else None
                if rows:
                    records = [{"step": s, **r} for s, r in zip(steps, records, strict=True)]
                parts.append(heading + record_table(None, records) + "\n")
            for i, r in enumerate(v):  # the parts of records that are not flat (nested lists of records)
                nested = {
                    kk: vv
                    for kk, vv in r.items()
                    if isinstance(vv, list) and vv and all(isinstance(x, dict) for x in vv)
                }
                if nested:
                    label = ", ".join(f"{kk} {fmt(vv)}" for kk, vv in r.items() if not isinstance(vv, (dict, list)))
                    parts.append(
                        walk(nested, f"{k} {i}", level + 1, steps).replace(
                            "#" * min(level + 1, 6) + " ", "#" * min(level + 1, 6) + f" {label or i}: "
                        )
                    )
        elif isinstance(v, dict) and len(v) >= 2 and records_alike(list(v.values())):
            inner_curves = {n: r for n, r in v.items() if any(is_matrix(x) for x in r.values())}
            body = record_table(list(v), list(v.values()), first=fmt(k))
            if steps is not None and inner_curves:
                fields = sorted(
                    {f for r in inner_curves.values() for f, x in r.items() if is_matrix(x) and len(x[0]) == len(steps)}
                )
                for f in fields:
                    body += f"\n{fmt(f)}, mean ± std over seeds:\n\n" + curves_table(
                        steps, {n: r[f] for n, r in inner_curves.items() if is_matrix(r.get(f))}
                    )
            parts.append(heading + body + "\n")
        elif isinstance(v, dict):
            inner = walk(v, fmt(k), level + 1, steps)
            if inner.strip():
                parts.append(heading + inner)
    return "".join(parts)


# --------------------------------------------------------------------------- pages


def machine_line(m: dict) -> str:
    """The machine a result file records, in one sentence."""
    device = m.get("backend", "?")
    if m.get("backend") != "cpu":
        device += f" ({m.get('device_kind')}, {m.get('device_count')} device(s))"
    cpu = f"{m.get('cpu_model')} ({m.get('machine')}), {m.get('usable_cores')} usable cores of {m.get('cpu_count')}"
    if m.get("mem_total_gib"):
        cpu += f", {m['mem_total_gib']} GiB RAM"
    versions = ", ".join(
        f"{k} {m[v]}"
        for k, v in (("JAX", "jax"), ("jaxlib", "jaxlib"), ("Flax", "flax"), ("NumPy", "numpy"), ("Python", "python"))
        if m.get(v)
    )
    load = ""
    if m.get("load_average_at_start") is not None:
        load = (
            f" Load average (1/5/15 min) at start {fmt(m['load_average_at_start'])}"
            + (f", at end {fmt(m['load_average_at_end'])}" if m.get("load_average_at_end") else "")
            + "."
        )
    threads = f" XLA:CPU pool: {m['xla_pool_threads']} threads." if m.get("xla_pool_threads") else ""
    return f"{device} on {cpu}; {versions}; {m.get('date_utc', 'date not recorded')}.{threads}{load}"


def script_of(benchmark: str) -> str:
    """The script that wrote a result (``training_fast`` -> ``training.py``: the name with its ``--tag``)."""
    scripts = sorted(
        (p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")), key=len, reverse=True
    )
    return next((s for s in scripts if benchmark == s or benchmark.startswith(s + "_")), benchmark) + ".py"


def consecutive_headings(text: str) -> str:
    """``text`` with no heading more than one level below the one before it (MyST warns otherwise)."""
    out, previous, fenced = [], 1, False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^(#{1,6}) ", line)
        if match:
            level = min(len(match.group(1)), previous + 1)
            line, previous = "#" * level + line[len(match.group(1)) :], level
        out.append(line)
    return "\n".join(out)


def benchmark_page(stem: str, data: dict) -> str:
    """The page of one result file: the machine, the configuration, then every table of the result."""
    bench = data.get("benchmark", stem)
    lines = [
        f"# {stem}\n",
        f"`benchmarks/{script_of(bench)}` wrote `benchmarks/results/{stem}.json`; this page is generated "
        "from that file when the documentation is built.\n",
        f"**Machine:** {machine_line(data.get('machine', {}))}\n",
    ]
    if data.get("script_wall_s"):
        lines.append(f"**Whole script:** {fmt(round(data['script_wall_s']))} s wall.\n")
    rest = {
        k: v
        for k, v in data.items()
        if k not in ("benchmark", "quick", "machine", "script_wall_s", "xla_threads_option", "plot")
    }
    if "config" in rest:
        cfg = rest.pop("config")
        lines.append(
            "## Configuration\n\n"
            + (
                "".join(
                    f"- {fmt(k)}: {fmt(v) if not isinstance(v, dict) else ''}\n"
                    + "".join(f"  - {fmt(kk)}: {fmt(vv)}\n" for kk, vv in (v.items() if isinstance(v, dict) else []))
                    for k, v in cfg.items()
                )
            )
        )
    plot = data.get("plot")
    if isinstance(plot, str) and (RESULTS / plot).is_file():
        lines.append(f"![{plot}](../../../benchmarks/results/{plot})\n")
    lines.append("## Results\n\n" + walk(rest, stem, 3, None))
    return consecutive_headings("\n".join(lines))


def benchmark_pages() -> None:
    """Every ``benchmarks/results/*.json`` but the smoke runs, as a page, and the list of them."""
    folder = OUT / "benchmarks"
    stems = sorted(p.name[: -len(".json")] for p in RESULTS.glob("*.json") if not p.name.endswith(".quick.json"))
    rows = []
    for stem in stems:
        data = json.loads((RESULTS / f"{stem}.json").read_text(encoding="utf-8"))
        write_if_changed(folder / f"{stem}.md", benchmark_page(stem, data))
        m = data.get("machine", {})
        where = (
            f"{m.get('device_kind')} ({m.get('backend')})"
            if m.get("backend") != "cpu"
            else f"CPU: {m.get('cpu_model')}, {m.get('usable_cores')} cores"
        )
        wall = data.get("script_wall_s")
        rows.append(
            [
                f"[{stem}](_generated/benchmarks/{stem}.md)",
                f"`{script_of(data.get('benchmark', stem))}`",
                where,
                f"JAX {m.get('jax')}",
                str(m.get("date_utc", "—"))[:10],
                "—" if wall is None else f"{wall / 60:.1f} min",
            ]
        )
    for old in folder.glob("*.md"):
        if old.stem not in stems:
            old.unlink()
    write_if_changed(
        OUT / "benchmarks.inc",
        table(["result", "script", "machine", "JAX", "date", "wall"], rows)
        + "\n```{toctree}\n:hidden:\n\n"
        + "".join(f"_generated/benchmarks/{s}\n" for s in stems)
        + "```\n",
    )


# --------------------------------------------------------------------------- citation


def _authors(people: list[dict], bibtex: bool) -> str:
    names = []
    for p in people:
        if "name" in p:
            names.append("{" + p["name"] + "}" if bibtex else p["name"])
        elif bibtex:
            names.append(", ".join(x for x in (p.get("family-names"), p.get("given-names")) if x))
        else:
            names.append(" ".join(x for x in (p.get("given-names"), p.get("family-names")) if x))
    return " and ".join(names) if bibtex else ", ".join(names)


def _arxiv(ref: dict) -> str | None:
    for ident in ref.get("identifiers", []):
        value = str(ident.get("value", ""))
        if value.lower().startswith("arxiv:"):
            return value.split(":", 1)[1]
    return None


def bibtex(ref: dict, key: str, software: bool = False) -> str:
    """A BibTeX entry for the package (``software``) or one of its references."""
    kind = "software" if software else {"conference-paper": "inproceedings"}.get(ref.get("type"), "article")
    fields = [("title", "{" + ref["title"] + "}"), ("author", _authors(ref.get("authors", []), True))]
    if ref.get("collection-title"):
        fields.append(("booktitle", ref["collection-title"]))
    if ref.get("year"):
        fields.append(("year", str(ref["year"])))
    if software:
        fields += [(k, str(ref[k])) for k in ("version", "license") if ref.get(k)]
        if ref.get("repository-code") or ref.get("url"):
            fields.append(("url", ref.get("repository-code") or ref.get("url")))
    arxiv = _arxiv(ref)
    if arxiv:
        if kind == "article":
            fields.append(("journal", f"arXiv preprint arXiv:{arxiv}"))
        fields += [("eprint", arxiv), ("archivePrefix", "arXiv")]
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields)
    return f"@{kind}{{{key},\n{body}\n}}"


def citation_page() -> None:
    """``citation.inc``: the package's and the papers' entries, from ``CITATION.cff``."""
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    parts = [
        f"{cff.get('message', '')}\n",
        "## The package\n",
        f"{_authors(cff.get('authors', []), False)}, *{cff['title']}*, "
        f"version {cff.get('version', '?')} ({cff.get('license', '')}).\n",
        "```bibtex\n" + bibtex(cff, "mimetic_jax", software=True) + "\n```\n",
        "## The papers it implements\n",
    ]
    for ref in cff.get("references", []):
        first = ref.get("authors", [{}])[0]
        key = (
            re.sub(r"\W", "", (first.get("family-names") or first.get("name") or "anon").lower())
            + str(ref.get("year", ""))
            + re.sub(r"\W", "", ref["title"].split()[0].lower())
        )
        arxiv = _arxiv(ref)
        link = f" [arXiv:{arxiv}](https://arxiv.org/abs/{arxiv})" if arxiv else ""
        venue = f", {ref['collection-title']}" if ref.get("collection-title") else ""
        year = f", {ref['year']}" if ref.get("year") else ""
        parts.append(
            f"### {ref['title']}\n\n{_authors(ref.get('authors', []), False)}{venue}{year}.{link}\n\n"
            "```bibtex\n" + bibtex(ref, key) + "\n```\n"
        )
    write_if_changed(OUT / "citation.inc", "\n".join(parts))


# --------------------------------------------------------------------------- notebooks


def notebook_copies() -> None:
    """The executed notebooks under ``_generated/notebooks/`` (Sphinx reads sources inside ``docs/`` only).

    The site shows every notebook of ``notebooks/`` with its outputs: the copy that
    ``python notebooks/_gallery.py`` wrote to ``notebooks/executed/`` (the stored
    ``notebooks/<name>.ipynb`` carry no outputs). A notebook without an executed copy stops
    the build, naming the command that writes it.
    """
    folder = OUT / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    executed = ROOT / "notebooks" / "executed"
    missing = sorted(name for name in names if not (executed / name).is_file())
    if missing:
        raise RuntimeError(f"no executed copy of {missing} in notebooks/executed/: run python notebooks/_gallery.py")
    for name in names:
        write_if_changed(folder / name, (executed / name).read_text(encoding="utf-8"))
    for old in folder.glob("*.ipynb"):
        if old.name not in names:
            old.unlink()
    figures = ROOT / "notebooks" / "figures"
    if figures.is_dir():
        shutil.copytree(figures, folder / "figures", dirs_exist_ok=True)


# --------------------------------------------------------------------------- API reference


PUBLIC_MODULES = ("mimetic_jax", "mimetic_jax.fuse", "mimetic_jax.nn")


def resolve_public_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a reference to a public object by its public name when the written one fails.

    Docstrings and type hints name objects by their implementation module
    (``mimetic_jax.conv.filter_covariance``, ``mimetic_jax.presets.MimeticReport``) or by a bare
    name relative to it; the reference documents each object once, under its public name
    (``mimetic_jax.filter_covariance``). A ``py`` reference to this package that does not resolve
    is retried as ``<public module>.<last component>``.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not (target.startswith("mimetic_jax.") or "." not in target):
        return None
    domain = env.get_domain("py")
    name = target.rsplit(".", 1)[-1]
    for module in PUBLIC_MODULES:
        candidate = f"{module}.{name}"
        if candidate != target and candidate in domain.objects:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode)
    return None


def value_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """A public constant (a layout, ``PRESETS``) is shown by its value, not by its class's docstring."""
    if what not in ("data", "attribute") or not name.startswith(PUBLIC_MODULES):
        return
    cls_doc = type(obj).__doc__
    if cls_doc and obj.__doc__ == cls_doc:
        import pprint

        kind = type(obj)
        ref = (
            f":class:`~{kind.__module__}.{kind.__qualname__}`"
            if kind.__module__.startswith("mimetic_jax")
            else f"``{kind.__name__}``"
        )
        lines[:] = [f"A {ref}:", "", ".. code-block:: python", ""]
        lines += ["   " + line for line in pprint.pformat(obj, width=96, sort_dicts=False).splitlines()]


def prose_attribute_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Keep napoleon from reading a property's first sentence as ``type: description``.

    Napoleon parses an attribute's or property's docstring ``X: Y`` as type ``X``; when ``X`` is
    prose (it has spaces and no brackets), its colon becomes a dash. Runs before napoleon.
    """
    if what in ("attribute", "property") and lines:
        head, colon, tail = lines[0].partition(": ")
        if colon and " " in head.strip() and not re.search(r"[\[\]`|]", head):
            lines[0] = f"{head} — {tail}"


# --------------------------------------------------------------------------- figures in pages


def results_markdown(stem: str, path: str = "") -> str:
    """Markdown tables of ``STEM.json`` (or of the part at ``path``), headings as bold lines."""
    data = figures.load(stem)
    node = figures.lookup(data, path) if path else {k: v for k, v in data.items() if k not in ("machine", "config")}
    title = path.rstrip("/").rsplit("/", 1)[-1] if path else stem
    steps = None
    if path:  # curves need the steps of the part they sit in
        parent = figures.lookup(data, path.rstrip("/").rsplit("/", 1)[0]) if "/" in path.strip("/") else data
        steps = parent.get("steps") if isinstance(parent, dict) and is_vector(parent.get("steps")) else None
    if not isinstance(node, dict):
        node = {title: node}
    text = walk(node, title, 4, steps)
    return re.sub(r"^#{1,6} (.*)$", r"**\1**", text, flags=re.M)


def _sphinx_parts() -> tuple[type, type, type]:
    """The role and directive classes (built on first use: Sphinx is imported only by the build)."""
    from docutils import nodes
    from docutils.parsers.rst import directives
    from docutils.statemachine import StringList
    from sphinx import addnodes
    from sphinx.util.docutils import SphinxDirective, SphinxRole

    def link(stem: str, refdoc: str) -> Any:
        node = addnodes.pending_xref(
            "",
            refdomain="std",
            reftype="doc",
            reftarget=f"/_generated/benchmarks/{stem}",
            refexplicit=True,
            refdoc=refdoc,
        )
        node += nodes.literal(stem, stem)
        return node

    class FigRole(SphinxRole):
        def run(self) -> tuple[list, list]:
            try:
                value = figures.figure(self.text)
                stem = figures.stem_of("fig", self.text)
                where = figures.machine(stem)
            except figures.FigureError as err:
                msg = self.inliner.reporter.error(f"{{fig}}`{self.text}`: {err}", line=self.lineno)
                return [self.inliner.problematic(self.rawtext, self.rawtext, msg)], [msg]
            return [nodes.abbreviation(value, value, explanation=f"benchmarks/results/{stem}.json ({where})")], []

    class SrcRole(SphinxRole):
        def run(self) -> tuple[list, list]:
            stem = self.text.strip()
            try:
                where = figures.machine(stem)
            except figures.FigureError as err:
                msg = self.inliner.reporter.error(f"{{src}}`{self.text}`: {err}", line=self.lineno)
                return [self.inliner.problematic(self.rawtext, self.rawtext, msg)], [msg]
            return [link(stem, self.env.docname), nodes.Text(f": {where}")], []

    class ResultsDirective(SphinxDirective):
        required_arguments = 1
        option_spec = {"path": directives.unchanged}

        def run(self) -> list:
            stem = self.arguments[0]
            try:
                where = figures.machine(stem)
                text = results_markdown(stem, self.options.get("path", ""))
            except figures.FigureError as err:
                raise self.error(f"results {stem}: {err}") from err
            container = nodes.container(classes=["results"])
            intro = nodes.paragraph()
            intro += nodes.Text("Generated from ")
            intro += link(stem, self.env.docname)
            intro += nodes.Text(f" ({where}):")
            container += intro
            self.state.nested_parse(
                StringList(text.splitlines(), source=f"{stem}.json"), self.content_offset, container
            )
            return [container]

    return FigRole, SrcRole, ResultsDirective


def generate(*_: Any) -> None:
    benchmark_pages()
    citation_page()
    notebook_copies()


def setup(app: Any) -> dict:
    app.connect("builder-inited", generate)
    fig_role, src_role, results_directive = _sphinx_parts()
    app.add_role("fig", fig_role())
    app.add_role("src", src_role())
    app.add_directive("results", results_directive)
    app.connect("missing-reference", resolve_public_name)
    app.connect("autodoc-process-docstring", value_docstring)
    app.connect("autodoc-process-docstring", prose_attribute_docstring, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    generate()
    print(f"wrote {OUT.relative_to(ROOT)}/")
