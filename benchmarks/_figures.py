"""Figures by reference to ``benchmarks/results/*.json``: the one source of every number a reader sees.

The README's results block (``benchmarks/_readme.py``) and the documentation's pages
(``docs/_ext/generated_pages.py``) never type a measured number; they name it, and this module
reads it from the result file that holds it. Two references, written the same way in both places
(MyST role syntax):

- ``{fig}`STEM:PATH#FORMAT``` — one value of ``benchmarks/results/STEM.json``.
  ``PATH`` walks the JSON by ``/``-separated steps: a key (``datasets/digits/main/final``), a list
  index (``[0]``, ``[-1]``) or the record of a list whose fields have values (``models/[model=ViT-B/16]``,
  ``rows/[version=1&d_state=8]``).
  ``PATH`` may end in operations on the per-seed lists it reaches, each after a ``~``:
  ``~col:I`` (column ``I`` of a seeds × checkpoints matrix), ``~minus:PATH2`` (minus the same-shaped
  list at ``PATH2``, the paired difference; ``@STEM2:PATH2`` takes it from another file, paired by
  seed when both runs used the same seeds), ``~div:PATH2`` (divided by the number at ``PATH2``: a
  ratio of two timings), ``~mean``, ``~std`` (ddof 1), ``~min``, ``~max``,
  ``~n``, ``~wins`` / ``~losses`` (how many are above / below zero) and ``~p`` (two-sided
  one-sample t-test against zero: on paired differences, the paired t-test).
  ``FORMAT`` is a Python format spec (``.2f``, ``+.1f``, ``.2g``, ``d``), optionally preceded by
  ``%`` (the value times 100: accuracies and differences in percent or percentage points) or ``ms``
  (times 1000: seconds as milliseconds) or ``GiB`` (bytes as GiB), and
  followed by ``±`` (the path ends in ``mean``: ``X_mean``, ``X/mean`` or ``~mean``; the same
  path ending in ``std`` follows it as ``mean ± std``). Without ``#FORMAT``. (``#``, not ``|``: a ``|`` would split a
  Markdown table cell.) a number gets four significant digits.
- ``{src}`STEM``` — where ``STEM.json`` was measured: the machine, the versions, the date
  (from its ``machine`` block).

A reference that does not resolve (no file, no key, a non-number under a number format) raises
:class:`FigureError`, which the docs build turns into an error and the tests into a failure.

Example::

    >>> expand("fast: {fig}`init_cost:models/[model=ViT-B/16]/ratio_fast_steady#.2f`x")  # doctest: +SKIP
    'fast: 1.20x'
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: A reference as written in a page: ``{fig}`STEM:PATH#FORMAT``` or ``{src}`STEM```.
REFERENCE = re.compile(r"\{(fig|src)\}`([^`]+)`")
_STEP = re.compile(r"\[[^\]]*\]|[^/]+")


class FigureError(ValueError):
    """A figure reference that does not resolve against ``benchmarks/results/``."""


@functools.cache
def _load_cached(stem: str, mtime: float) -> dict:
    return json.loads((RESULTS / f"{stem}.json").read_text(encoding="utf-8"))


def load(stem: str) -> dict:
    """The result file ``benchmarks/results/STEM.json`` (re-read when it changes)."""
    path = RESULTS / f"{stem}.json"
    if not re.fullmatch(r"[\w.-]+", stem) or not path.is_file():
        raise FigureError(f"no result file benchmarks/results/{stem}.json")
    return _load_cached(stem, path.stat().st_mtime)


def lookup(data: Any, path: str) -> Any:
    """The value at ``path`` (``/``-separated keys, ``[i]`` indices, ``[field=value]`` selectors)."""
    node = data
    walked: list[str] = []
    for step in _STEP.findall(path.strip("/")):
        where = "/".join(walked) or "the top level"
        if step.startswith("["):
            inner = step[1:-1]
            if not isinstance(node, list):
                raise FigureError(f"{step} needs a list at {where}, found {type(node).__name__}")
            if "=" in inner:
                conditions = [c.partition("=")[::2] for c in inner.split("&")]
                hits = [r for r in node if isinstance(r, dict) and all(str(r.get(f)) == want for f, want in conditions)]
                if len(hits) != 1:
                    raise FigureError(f"{len(hits)} records with {inner} at {where} (need exactly one)")
                node = hits[0]
            else:
                try:
                    node = node[int(inner)]
                except (ValueError, IndexError) as err:
                    raise FigureError(f"no index {step} at {where}") from err
        else:
            if not isinstance(node, dict) or step not in node:
                keys = sorted(node)[:12] if isinstance(node, dict) else type(node).__name__
                raise FigureError(f"no key {step!r} at {where} (has {keys})")
            node = node[step]
        walked.append(step)
    return node


def _vector(x: Any, op: str) -> list[float]:
    if not isinstance(x, list) or not x or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
        raise FigureError(f"~{op} needs a list of numbers, found {str(x)[:60]}")
    return [float(v) for v in x]


def _minus(a: Any, b: Any) -> Any:
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise FigureError(f"~minus: lists of {len(a)} and {len(b)} values")
        return [_minus(x, y) for x, y in zip(a, b)]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a - b
    raise FigureError("~minus needs numbers or lists of the same shape")


def apply(data: Any, value: Any, op: str) -> Any:
    """One ``~op`` of a path (see the module docstring) on ``value``; ``data`` is the whole file."""
    name, _, arg = op.partition(":")
    if name == "col":
        if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
            raise FigureError("~col needs a list of lists (seeds × checkpoints)")
        try:
            return [r[int(arg)] for r in value]
        except (ValueError, IndexError) as err:
            raise FigureError(f"no column {arg!r}") from err
    if name == "minus":
        if arg.startswith("@"):
            other, _, arg = arg[1:].partition(":")
            return _minus(value, lookup(load(other), arg))
        return _minus(value, lookup(data, arg))
    if name == "div":
        return _number(value, op) / _number(lookup(data, arg), op)
    v = _vector(value, name)
    if name == "mean":
        return statistics.fmean(v)
    if name == "std":
        return statistics.stdev(v) if len(v) > 1 else float("nan")
    if name in ("min", "max"):
        return min(v) if name == "min" else max(v)
    if name == "n":
        return len(v)
    if name == "wins":
        return sum(x > 0 for x in v)
    if name == "losses":
        return sum(x < 0 for x in v)
    if name == "p":
        from scipy import stats  # scikit-learn's dependency: in every extra that builds the docs

        return float(stats.ttest_1samp(v, 0.0).pvalue)
    raise FigureError(f"unknown operation ~{op}")


def value(data: Any, path: str) -> Any:
    """The value at ``path``, its ``~`` operations applied."""
    steps = path.split("~")
    node = lookup(data, steps[0])
    for op in steps[1:]:
        node = apply(data, node, op.strip())
    return node


def _number(x: Any, ref: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise FigureError(f"{ref}: {x!r} is not a finite number")
    return float(x)


def format_value(x: Any, spec: str, ref: str = "") -> str:
    """``x`` under ``spec`` (``[%]SPEC``; see the module docstring). Minus signs are typographic."""
    if spec.startswith("%"):
        x, spec = _number(x, ref) * 100, spec[1:]
    elif spec.startswith("ms"):
        x, spec = _number(x, ref) * 1000, spec[2:]
    elif spec.startswith("GiB"):
        x, spec = _number(x, ref) / 2**30, spec[3:]
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        if spec:
            raise FigureError(f"{ref}: {x!r} is not a number (format {spec!r})")
        return str(x)
    if not spec:
        text = str(x) if isinstance(x, int) else f"{x:.4g}"
    else:
        try:
            text = format(_number(x, ref) if spec[-1] in "eEfFgG%" else x, spec)
        except (TypeError, ValueError) as err:
            raise FigureError(f"{ref}: cannot format {x!r} as {spec!r}") from err
    return text.replace("-", "−")


def figure(ref: str) -> str:
    """The text of ``{fig}`ref```: ``STEM:PATH#FORMAT``."""
    target, _, spec = ref.partition("#")
    stem, sep, path = target.partition(":")
    if not sep:
        raise FigureError(f"{ref!r}: a figure is STEM:PATH[#FORMAT]")
    data = load(stem.strip())
    pm = spec.endswith("±")
    spec = spec.rstrip("±").strip()
    path = path.strip()
    text = format_value(value(data, path), spec, ref)
    if pm:
        if not path.endswith("mean"):
            raise FigureError(f"{ref!r}: '±' needs a PATH ending in mean (_mean, /mean or ~mean)")
        std = value(data, path[: -len("mean")] + "std")
        text += " ± " + format_value(std, spec.replace("+", ""), ref)
    return text


def machine(stem: str) -> str:
    """Where ``STEM.json`` was measured: device, JAX/Flax versions, date (``{src}`STEM```)."""
    m = load(stem).get("machine")
    if not isinstance(m, dict) or not m.get("date_utc"):
        raise FigureError(f"benchmarks/results/{stem}.json records no machine and date")
    if m.get("backend", "cpu") == "cpu":
        where = f"{m.get('usable_cores')}-core {m.get('cpu_model')} CPU"
    else:
        where = f"{m.get('device_count', 1)}× {m.get('device_kind')}"
    versions = ", ".join(f"{name} {m[key]}" for name, key in (("JAX", "jax"), ("Flax", "flax")) if m.get(key))
    return f"{where}, {versions}, {str(m['date_utc'])[:10]}"


def resolve(kind: str, arg: str) -> str:
    """The text of one reference (``kind`` ``fig`` or ``src``)."""
    if kind == "fig":
        return figure(arg)
    if kind == "src":
        return f"{arg.strip()}: {machine(arg.strip())}"
    raise FigureError(f"unknown reference kind {kind!r}")


def expand(text: str) -> str:
    """``text`` with every ``{fig}``/``{src}`` reference replaced by its value (plain text)."""
    return REFERENCE.sub(lambda m: resolve(m.group(1), m.group(2)), text)


def references(text: str) -> list[tuple[str, str]]:
    """The ``(kind, argument)`` of every reference in ``text``."""
    return REFERENCE.findall(text)


def stem_of(kind: str, arg: str) -> str:
    """The result file a reference reads."""
    return (arg.partition(":")[0] if kind == "fig" else arg).strip()
