"""What the image task (:mod:`~mimetic_jax.experiments.cli`) and the recall tasks
(:mod:`~mimetic_jax.experiments.cli_ssm`) share: the errors, the check for the extra's packages,
and the outputs (table, ``results.json``, ``results.md``, ``compare.png``).

Both command modules import from here, never from each other's module body, so there is no
import cycle; :mod:`mimetic_jax.experiments.cli` re-exports the public names.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EXTRA",
    "HARNESS_PACKAGES",
    "MissingExtra",
    "UsageError",
    "config_of",
    "format_table",
    "plot_comparison",
    "require",
    "summarize",
    "write_outputs",
]

EXTRA = 'pip install "mimetic_jax[experiments]"'
"""The install command of the harness's extra (named in the error when one of its packages is missing)."""

#: The packages of the ``experiments`` extra (import names): a missing one is reported with :data:`EXTRA`.
HARNESS_PACKAGES = ("optax", "sklearn", "matplotlib", "tqdm", "mnist1d")


class UsageError(ValueError):
    """A combination of options that cannot work; reported like an argparse error (exit code 2)."""


class MissingExtra(ImportError):
    """A package of the ``experiments`` extra is not installed; the message names it and the install command."""


def config_of(args: Any) -> dict[str, Any]:
    """The options a ``compare`` run used, for its ``results.json`` (unset ones left out, paths as text)."""
    return {
        k: (str(v) if isinstance(v, os.PathLike) else v)
        for k, v in vars(args).items()
        if k not in ("command", "no_progress") and v is not None
    }


def require(*modules: str, why: str) -> None:
    """Import ``modules`` or raise :class:`MissingExtra` naming the missing one, ``why`` and :data:`EXTRA`."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise MissingExtra(
                f"{why} needs the package {name.split('.')[0]!r}, which is not installed "
                f"({err}); install the experiments extra with: {EXTRA}"
            ) from None


# ----------------------------------------------------------------------------------------- outputs


def summarize(acc: np.ndarray) -> dict[str, Any]:
    """``acc`` ``(seeds, checkpoints)`` -> per-seed values, mean, and sample std (ddof=1; ``None`` with one seed).

    Example:
        >>> summarize(np.array([[0.5, 1.0]]))["std"] is None
        True
        >>> [round(s, 4) for s in summarize(np.array([[0.5, 1.0], [0.7, 1.0]]))["std"]]
        [0.1414, 0.0]
    """
    acc = np.asarray(acc, dtype=np.float64)
    std = acc.std(axis=0, ddof=1).tolist() if acc.shape[0] >= 2 else None
    return {"per_seed": acc.tolist(), "mean": acc.mean(axis=0).tolist(), "std": std}


def _scale(unit: str) -> tuple[float, str, int]:
    """(factor, unit of a difference, decimals) of a metric in ``unit``: fractions shown in %, others as they are."""
    return (100.0, "pp", 2) if unit == "%" else (1.0, unit, 4)


def _cell(values: np.ndarray, sign: bool = False, unit: str = "%") -> str:
    f, _, d = _scale(unit)
    mean = f"{f * values.mean():+.{d}f}" if sign else f"{f * values.mean():.{d}f}"
    return f"{mean} ± {f * values.std(ddof=1):.{d}f}" if values.shape[0] >= 2 else mean


def format_table(steps: np.ndarray, default: np.ndarray, mimetic: np.ndarray, unit: str = "%") -> str:
    """Markdown table of test accuracy (%) per checkpoint and the paired difference mimetic − default.

    Each cell is the mean over seeds, with ``± std`` (ddof=1) only when there are at least two seeds.
    ``unit``: ``"%"`` (values are fractions, shown ×100, differences in percentage points) or
    another unit (e.g. ``"bits/char"``), shown as given.

    Example:
        >>> print(format_table(np.array([10]), np.array([[0.5]]), np.array([[0.75]])))
        | step | default (%) | mimetic (%) | mimetic − default (pp) |
        |---:|---:|---:|---:|
        | 10 | 50.00 | 75.00 | +25.00 |
    """
    default, mimetic = np.asarray(default), np.asarray(mimetic)
    diff = mimetic - default
    du = _scale(unit)[1]
    lines = [f"| step | default ({unit}) | mimetic ({unit}) | mimetic − default ({du}) |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {int(s)} | {_cell(default[:, i], unit=unit)} | {_cell(mimetic[:, i], unit=unit)} | "
        f"{_cell(diff[:, i], sign=True, unit=unit)} |"
        for i, s in enumerate(steps)
    ]
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import jax

    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": sys.version.split()[0],
    }


def _machine_text(machine: dict[str, Any]) -> str:
    where = (
        f"{machine['cpu_count']}-core CPU"
        if machine["backend"] == "cpu"
        else f"{machine['device_count']} x {machine['device']}"
    )
    return f"{where}, JAX {machine['jax']}"


def _seeds_text(n: int) -> str:
    return "1 seed (no spread)" if n == 1 else f"{n} seeds, paired, mean ± std (ddof=1)"


def write_outputs(
    out: Path,
    results: dict[str, Any],
    default: np.ndarray,
    mimetic: np.ndarray,
    init_panel: Callable[[Any], None] | None,
    *,
    start: float,
) -> dict[str, Any]:
    """Print the table and write ``results.json``, ``results.md`` and ``compare.png`` to ``out``.

    ``results`` holds ``title``, ``metric``, ``budget`` (text), ``steps``, ``seeds``, ``config``,
    ``train_seconds``, optionally ``unit`` (default ``"%"``: fractions shown in percent; e.g.
    ``"bits/char"``); the summaries, the machine and the output paths are added here.
    ``init_panel(spec)`` draws the init-structure panel (see :func:`plot_comparison`); ``start``
    is the ``time.perf_counter()`` of the run's start (for ``total_seconds``).
    """
    steps = np.asarray(results["steps"])
    results = dict(results)
    results["default"], results["mimetic"] = summarize(default), summarize(mimetic)
    results["difference"] = summarize(np.asarray(mimetic) - np.asarray(default))
    results["spread"] = "sample std over seeds (ddof=1); null with one seed"
    results["machine"] = _machine()
    results["outputs"] = {"json": "results.json", "table": "results.md", "figure": "compare.png"}
    n = len(results["seeds"])
    unit = results.get("unit", "%")
    du = "percentage points" if unit == "%" else unit
    caption = (
        f"{results['metric'].capitalize()} ({unit}) at each checkpoint; {_seeds_text(n)}; mimetic − default is "
        f"the paired difference per seed in {du}. {results['budget']}. Measured on "
        f"{_machine_text(results['machine'])} ({results['train_seconds']:.0f} s of training)."
    )
    table = format_table(steps, default, mimetic, unit)
    print(f"{results['title']}\n\n{caption}\n\n{table}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"## {results['title']}\n\n{caption}\n\n{table}\n")
    plot_comparison(
        out / "compare.png",
        steps,
        default,
        mimetic,
        title=results["title"],
        subtitle=f"{_seeds_text(n)}; {results['budget']}; {_machine_text(results['machine'])}",
        ylabel=f"{results['metric']} ({unit})",
        init_panel=init_panel,
        unit=unit,
    )
    results["total_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'compare.png'} "
        f"({results['total_seconds']:.0f} s)"
    )
    return results


def plot_comparison(
    path: Path,
    steps: np.ndarray,
    default: np.ndarray,
    mimetic: np.ndarray,
    *,
    title: str,
    subtitle: str,
    ylabel: str,
    init_panel: Callable[[Any], None] | None = None,
    unit: str = "%",
) -> None:
    """Write the figure: accuracy curves (mean, ± std band from 2 seeds), paired differences, init panel.

    ``init_panel(subfigure)`` draws into the right third of the figure (a matplotlib ``SubFigure``).
    ``unit``: as in :func:`format_table`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factor, diff_unit, _ = _scale(unit)
    default, mimetic = factor * np.asarray(default), factor * np.asarray(mimetic)
    n = default.shape[0]
    fig = plt.figure(figsize=(14.0 if init_panel else 9.0, 4.6), layout="constrained")
    if init_panel is not None:
        curves, right = fig.subfigures(1, 2, squeeze=False, width_ratios=[2.0, 1.25], wspace=0.02)[0]
    else:
        curves, right = fig, None
    ax, dax = curves.subplots(1, 2)
    for acc, label, color in ((default, "default init", "tab:blue"), (mimetic, "mimetic init", "tab:orange")):
        mean = acc.mean(axis=0)
        ax.plot(steps, mean, marker="o", ms=3, color=color, label=f"{label}, mean of {n}" if n > 1 else label)
        if n > 1:
            std = acc.std(axis=0, ddof=1)
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    what = "test accuracy" if unit == "%" else ylabel.split(" (")[0]
    ax.set(xlabel="training step", ylabel=ylabel, title=what + (" (band: ± std)" if n > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    diff = mimetic - default
    for s in range(n):
        dax.plot(steps, diff[s], color="gray", lw=0.8, alpha=0.7, label="per seed" if s == 0 and n > 1 else None)
    dax.plot(steps, diff.mean(axis=0), marker="o", ms=3, color="black", label="mean" if n > 1 else "seed 0")
    dax.axhline(0.0, color="tab:red", lw=0.8, ls="--")
    dax.set(
        xlabel="training step",
        ylabel="mimetic − default (" + ("percentage points" if unit == "%" else diff_unit) + ")",
        title="paired difference (same init draw and data order)",
    )
    dax.grid(alpha=0.3)
    dax.legend(loc="best", fontsize=8)
    if init_panel is not None:
        init_panel(right)
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
