"""Shared helpers for the benchmark scripts: machine description, timing, result files.

Every script in ``benchmarks/`` is run as ``python benchmarks/NAME.py [--quick]`` and
writes ``benchmarks/results/NAME.json`` (all numbers) and ``benchmarks/results/NAME.md``
(a Markdown table with the machine on top). ``--quick`` runs a small configuration as a
smoke test and writes ``NAME.quick.json`` / ``NAME.quick.md`` instead, so a smoke test
never overwrites the reported full-run numbers.

XLA thread pool: ``--xla-threads N`` sets ``NPROC=N`` before JAX starts, which sizes
XLA:CPU's intra-op thread pool (default: one thread per usable core). With jaxlib 0.10.2,
batched LAPACK kernels wait inside a pool thread for sub-tasks queued on the same pool,
so a jitted program running pool-size such kernels at once deadlocked; the package now
issues one LAPACK call per matrix on CPU (``mimetic_jax/_linalg.py``), and the option
stays for measuring other pool sizes. A watchdog (:class:`Run`) notices a process that
stops using CPU, records where in ``results/`` and exits with status 3 instead of hanging.

Result files of a run on an accelerator get the backend in their name
(``NAME.gpu.json``), so CPU and GPU figures sit side by side.

Timing rules (see :func:`time_jit`): every result is passed through
``jax.block_until_ready``; the compile cost is measured separately with the
ahead-of-time API (``jit(f).lower(...)`` = trace, ``.compile()`` = XLA compile) and the
steady state is the median over repeated calls of the compiled executable. The wall
time and this process's CPU time are both recorded: the benchmark machine may be shared,
and the load average before and after each measurement goes into the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import faulthandler
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
REPO = ROOT.parent

if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))


def _xla_threads_from_argv() -> None:
    """Apply ``--xla-threads N`` before any script imports JAX (the pool is sized at start)."""
    for i, a in enumerate(sys.argv):
        if a == "--xla-threads" and i + 1 < len(sys.argv):
            os.environ["NPROC"] = sys.argv[i + 1]
        elif a.startswith("--xla-threads="):
            os.environ["NPROC"] = a.split("=", 1)[1]


_xla_threads_from_argv()


# --------------------------------------------------------------------------- command line


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--quick`` (smoke test), ``--xla-threads``, ``--watchdog``, ``--tag``, and the script's own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, well under a minute (smoke test)")
    parser.add_argument(
        "--xla-threads",
        type=int,
        default=None,
        help="size of XLA:CPU's intra-op thread pool (sets NPROC; default: one per core); see _report.py",
    )
    parser.add_argument(
        "--watchdog",
        type=float,
        default=120.0,
        help="seconds without CPU progress before the run is declared deadlocked (0: off)",
    )
    parser.add_argument(
        "--tag", default="", help="suffix of the result files, results/NAME_TAG.* (a run at other settings)"
    )
    if extra is not None:
        extra(parser)
    return parser.parse_args()


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import jax
    import numpy as np

    try:
        import flax

        flax_version = flax.__version__
    except ImportError:  # pragma: no cover - flax is a dependency
        flax_version = None
    dev = jax.devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "platform_processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "mem_total_gib": None if (m := _mem_total_gib()) is None else round(m, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "flax": flax_version,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "load_average_at_start": load_average(),
        "NPROC": os.environ.get("NPROC"),
        "xla_pool_threads": _xla_pool_threads(),
    }


def _xla_pool_threads() -> int | None:
    """Threads of XLA:CPU's intra-op pool (named ``tf_XLAEigen``) after a tiny computation."""
    import jax.numpy as jnp

    jnp.ones(8).sum().block_until_ready()
    try:
        names = []
        for t in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
    except OSError:
        return None
    return sum(n == "tf_XLAEigen" for n in names)


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


def machine_markdown(m: dict[str, Any]) -> str:
    return (
        f"Machine: {m['cpu_model']} ({m['machine']}, platform.processor()={m['platform_processor']!r}), "
        f"{m['usable_cores']} usable cores of {m['cpu_count']}, {m['mem_total_gib']} GiB RAM; "
        f"JAX {m['jax']} on {m['backend']} ({m['device_kind']}, {m['device_count']} device(s)), "
        f"Flax {m['flax']}, NumPy {m['numpy']}, Python {m['python']}; {m['date_utc']}. "
        f"XLA:CPU intra-op pool: {m.get('xla_pool_threads')} threads"
        + (f" (NPROC={m['NPROC']} set by --xla-threads)" if m.get("NPROC") else " (default)")
        + ". "
        f"Load average (1/5/15 min) at start: {m['load_average_at_start']}, "
        f"at end: {m.get('load_average_at_end')}."
    )


# --------------------------------------------------------------------------- timing


def block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


class Stopwatch:
    """Wall and process-CPU seconds of a ``with`` block."""

    def __enter__(self) -> Stopwatch:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


def time_call(fn: Callable[..., Any], *args: Any, repeats: int) -> dict[str, Any]:
    """Call ``fn(*args)`` ``repeats`` times (results blocked on); median and all times."""
    walls, cpus = [], []
    for _ in range(repeats):
        with Stopwatch() as sw:
            block(fn(*args))
        walls.append(sw.wall)
        cpus.append(sw.cpu)
    return {
        "repeats": repeats,
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "times_s": walls,
        "median_cpu_s": statistics.median(cpus),
    }


def _compile_timed(fn: Callable[..., Any], args: tuple, jit_kwargs: dict | None = None) -> tuple[Any, dict[str, Any]]:
    """``jax.jit(fn)`` traced, compiled and run once, each step timed; the executable and the timings."""
    import jax

    jitted = jax.jit(fn, **(jit_kwargs or {}))
    with Stopwatch() as t_trace:
        lowered = jitted.lower(*args)
    with Stopwatch() as t_compile:
        compiled = lowered.compile()
    with Stopwatch() as t_first:
        out = block(compiled(*args))
    del out
    return compiled, {
        "trace_s": t_trace.wall,
        "compile_s": t_compile.wall,
        "first_run_s": t_first.wall,
        "first_call_s": t_trace.wall + t_compile.wall + t_first.wall,
        "first_call_cpu_s": t_trace.cpu + t_compile.cpu + t_first.cpu,
        "first_run_cpu_s": t_first.cpu,
    }


def time_jit(fn: Callable[..., Any], *args: Any, repeats: int, jit_kwargs: dict | None = None) -> dict[str, Any]:
    """Time a function under ``jax.jit``: trace, compile, first run and steady state, separately.

    ``trace_s``: ``jit(fn).lower(*args)`` (Python tracing, including any host work done
    while tracing, e.g. cached spectral templates); ``compile_s``: ``lowered.compile()``;
    ``first_run_s``: first call of the executable; ``median_s``: median of ``repeats``
    further calls. ``first_call_s = trace_s + compile_s + first_run_s`` is what a user
    waits for on the first call of ``jax.jit(fn)``.
    """
    load0 = load_average()
    compiled, first = _compile_timed(fn, args, jit_kwargs)
    steady = (
        time_call(compiled, *args, repeats=repeats)
        if repeats > 0
        else {
            "repeats": 0,
            "median_s": first["first_run_s"],
            "min_s": first["first_run_s"],
            "times_s": [],
            "median_cpu_s": first["first_run_cpu_s"],
            "note": "no repeats: the steady state is the first run of the compiled executable",
        }
    )
    return {**first, **steady, "load_average_before": load0, "load_average_after": load_average()}


def time_jit_interleaved(
    fns: dict[str, Callable[..., Any]],
    *args: Any,
    repeats: int,
    repeats_of: dict[str, int] | None = None,
    on_compiled: Callable[[str, dict[str, Any]], None] | None = None,
    trace_in: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`time_jit` for several functions whose steady-state calls alternate.

    Each function is traced, compiled and run once (``trace_s``, ``compile_s``,
    ``first_call_s`` as in :func:`time_jit`); then ``repeats`` rounds call each compiled
    executable once in turn, so a change of load on a shared box hits every arm alike.
    ``median_s``/``min_s``/``times_s`` are over those rounds. ``repeats_of[name]`` (fewer
    than ``repeats``) calls a slow arm only in the first rounds; ``on_compiled(name, first)``
    reports each arm's first call as it comes (progress logs); ``trace_in[name]()`` is a
    context manager the arm is traced and compiled in (e.g. earlier code swapped in).
    """
    out, compiled = {}, {}
    repeats_of = repeats_of or {}
    for name, fn in fns.items():
        with (trace_in or {}).get(name, contextlib.nullcontext)():
            compiled[name], first = _compile_timed(fn, args)
        out[name] = {**first, "times_s": [], "cpu_s": []}
        if on_compiled is not None:
            on_compiled(name, first)
    load0 = load_average()
    for i in range(repeats):
        for name, exe in compiled.items():
            if i >= repeats_of.get(name, repeats):
                continue
            with Stopwatch() as sw:
                block(exe(*args))
            out[name]["times_s"].append(sw.wall)
            out[name]["cpu_s"].append(sw.cpu)
    for name in compiled:
        times = out[name]["times_s"]
        out[name].update(
            repeats=len(times),
            median_s=statistics.median(times),
            median_cpu_s=statistics.median(out[name]["cpu_s"]),
            min_s=min(times),
            load_average_before=load0,
            load_average_after=load_average(),
            interleaved_with=list(fns),
        )
    return out


# --------------------------------------------------------------------------- memory


def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmHWM`` = peak RSS, ``VmRSS`` = current RSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- output


def fmt_s(x: float | None) -> str:
    """Seconds, three significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 0.01:
        return f"{x:.3f} s"
    return f"{x * 1e3:.2f} ms"


def fmt_pm(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_results(
    name: str,
    quick: bool,
    mach: dict[str, Any],
    data: dict[str, Any],
    title: str,
    body: str,
    wall_s: float | None = None,
) -> tuple[Path, Path]:
    """Write ``results/NAME[.quick].json`` and ``.md``; return their paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    mach = dict(mach, load_average_at_end=load_average())
    stem = f"{name}.quick" if quick else name
    if mach.get("backend", "cpu") != "cpu":  # accelerator runs sit beside the CPU ones
        stem += f".{mach['backend']}"
    if os.environ.get("NPROC"):  # a non-default XLA pool (--xla-threads) never overwrites the default run
        stem += f".xla{os.environ['NPROC']}"
    payload = {"benchmark": name, "quick": quick, "machine": mach, "script_wall_s": wall_s, **data}
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    json_path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    header = f"# {title}{' (--quick smoke run)' if quick else ''}\n\n{machine_markdown(mach)}\n"
    if wall_s is not None:
        header += f"Whole script: {fmt_s(wall_s)} wall.\n"
    md_path.write_text(header + "\n" + body.strip() + "\n")
    print(f"wrote {json_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")
    return json_path, md_path


def log(*msg: Any) -> None:
    print(time.strftime("%H:%M:%S"), *msg, flush=True)


# --------------------------------------------------------------------------- a run, with a deadlock watchdog


class Run:
    """State of one benchmark run: its name, machine, the data gathered so far and the stage.

    ``Run.start`` starts a watchdog thread: when the process uses less than 1 % of a core
    for ``args.watchdog`` seconds (a deadlock, not slowness: a busy machine still gives us
    CPU), it prints all threads' stacks, writes ``results/NAME[.quick].json``/``.md`` with
    the partial data and a ``deadlock`` entry naming the stage, and exits with status 3.
    """

    def __init__(self, name: str, title: str, args: argparse.Namespace) -> None:
        self.name = f"{name}_{args.tag}" if getattr(args, "tag", "") else name
        self.title, self.args = title, args
        self.quick = bool(args.quick)
        self.t0 = time.perf_counter()
        self.machine = machine()
        self.data: dict[str, Any] = {"xla_threads_option": args.xla_threads}
        self.current = "start"
        self.partial_markdown: Callable[[], str] | None = None
        self._lock = threading.Lock()
        if args.watchdog and args.watchdog > 0:
            threading.Thread(target=self._watch, args=(float(args.watchdog),), daemon=True).start()

    def stage(self, label: str) -> None:
        self.current = label
        log(label)

    def _watch(self, idle_s: float) -> None:
        period, idle = 5.0, 0.0
        last = time.process_time()
        while True:
            time.sleep(period)
            now = time.process_time()
            idle = idle + period if now - last < 0.01 * period else 0.0
            last = now
            if idle >= idle_s:
                self._deadlock(idle)

    def _deadlock(self, idle: float) -> None:
        msg = (
            f"DEADLOCK: no CPU progress for {idle:.0f} s during stage {self.current!r} "
            f"(XLA pool {self.machine.get('xla_pool_threads')} threads). Batched LAPACK kernels "
            "can deadlock XLA:CPU's intra-op pool (see _report.py and mimetic_jax/_linalg.py)."
        )
        print("\n" + msg, file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        with self._lock:
            data = dict(self.data, deadlock={"stage": self.current, "idle_s": idle, "message": msg})
            body = f"**{msg}**\n\nPartial results below.\n\n"
            try:
                body += self.partial_markdown() if self.partial_markdown else ""
            except Exception as e:  # the partial table is best effort
                body += f"(partial table unavailable: {e!r})"
            write_results(
                self.name, self.quick, self.machine, data, self.title, body, wall_s=time.perf_counter() - self.t0
            )
        os._exit(3)

    def finish(self, body: str) -> None:
        with self._lock:
            write_results(
                self.name, self.quick, self.machine, self.data, self.title, body, wall_s=time.perf_counter() - self.t0
            )


# --------------------------------------------------------------------------- paired seeds: statistics and figure


def paired_difference(a: Any, b: Any, confidence: float = 0.95) -> dict[str, Any]:
    """Statistics of the per-seed paired difference ``a - b`` (1-D arrays, one entry per seed pair).

    ``mean``, ``std`` (ddof=1), the ``confidence`` interval of the mean from Student's t
    (``mean ± t_{n-1} · std / √n``), the paired t-test (``scipy.stats.ttest_rel``: ``t``, two-sided
    ``p``; ``None`` when every difference is equal), wins/ties/losses of ``a``, and the per-seed
    differences themselves.
    """
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = a - b
    n = int(diff.size)
    mean = float(diff.mean())
    std = float(diff.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
    test = stats.ttest_rel(a, b) if n > 1 and np.ptp(diff) > 0 else None
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "confidence": confidence,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "t": None if test is None else float(test.statistic),
        "p": None if test is None else float(test.pvalue),
        "wins": int((diff > 0).sum()),
        "ties": int((diff == 0).sum()),
        "losses": int((diff < 0).sum()),
        "per_seed": diff.tolist(),
    }


def paired_cells(s: dict[str, Any]) -> list[str]:
    """Table cells of a :func:`paired_difference` of fractions, in percentage points: mean ± std, CI, p, W/T/L."""
    p = "—" if s["p"] is None else f"{s['p']:.3g}"
    ci = f"[{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]"
    return [f"{100 * s['mean']:+.2f} ± {100 * s['std']:.2f}", ci, p, f"{s['wins']}/{s['ties']}/{s['losses']}"]


PAIRED_HEADERS = ["mean ± std (pp)", "95 % CI (pp)", "p (paired t)", "W/T/L"]


def plot_paired(
    path: Path,
    steps: Sequence[int],
    arms: dict[str, Any],
    pairs: Sequence[tuple[str, str]],
    title: str,
    metric: str = "test accuracy (%)",
    scale: float = 100.0,
) -> Path:
    """A two-panel figure of a paired-seed run; ``arms[name]`` is ``(seeds, checkpoints)``.

    Left: each arm's mean over seeds against the step, with a ±1 std band. Right: for each
    pair ``(a, b)``, the per-seed differences ``a - b`` at the last checkpoint (dots), their
    mean and 95 % confidence interval (bar), and zero (dashed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    for name, acc in arms.items():
        acc = scale * np.asarray(acc, np.float64)
        mean, std = acc.mean(axis=0), acc.std(axis=0, ddof=1) if acc.shape[0] > 1 else np.zeros(acc.shape[1])
        (line,) = ax.plot(steps, mean, marker="o", ms=3, label=name)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("mean ± std over seeds", fontsize=9)
    rng = np.random.default_rng(0)
    for i, (a, b) in enumerate(pairs):
        s = paired_difference(np.asarray(arms[a])[:, -1], np.asarray(arms[b])[:, -1])
        d = scale * np.asarray(s["per_seed"])
        bx.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=14, alpha=0.7)
        bx.errorbar(
            i + 0.25,
            scale * s["mean"],
            yerr=[[scale * (s["mean"] - s["ci_low"])], [scale * (s["ci_high"] - s["mean"])]],
            fmt="s",
            color="k",
            capsize=4,
        )
    bx.axhline(0.0, color="grey", ls="--", lw=1)
    bx.set_xticks(range(len(pairs)))
    bx.set_xticklabels([f"{a}\n− {b}" for a, b in pairs], fontsize=8)
    bx.set_ylabel(f"paired difference, {metric.split(' (')[0]} (pp)" if scale == 100.0 else "paired difference")
    bx.set_title(f"per seed at step {steps[-1]}; mean and 95 % CI", fontsize=9)
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return path


def figure_path(run: Run) -> Path:
    """``results/NAME[.quick].png`` of a run (beside its JSON and Markdown)."""
    return RESULTS / (f"{run.name}.quick.png" if run.quick else f"{run.name}.png")
