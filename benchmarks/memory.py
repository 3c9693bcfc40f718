"""Peak memory of initializing a LLaMA-7B-shaped attention stack mimetically.

Shape: 32 layers, d 4096, 32 heads of 128; only the attention kernels (query, key, value
``(4096, 32, 128)``, out ``(32, 128, 4096)``): 32 × 4 × 4096² float32 = 8.6 GB of weights.

Every configuration runs in a fresh child process (``subprocess``) that generates the
layers one at a time in a Python loop, keeping each layer's arrays (as a model would),
blocking on each layer; the child reports its peak resident set (``VmHWM`` from
``/proc/self/status``; ``ru_maxrss`` as a cross-check). Configurations:

* ``baseline``: ``import jax, mimetic_jax`` and one tiny computation (the runtime's own RSS);
* ``default``: 32 layers of ``lecun_normal`` kernels (what a plain init costs);
* ``fast``: 32 layers of ``query_key`` + ``value_output`` with ``method="fast"``;
* ``fast_one``: one such layer (its transient, without the other layers' weights);
* ``exact_one``: one layer with ``method="exact"`` (33 SVDs of 4096×4096 on CPU: timed for
  this ONE layer, the 32-layer time is extrapolated ×32). The exact query/key sampler
  processes heads in chunks of ``EXACT_CHUNK_ELEMENTS`` target elements (one 4096×4096
  target at a time here), so its transient does not grow with the head count.

Reported: peak, weights kept, ``overhead = peak − weights`` and ``transient = peak −
weights − baseline`` (what the sampler adds on top of the weights and the runtime).

Run: ``python benchmarks/memory.py [--quick]`` (the parent); ``--child NAME`` is internal.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import _report

FULL = dict(layers=32, d=4096, heads=32, head_dim=128)
QUICK = dict(layers=4, d=1024, heads=8, head_dim=128)
CONFIGS = ("baseline", "default", "fast", "fast_one", "exact_one")
GB = 1e9


def _status() -> dict:
    return {
        "VmHWM_bytes": (_report.proc_status_kib("VmHWM") or 0) * 1024,
        "VmRSS_bytes": (_report.proc_status_kib("VmRSS") or 0) * 1024,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def child(name: str, shape: dict) -> dict:
    """Run one configuration in this (fresh) process; return what it measured."""
    import jax
    import jax.numpy as jnp

    import mimetic_jax as mj

    layers, d, heads, k = shape["layers"], shape["d"], shape["heads"], shape["head_dim"]
    jnp.ones(8).sum().block_until_ready()
    out: dict = {"config": name, "after_import": _status()}
    if name == "baseline":
        out["layers_generated"] = 0
        out.update(_status())
        return out
    count = 1 if name.endswith("_one") else layers
    method = None if name == "default" else name.split("_")[0]
    init = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
    init_o = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
    kept, times = [], []
    key = jax.random.key(0)
    for i in range(count):
        t = time.perf_counter()
        kq, kv = jax.random.split(jax.random.fold_in(key, i))
        if method is None:
            ks = jax.random.split(kq, 3)
            layer = tuple(init(kk, (d, heads, k)) for kk in ks) + (init_o(kv, (heads, k, d)),)
        else:
            layer = mj.query_key(kq, d, heads, k, method=method) + mj.value_output(kv, d, heads, k, method=method)
        jax.block_until_ready(layer)
        times.append(time.perf_counter() - t)
        kept.append(layer)
        print(
            f"  [{name}] layer {i + 1}/{count}: {times[-1]:.2f} s, VmRSS "
            f"{(_report.proc_status_kib('VmRSS') or 0) / 2**20:.2f} GiB",
            file=sys.stderr,
            flush=True,
        )
    out["layers_generated"] = count
    out["weights_bytes"] = sum(a.size * a.dtype.itemsize for layer in kept for a in layer)
    out["layer_times_s"] = times
    out.update(_status())
    return out


def run_child(name: str, quick: bool, timeout: float | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--watchdog", "120"] + (
        ["--quick"] if quick else []
    )
    if os.environ.get("NPROC"):
        cmd += ["--xla-threads", os.environ["NPROC"]]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"config": name, "error": f"child exited with {proc.returncode}", "wall_s": wall}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def gib(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**30:.2f}"


def markdown(results: dict, shape: dict) -> str:
    base = results.get("baseline", {}).get("VmHWM_bytes")
    layer_bytes = 4 * shape["d"] * shape["heads"] * shape["head_dim"] * 4
    rows = []
    labels = {
        "baseline": "runtime only (import jax, mimetic_jax)",
        "default": f"default lecun_normal, {shape['layers']} layers",
        "fast": f"mimetic fast, {shape['layers']} layers",
        "fast_one": "mimetic fast, 1 layer",
        "exact_one": "mimetic exact, 1 layer",
    }
    for name in CONFIGS:
        r = results.get(name)
        if r is None:
            continue
        if "error" in r:
            rows.append([labels[name], r["error"], "", "", "", "", ""])
            continue
        peak, w = r["VmHWM_bytes"], r.get("weights_bytes", 0)
        transient = None if base is None or name == "baseline" else peak - w - base
        times = r.get("layer_times_s") or []
        if not times:
            tcell = "—"
        elif len(times) == 1:
            tcell = f"{_report.fmt_s(times[0])} (1 layer, incl. compile)"
        else:
            steady = sorted(times[1:])[len(times[1:]) // 2]
            tcell = (
                f"{_report.fmt_s(sum(times))} total; first {_report.fmt_s(times[0])}, median {_report.fmt_s(steady)}"
            )
        rows.append(
            [labels[name], gib(peak), gib(w), gib(peak - w), gib(transient), f"{gib(r['ru_maxrss_bytes'])}", tcell]
        )
    table = _report.md_table(
        [
            "configuration",
            "peak RSS GiB (VmHWM)",
            "weights GiB",
            "overhead GiB (peak − weights)",
            "transient GiB (peak − weights − runtime)",
            "ru_maxrss GiB",
            "time s",
        ],
        rows,
    )
    notes = [
        f"One layer's weights: {gib(layer_bytes)} GiB; all {shape['layers']} layers: "
        f"{gib(layer_bytes * shape['layers'])} GiB ({layer_bytes * shape['layers'] / GB:.2f} GB)."
    ]
    ex = results.get("exact_one")
    if ex and "layer_times_s" in ex:
        t1 = ex["layer_times_s"][0]
        notes.append(
            f"**Exact, extrapolated** (not measured): {shape['layers']} layers × {_report.fmt_s(t1)} "
            f"= {_report.fmt_s(t1 * shape['layers'])} ≈ {t1 * shape['layers'] / 3600:.2f} h on this CPU "
            f"(the one measured layer includes its compile, a few seconds). Exact peak for "
            f"{shape['layers']} layers ≈ all weights + the one-layer transient above "
            f"(also extrapolated)."
        )
    fa = results.get("fast")
    if fa and "layer_times_s" in fa and ex and "layer_times_s" in ex:
        steady = sorted(fa["layer_times_s"][1:])[len(fa["layer_times_s"][1:]) // 2]
        notes.append(
            f"Per layer: fast {_report.fmt_s(steady)} (median of layers 2..), exact "
            f"{_report.fmt_s(ex['layer_times_s'][0])}: {ex['layer_times_s'][0] / steady:.0f}× slower."
        )
    return (
        f"Attention stack of LLaMA-7B shape: {shape['layers']} layers, d={shape['d']}, H={shape['heads']}, "
        f"k={shape['head_dim']}, float32, layers generated one at a time in a Python loop and kept. Each row is "
        "a fresh child process; peak = its VmHWM. `transient` subtracts the weights kept and the runtime-only "
        "peak (first row).\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    )


def main() -> None:
    def extra(p):
        p.add_argument("--child", choices=CONFIGS, default=None, help=argparse_suppress())
        p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))

    args = _report.parse_args(__doc__.splitlines()[0], extra)
    shape = QUICK if args.quick else FULL
    if args.child:
        # Child: no Run (it would write results); a deadlock watchdog of its own.
        if args.watchdog:
            import faulthandler
            import threading

            def watch():
                last, idle = time.process_time(), 0.0
                while True:
                    time.sleep(5)
                    now = time.process_time()
                    idle = idle + 5 if now - last < 0.05 else 0.0
                    last = now
                    if idle >= args.watchdog:
                        print(f"DEADLOCK in child {args.child}", file=sys.stderr, flush=True)
                        faulthandler.dump_traceback(all_threads=True)
                        os._exit(3)

            threading.Thread(target=watch, daemon=True).start()
        print(json.dumps(child(args.child, shape)), flush=True)
        return
    # The parent only waits on children, so its own watchdog is off.
    args.watchdog = 0
    run = _report.Run("memory", "Peak memory: mimetic init of a LLaMA-7B-shaped attention stack", args)
    run.data.update({"shape": shape, "configs": {}})
    run.partial_markdown = lambda: markdown(run.data["configs"], shape)
    for name in args.configs.split(","):
        run.stage(f"child process: {name}")
        res = run_child(name, args.quick, timeout=None)
        run.data["configs"][name] = res
        _report.log(
            f"  {name}: peak {gib(res.get('VmHWM_bytes'))} GiB, weights {gib(res.get('weights_bytes', 0))} GiB,"
            f" {res.get('wall_s', 0):.1f} s" + (f" ERROR {res['error']}" if "error" in res else "")
        )
    import mimetic_jax.attention as att

    run.data["exact_chunk_elements"] = att.EXACT_CHUNK_ELEMENTS
    run.finish(markdown(run.data["configs"], shape))


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
