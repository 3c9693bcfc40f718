"""Product statistics of the mimetic attention samplers, ``method="exact"`` vs ``method="fast"``.

For ``(d, H) = (192, 3)`` and ``(768, 12)`` (``k = d/H = 64``), over several keys:

* query/key, per head ``P_h = W_q^h W_k^hᵀ``: diagonal mean, off-diagonal std, and
  the top, median and ``k``-th singular values of ``P_h`` (it has rank ``k``);
* value/out, ``P = Σ_h W_v^h W_o^h``: diagonal mean and off-diagonal std, and the
  per-head diagonal means ``tr(W_v^h W_o^h)/d`` (their mean over heads, spread over
  heads, smallest and largest), for exact with and without ``rotate_heads=True`` and
  for fast.

Each statistic is computed per head (or per layer), averaged over the heads of one
draw, and reported as mean ± std over the keys (the JSON also has every per-head value).
The published sanity numbers (SPEC §1, d=192, H=3): query/key diagonal mean ≈ 0.40,
off-diagonal std ≈ 0.05; value/out diagonal mean ≈ −0.40.

Also writes ``results/product_statistics.png``: the singular spectrum of one head's
query/key product (exact vs fast, with the untruncated target's spectrum for reference)
and the value/out per-head diagonal means.

Run: ``python benchmarks/product_statistics.py [--quick]``.
"""

from __future__ import annotations

import time

import _report
import jax
import numpy as np

import mimetic_jax as mj

ALPHA_QK, BETA_QK = 0.7, 0.7
ALPHA_VO, BETA_VO = 0.4, 0.4


def qk_stats(w_q: np.ndarray, w_k: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head statistics of ``W_q^h W_k^hᵀ`` (float64, shapes ``(d, H, k)``)."""
    d, heads, k = w_q.shape
    out = {n: np.empty(heads) for n in ("diag_mean", "offdiag_std", "sv_top", "sv_median", "sv_kth")}
    spectra = []
    for h in range(heads):
        p = w_q[:, h] @ w_k[:, h].T
        diag = np.diagonal(p)
        off = p[~np.eye(d, dtype=bool)]
        # Singular values of a rank-k product from the small k×k core: W_q = Q1 R1, W_k = Q2 R2.
        r1 = np.linalg.qr(w_q[:, h], mode="r")
        r2 = np.linalg.qr(w_k[:, h], mode="r")
        s = np.linalg.svd(r1 @ r2.T, compute_uv=False)
        spectra.append(s)
        out["diag_mean"][h] = diag.mean()
        out["offdiag_std"][h] = off.std()
        out["sv_top"][h] = s[0]
        out["sv_median"][h] = np.median(s)
        out["sv_kth"][h] = s[k - 1]
    out["spectra"] = np.stack(spectra)
    return out


def vo_stats(w_v: np.ndarray, w_o: np.ndarray) -> dict[str, np.ndarray | float]:
    """Statistics of ``Σ_h W_v^h W_o^h`` and per-head diagonal means (``w_v (d,H,k)``, ``w_o (H,k,d)``)."""
    d = w_v.shape[0]
    p = np.einsum("ihk,hkj->ij", w_v, w_o)
    per_head = np.einsum("ihk,hki->h", w_v, w_o) / d
    off = p[~np.eye(d, dtype=bool)]
    return {
        "diag_mean": float(np.diagonal(p).mean()),
        "offdiag_std": float(off.std()),
        "head_diag_mean": per_head,
        "head_diag_mean_avg": float(per_head.mean()),
        "head_diag_mean_spread": float(per_head.std()),
        "head_diag_mean_min": float(per_head.min()),
        "head_diag_mean_max": float(per_head.max()),
    }


QK_ROWS = [
    ("diag_mean", "diag mean of W_q^h W_k^hᵀ"),
    ("offdiag_std", "off-diag std"),
    ("sv_top", "top singular value"),
    ("sv_median", "median singular value (of k)"),
    ("sv_kth", "k-th singular value"),
]
VO_ROWS = [
    ("diag_mean", "diag mean of W_v W_o (all heads)"),
    ("offdiag_std", "off-diag std of W_v W_o"),
    ("head_diag_mean_avg", "per-head diag mean, avg over heads"),
    ("head_diag_mean_spread", "per-head diag mean, std over heads"),
    ("head_diag_mean_min", "per-head diag mean, smallest head"),
    ("head_diag_mean_max", "per-head diag mean, largest head"),
]
VO_VARIANTS = [("exact", False), ("exact", True), ("fast", False), ("fast", True)]


def variant_name(method: str, rotate: bool) -> str:
    return f"{method}{' + rotate_heads' if rotate else ''}"


def run_config(d: int, heads: int, keys: int) -> dict:
    k = d // heads
    res: dict = {"d": d, "heads": heads, "head_dim": k, "keys": keys, "qk": {}, "vo": {}, "time_s": {}}
    base = jax.random.key(20240601)
    for method in ("exact", "fast"):
        t0 = time.perf_counter()
        per_key = []
        for i in range(keys):
            w_q, w_k = mj.query_key(
                jax.random.fold_in(base, i), d, heads, k, alpha=ALPHA_QK, beta=BETA_QK, method=method
            )
            per_key.append(qk_stats(np.asarray(w_q, np.float64), np.asarray(w_k, np.float64)))
        res["qk"][method] = {n: np.stack([pk[n] for pk in per_key]) for n in per_key[0]}  # (keys, H[, k])
        res["time_s"][f"qk_{method}"] = time.perf_counter() - t0
        _report.log(f"d={d} H={heads} query/key {method}: {res['time_s'][f'qk_{method}']:.1f} s")
    for method, rotate in VO_VARIANTS:
        name = variant_name(method, rotate)
        t0 = time.perf_counter()
        per_key = []
        for i in range(keys):
            w_v, w_o = mj.value_output(
                jax.random.fold_in(base, 1000 + i),
                d,
                heads,
                k,
                alpha=ALPHA_VO,
                beta=BETA_VO,
                method=method,
                rotate_heads=rotate,
            )
            per_key.append(vo_stats(np.asarray(w_v, np.float64), np.asarray(w_o, np.float64)))
        res["vo"][name] = {n: np.array([pk[n] for pk in per_key]) for n in per_key[0]}
        res["time_s"][f"vo_{name}"] = time.perf_counter() - t0
    # Reference: the untruncated target's spectrum (one draw), for the plot.
    rng = np.random.default_rng(0)
    target = ALPHA_QK * rng.standard_normal((d, d)) / np.sqrt(d) + BETA_QK * np.eye(d)
    res["target_spectrum"] = np.linalg.svd(target, compute_uv=False)
    res["target_diag_mean"] = float(np.diagonal(target).mean())
    return res


def summarize(res: dict) -> tuple[str, dict]:
    """Markdown tables and a JSON-friendly summary (mean/std over keys of per-draw averages)."""
    summary: dict = {"qk": {}, "vo": {}}
    rows = []
    for key, label in QK_ROWS:
        cells = [label]
        for method in ("exact", "fast"):
            per_draw = res["qk"][method][key].mean(axis=1)  # average over heads, one value per key
            m, s = float(per_draw.mean()), float(per_draw.std(ddof=1)) if len(per_draw) > 1 else 0.0
            summary["qk"].setdefault(method, {})[key] = {
                "mean": m,
                "std_over_keys": s,
                "std_over_heads_and_keys": float(res["qk"][method][key].std()),
            }
            cells.append(_report.fmt_pm(m, s, 4))
        ex, fa = summary["qk"]["exact"][key]["mean"], summary["qk"]["fast"][key]["mean"]
        cells.append(f"{(fa - ex) / abs(ex) * 100:+.1f} %" if ex else "—")
        rows.append(cells)
    qk_table = _report.md_table(["query/key (per head)", "exact", "fast", "fast vs exact"], rows)
    rows = []
    names = [variant_name(m, r) for m, r in VO_VARIANTS]
    for key, label in VO_ROWS:
        cells = [label]
        for name in names:
            vals = np.asarray(res["vo"][name][key])
            m, s = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            summary["vo"].setdefault(name, {})[key] = {"mean": m, "std_over_keys": s}
            cells.append(_report.fmt_pm(m, s, 4))
        rows.append(cells)
    vo_table = _report.md_table(["value/out (per layer)", *names], rows)
    text = (
        f"### d = {res['d']}, H = {res['heads']}, k = {res['head_dim']} ({res['keys']} keys)\n\n"
        f"{qk_table}\n\n{vo_table}\n"
    )
    return text, summary


def plot(results: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = results[-1]  # the largest configuration
    k = res["head_dim"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    idx = np.arange(1, k + 1)
    ax.plot(
        np.arange(1, res["d"] + 1),
        res["target_spectrum"],
        color="0.7",
        lw=1,
        label="target αZ+βI (untruncated, one draw)",
    )
    for method, style in (("exact", "-"), ("fast", "--")):
        spec = res["qk"][method]["spectra"]  # (keys, H, k)
        ax.plot(idx, spec[0, 0], style, lw=1.8, label=f"{method}: key 0, head 0")
        ax.fill_between(
            idx, spec.min(axis=(0, 1)), spec.max(axis=(0, 1)), alpha=0.15, label=f"{method}: range over keys × heads"
        )
    ax.axvline(k, color="k", lw=0.6, ls=":")
    ax.set_xlim(0, min(res["d"], 4 * k))
    ax.set_xlabel("singular value index")
    ax.set_ylabel("singular value")
    ax.set_title(rf"query/key product $W_q^h W_k^{{h\top}}$, d={res['d']}, H={res['heads']}, k={k}")
    ax.legend(fontsize=8)
    ax = axes[1]
    heads = np.arange(res["heads"])
    width = 0.2
    for j, (method, rotate) in enumerate(VO_VARIANTS):
        name = variant_name(method, rotate)
        vals = np.asarray(res["vo"][name]["head_diag_mean"])  # (keys, H)
        ax.bar(heads + (j - 1.5) * width, vals.mean(axis=0), width, yerr=vals.std(axis=0), label=name, capsize=2)
    ax.axhline(-BETA_VO / res["heads"], color="k", lw=0.8, ls=":", label="−β₂/H (even share)")
    ax.set_xlabel("head")
    ax.set_ylabel(r"$\mathrm{tr}(W_v^h W_o^h)\,/\,d$")
    ax.set_title(f"value/out per-head diagonal mean (mean ± std over {res['keys']} keys)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0])
    run = _report.Run("product_statistics", "Mimetic attention: product statistics, exact vs fast", args)
    configs = [(192, 3)] if args.quick else [(192, 3), (768, 12)]
    keys = 2 if args.quick else 8
    results = []
    for d, h in configs:
        run.stage(f"d={d}, H={h}: sampling {keys} keys")
        results.append(run_config(d, h, keys))
    texts, summaries = [], {}
    for res in results:
        text, summary = summarize(res)
        texts.append(text)
        summaries[f"d{res['d']}_H{res['heads']}"] = summary
    png = _report.RESULTS / ("product_statistics.quick.png" if args.quick else "product_statistics.png")
    _report.RESULTS.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    body = (
        "Statistics of the products the samplers produce (published defaults α1=β1=0.7, α2=β2=0.4, sign −1, "
        "normal Z). Each entry: the statistic averaged over the heads of one draw, mean ± std over "
        f"{keys} keys. Query/key singular values are those of the rank-k product (top, median of the k nonzero "
        "ones, k-th). Value/out: `diag mean` is tr(W_v W_o)/d of the whole layer; `per-head` is "
        "tr(W_v^h W_o^h)/d, whose average over heads is the layer's diag mean / H and whose spread shows how "
        "evenly the identity is shared. SPEC §1 sanity numbers for d=192, H=3: query/key diag mean ≈ 0.40, "
        "off-diag std ≈ 0.05, value/out diag mean ≈ −0.40.\n\n"
        + "\n".join(texts)
        + f"\nPlot: `{png.name}` (left: singular spectra of one head's query/key product, d={configs[-1][0]}; "
        "right: value/out per-head diagonal means).\n"
    )
    run.data.update(
        {
            "configs": [
                {k: v for k, v in r.items() if k not in ("qk", "vo")}
                | {
                    "qk_per_key_per_head": {
                        m: {n: v for n, v in r["qk"][m].items() if n != "spectra"} for m in r["qk"]
                    },
                    "qk_spectrum_key0_head0": {m: r["qk"][m]["spectra"][0, 0] for m in r["qk"]},
                    "vo_per_key": r["vo"],
                }
                for r in results
            ],
            "summary": summaries,
            "plot": png.name,
        }
    )
    run.finish(body)


if __name__ == "__main__":
    main()
