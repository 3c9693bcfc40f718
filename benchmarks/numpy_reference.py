"""Our jitted samplers against a plain NumPy per-head rendering of the published recipe.

The baseline does what the public PyTorch re-implementations do, in NumPy float32 (the
dtype those use): for each layer, for each head draw ``Z`` (``d×d``, normal, variance
``1/d``), ``A = α1 Z + β1 I``, ``np.linalg.svd(A)``, keep the top ``k`` pairs
(``W_q^h = U_k √S_k``, ``W_k^h = V_k √S_k``); value/out: one ``d×d`` target
``α2 Z − β2 I`` and one SVD per layer, ``W_v = U √S`` and ``W_o = √S Vᵀ`` reshaped to
heads. Shape: the ViT-B attention stack, 12 layers, d 768, 12 heads, k 64.

Ours, producing the same arrays for the whole stack:

* ``per-layer calls``: a Python loop over the layers calling the public
  ``mimetic_jax.query_key`` and ``mimetic_jax.value_output`` (each jitted inside), as
  ``mimetic_attention`` does outside ``jit``;
* ``jit(vmap)`` (with ``--with-vmap``): one ``jax.jit`` of a ``jax.vmap`` over the 12
  layer keys. (It used to deadlock on a 2-core CPU with jaxlib 0.10.2; the package now
  loops batched LAPACK calls on CPU, see ``mimetic_jax/_linalg.py``.)

Each for ``method="exact"`` and ``method="fast"``. Compile time is reported separately
(first call minus steady state for the per-layer loop; AOT trace + compile for the
``jit(vmap)`` version); steady state = median over repeats. Target: at least 10× faster
than NumPy. The NumPy baseline can be timed on a subset of layers (``--numpy-layers``) and
extrapolated linearly; the table says so when it is.

Run: ``python benchmarks/numpy_reference.py [--quick] [--numpy-layers N] [--with-vmap]``.
"""

from __future__ import annotations

import statistics
import time

import _report
import jax
import numpy as np

import mimetic_jax as mj

ALPHA_QK, BETA_QK = 0.7, 0.7
ALPHA_VO, BETA_VO = 0.4, 0.4
TARGET_SPEEDUP = 10.0


# --------------------------------------------------------------------------- NumPy baseline


def numpy_layer(rng: np.random.Generator, d: int, heads: int, k: int, dtype=np.float32):
    """One layer of the published recipe, per head, in NumPy (PyTorch re-implementation style)."""
    w_q = np.empty((d, heads, k), dtype)
    w_k = np.empty((d, heads, k), dtype)
    eye = np.eye(d, dtype=dtype)
    for h in range(heads):
        z = rng.standard_normal((d, d), dtype=dtype) / np.sqrt(d).astype(dtype)
        a = ALPHA_QK * z + BETA_QK * eye
        u, s, vt = np.linalg.svd(a)
        root = np.sqrt(s[:k])
        w_q[:, h] = u[:, :k] * root
        w_k[:, h] = vt[:k].T * root
    z = rng.standard_normal((d, d), dtype=dtype) / np.sqrt(d).astype(dtype)
    a = ALPHA_VO * z - BETA_VO * eye
    u, s, vt = np.linalg.svd(a)
    root = np.sqrt(s[: heads * k])
    w_v = (u[:, : heads * k] * root).reshape(d, heads, k)
    w_o = (root[:, None] * vt[: heads * k]).reshape(heads, k, d)
    return w_q, w_k, w_v, w_o


def numpy_stack(layers: int, d: int, heads: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out, times = [], []
    for _ in range(layers):
        t = time.perf_counter()
        out.append(numpy_layer(rng, d, heads, k))
        times.append(time.perf_counter() - t)
    return out, times


# --------------------------------------------------------------------------- ours


def ours_layer(key, d, heads, k, method):
    k_qk, k_vo = jax.random.split(key)
    w_q, w_k = mj.query_key(k_qk, d, heads, k, alpha=ALPHA_QK, beta=BETA_QK, method=method)
    w_v, w_o = mj.value_output(k_vo, d, heads, k, alpha=ALPHA_VO, beta=BETA_VO, method=method)
    return w_q, w_k, w_v, w_o


def ours_loop(key, layers, d, heads, k, method):
    return [ours_layer(jax.random.fold_in(key, i), d, heads, k, method) for i in range(layers)]


def ours_vmap_fn(layers, d, heads, k, method):
    def f(key):
        return jax.vmap(lambda kk: ours_layer(kk, d, heads, k, method))(jax.random.split(key, layers))

    return f


def diag_means(w_q, w_k, w_v, w_o) -> tuple[float, float]:
    """Query/key diagonal mean (all heads) and value/out diagonal mean, a check that the arrays agree."""
    w_q, w_k, w_v, w_o = (np.asarray(w, np.float64) for w in (w_q, w_k, w_v, w_o))
    d = w_q.shape[0]
    qk = float(np.einsum("ihk,ihk->h", w_q, w_k).mean() / d)
    vo = float(np.einsum("ihk,hki->", w_v, w_o) / d)
    return qk, vo


def main() -> None:
    def extra(p):
        p.add_argument(
            "--numpy-layers",
            type=int,
            default=None,
            help="time the NumPy baseline on this many layers and extrapolate (default: all)",
        )
        p.add_argument("--repeats", type=int, default=None, help="repeats of each of ours (steady state)")
        p.add_argument("--with-vmap", action="store_true", help="also time one jit(vmap over layers) program")

    args = _report.parse_args(__doc__.splitlines()[0], extra)
    run = _report.Run("numpy_reference", "Mimetic attention stack: ours vs a NumPy per-head reference", args)
    if args.quick:
        layers, d, heads, k = 2, 384, 6, 64
    else:
        layers, d, heads, k = 12, 768, 12, 64
    np_layers = min(layers, args.numpy_layers or layers)
    repeats = args.repeats or (2 if args.quick else 3)
    res = run.data
    res.update(
        {
            "layers": layers,
            "d": d,
            "heads": heads,
            "head_dim": k,
            "numpy_dtype": "float32",
            "numpy_layers_timed": np_layers,
            "target_speedup": TARGET_SPEEDUP,
            "ours": {},
        }
    )
    variants = ("loop", "jit_vmap") if args.with_vmap else ("loop",)

    run.stage(f"NumPy baseline: {np_layers} of {layers} layers, d={d}, H={heads}, k={k}")
    load0 = _report.load_average()
    with _report.Stopwatch() as sw:
        stack, per_layer = numpy_stack(np_layers, d, heads, k)
    res["numpy"] = {
        "measured_s": sw.wall,
        "measured_cpu_s": sw.cpu,
        "per_layer_s": per_layer,
        "median_layer_s": statistics.median(per_layer),
        "stack_s": sw.wall * layers / np_layers,
        "extrapolated": np_layers < layers,
        "diag_means_layer0": diag_means(*stack[0]),
        "load_average_before": load0,
        "load_average_after": _report.load_average(),
    }
    _report.log(f"  NumPy {sw.wall:.1f} s for {np_layers} layers -> {res['numpy']['stack_s']:.1f} s for the stack")
    del stack

    key = jax.random.key(0)
    for method in ("fast", "exact"):
        # Per-layer calls of the public API: first call (includes compile) then the median of repeats.
        run.stage(f"ours {method}: per-layer calls")
        with _report.Stopwatch() as first:
            out = _report.block(ours_loop(key, layers, d, heads, k, method))
        dm = diag_means(*out[0])
        del out
        steady = _report.time_call(lambda kk: ours_loop(kk, layers, d, heads, k, method), key, repeats=repeats)
        loop = {
            "first_call_s": first.wall,
            **steady,
            "compile_s_est": max(0.0, first.wall - steady["median_s"]),
            "diag_means_layer0": dm,
        }
        res["ours"][method] = {"loop": loop}
        _report.log(f"  {method}: loop first {first.wall:.2f} s, median {steady['median_s']:.3f} s")
        if args.with_vmap:
            run.stage(f"ours {method}: jit(vmap over layers)")
            vm = _report.time_jit(ours_vmap_fn(layers, d, heads, k, method), key, repeats=repeats)
            res["ours"][method]["jit_vmap"] = vm
            _report.log(
                f"  {method}: jit(vmap) compile {vm['trace_s'] + vm['compile_s']:.2f} s, median {vm['median_s']:.3f} s"
            )
    base = res["numpy"]["stack_s"]
    for method in ("fast", "exact"):
        for variant in variants:
            t = res["ours"][method][variant]
            t["speedup_vs_numpy"] = base / t["median_s"]
            t["speedup_vs_numpy_first_call"] = base / t["first_call_s"]

    np_note = (
        f"measured on {np_layers} of {layers} layers and extrapolated linearly (×{layers / np_layers:.2f})"
        if res["numpy"]["extrapolated"]
        else f"measured on all {layers} layers, one pass"
    )
    rows = [
        [
            "NumPy per head (float32, `np.linalg.svd`)",
            "—",
            _report.fmt_s(base) + (" (extrapolated)" if res["numpy"]["extrapolated"] else ""),
            _report.fmt_s(base),
            "1",
            "1",
            "{:.3f} / {:.3f}".format(*res["numpy"]["diag_means_layer0"]),
        ]
    ]
    for method in ("fast", "exact"):
        for variant, label in (("loop", "per-layer calls"), ("jit_vmap", "jit(vmap over layers)")):
            if variant not in variants:
                continue
            t = res["ours"][method][variant]
            comp = t["compile_s_est"] if variant == "loop" else t["trace_s"] + t["compile_s"]
            sp = t["speedup_vs_numpy"]
            rows.append(
                [
                    f"ours `{method}`, {label}",
                    _report.fmt_s(comp),
                    _report.fmt_s(t["median_s"]) + f" (n={t['repeats']})",
                    _report.fmt_s(t["first_call_s"]),
                    f"{sp:.1f}× {'✅' if sp >= TARGET_SPEEDUP else '❌'}",
                    f"{t['speedup_vs_numpy_first_call']:.1f}×",
                    "{:.3f} / {:.3f}".format(
                        *(
                            t["diag_means_layer0"]
                            if variant == "loop"
                            else res["ours"][method]["loop"]["diag_means_layer0"]
                        )
                    ),
                ]
            )
    table = _report.md_table(
        [
            "sampler",
            "compile s",
            "stack s (steady, median)",
            "first call s",
            "speed-up vs NumPy (steady)",
            "speed-up (first call)",
            "diag mean qk / vo (layer 0)",
        ],
        rows,
    )
    body = (
        f"Whole attention stack of ViT-B: {layers} layers, d={d}, H={heads}, k={k} (query, key, value, out kernels "
        f"of every layer). NumPy baseline: {np_note}; median layer {_report.fmt_s(res['numpy']['median_layer_s'])} "
        f"({heads + 1} SVDs of {d}×{d} per layer; NumPy's OpenBLAS uses all cores). Ours: steady = median over "
        "repeats of already-compiled code; `compile` for per-layer calls is first call − steady (the first call "
        "of `fast` also builds the host-side spectral template), for jit(vmap) it is AOT trace + compile. "
        + ("" if args.with_vmap else "The jit(vmap over layers) variant was not run (`--with-vmap`). ")
        + f"Target: ≥ {TARGET_SPEEDUP:.0f}× (✅/❌). Last column: a check that all produce the same structure "
        "(published: ≈ 0.40 and −0.40 at d=192; the truncated query/key diagonal shrinks with k/d).\n\n" + table + "\n"
    )
    run.finish(body)


if __name__ == "__main__":
    main()
