"""Mimetic attention across rank regimes and grouped-query heads, ``method="exact"`` vs ``"fast"``.

Two questions (issue 15, items 2 and 3), answered with cheap statistics over several keys:

1. **Rank regimes** (one target per head, ``num_kv_heads = num_heads``). The product's rank
   ``r`` is the head size ``k`` for query/key and ``H·k`` for value/out. ``fast`` has three
   regimes (``mimetic_jax._linalg.fast_regime``): template (``r <= d/2``), exact
   (``d/2 < r < d``: fast now draws the target, the same arrays as ``exact``) and rotation
   (``r = d``). For ``r`` from ``d/8`` to ``d``: diagonal mean and off-diagonal std of
   ``W_q^h W_k^hᵀ`` (per head) and of ``W_v W_o`` (per layer), exact against fast, and the
   diagonal mean the previous fast construction had in the middle regime (a random
   ``r``-dimensional subspace: ``β r/d`` in expectation).
2. **Grouped-query attention** (``num_kv_heads < num_heads``, ``g`` query heads per key
   head). Per-head diagonal mean by position inside the group, exact and fast, and the
   least-squares error ``Σ_h ‖A_h − W_q^h W_kᵀ‖² / Σ_h ‖A_h‖²`` of the exact construction
   (shared key space from the stack of the group's targets) against the previous one (key
   space of the group's first head, every head projected onto it), on the same targets;
   the previous construction's per-position diagonal is computed from those targets too.

Each statistic: mean ± std over keys (query/key: of the per-draw average over heads, or of
one position's average over the groups of a draw). ``--quick``: d = 192 only, 4 keys.

Run: ``python benchmarks/attention_regimes.py [--quick]``.
"""

from __future__ import annotations

import time

import _report
import jax
import numpy as np

import mimetic_jax as mj
from mimetic_jax import _linalg

ALPHA_QK, BETA_QK = 0.7, 0.7
ALPHA_VO, BETA_VO = 0.4, 0.4
#: Ranks as fractions of d: template (≤ 1/2), exact (between), rotation (1).
RANK_FRACTIONS = ((1, 8), (1, 4), (1, 2), (7, 12), (2, 3), (5, 6), (1, 1))


def diag_off(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal mean and off-diagonal std of each square matrix in ``p`` (``(..., d, d)``)."""
    d = p.shape[-1]
    diag = np.diagonal(p, axis1=-2, axis2=-1)
    off = p - diag[..., None] * np.eye(d)
    return diag.mean(-1), np.sqrt((off**2).sum((-2, -1)) / (d * d - d))


def draw(fn, keys):
    """``fn`` over a batch of keys, one jitted vmapped program, as float64 NumPy."""
    return [np.asarray(x, np.float64) for x in jax.jit(jax.vmap(fn))(keys)]


def qk_products(w_q: np.ndarray, w_k: np.ndarray) -> np.ndarray:
    """``(keys, H, d, d)`` per-head products; query head ``h`` uses key head ``h // g``."""
    g = w_q.shape[2] // w_k.shape[2]
    return np.einsum("nihk,njhk->nhij", w_q, np.repeat(w_k, g, axis=2))


def pm(x: np.ndarray, digits: int = 4) -> str:
    x = np.asarray(x)
    return _report.fmt_pm(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, digits)


def regimes(d: int, keys: np.ndarray) -> dict:
    """Exact vs fast for query/key (2 heads of size r) and value/out (rank r = H·k, k = d/24)."""
    out: dict = {"d": d, "keys": len(keys), "query_key": [], "value_output": []}
    for num, den in RANK_FRACTIONS:
        r = d * num // den
        row: dict = {"rank": r, "regime": _linalg.fast_regime(d, d, r), "random_subspace_diag": BETA_QK * r / d}
        for method in ("exact", "fast"):
            t0 = time.perf_counter()
            w_q, w_k = draw(lambda k, m=method: mj.query_key(k, d, 2, r, alpha=ALPHA_QK, beta=BETA_QK, method=m), keys)
            diag, off = diag_off(qk_products(w_q, w_k))
            row[method] = {"diag_mean": diag.mean(1), "offdiag_std": off.mean(1), "time_s": time.perf_counter() - t0}
        out["query_key"].append(row)
        k = d // 24
        row = {
            "rank": r,
            "heads": r // k,
            "head_dim": k,
            "regime": _linalg.fast_regime(d, d, r),
            "random_subspace_diag": -BETA_VO * r / d,
        }
        for method in ("exact", "fast"):
            t0 = time.perf_counter()
            w_v, w_o = draw(
                lambda kk, m=method: mj.value_output(kk, d, r // k, k, alpha=ALPHA_VO, beta=BETA_VO, method=m), keys
            )
            diag, off = diag_off(np.einsum("nihk,nhkj->nij", w_v, w_o))
            row[method] = {"diag_mean": diag, "offdiag_std": off, "time_s": time.perf_counter() - t0}
        out["value_output"].append(row)
        _report.log(f"d={d} r={r} ({row['regime']}) done")
    return out


def grouped(d: int, heads: int, k: int, kv_heads: int, keys: np.ndarray) -> dict:
    """Per-position diagonal means (exact, fast, previous construction) and least-squares errors."""
    g = heads // kv_heads
    res: dict = {
        "d": d,
        "heads": heads,
        "head_dim": k,
        "kv_heads": kv_heads,
        "group": g,
        "keys": len(keys),
        "regime": _linalg.fast_regime(d, d, k, g),
    }
    for method in ("exact", "fast"):
        w_q, w_k = draw(
            lambda kk, m=method: mj.query_key(
                kk, d, heads, k, num_kv_heads=kv_heads, alpha=ALPHA_QK, beta=BETA_QK, method=m
            ),
            keys,
        )
        prods = qk_products(w_q, w_k)
        diag, off = diag_off(prods)  # (keys, H)
        res[method] = {
            "position_diag_mean": diag.reshape(len(keys), kv_heads, g).mean(1),  # (keys, g)
            "offdiag_std": off.mean(1),
        }
        if method == "exact":
            exact_prods = prods
    # The targets of the exact recipe (head h from split(key, H)[h]) and the previous construction.
    err_new, err_old, tot, old_diag = [], [], [], []
    for n, key in enumerate(keys):
        targets = np.stack(
            [
                np.asarray(_linalg.identity_target(kk, d, d, ALPHA_QK, BETA_QK, "normal"), np.float64)
                for kk in jax.random.split(key, heads)
            ]
        )
        old = np.empty_like(targets)
        for j in range(kv_heads):
            v = np.linalg.svd(targets[j * g])[2][:k].T  # key space of the group's first head
            old[j * g : (j + 1) * g] = targets[j * g : (j + 1) * g] @ v @ v.T
        tot.append(float((targets**2).sum()))
        err_new.append(float(((targets - exact_prods[n]) ** 2).sum()))
        err_old.append(float(((targets - old) ** 2).sum()))
        old_diag.append(diag_off(old)[0].reshape(kv_heads, g).mean(0))
    res["first_head"] = {"position_diag_mean": np.array(old_diag)}
    res["ls_error_group"] = np.array(err_new) / np.array(tot)
    res["ls_error_first_head"] = np.array(err_old) / np.array(tot)
    _report.log(f"GQA d={d} H={heads} k={k} H_kv={kv_heads} done")
    return res


def _regime_table(d: int, rows: list[dict], size_header: str, previous: str, size) -> str:
    """One comparison table of exact against fast over the rank regimes (query/key or value/out)."""
    cells = []
    for row in rows:
        ex, fa = row["exact"]["diag_mean"], row["fast"]["diag_mean"]
        cells.append(
            [
                size(row),
                f"{row['rank'] / d:.3f}",
                row["regime"],
                pm(ex),
                pm(fa),
                f"{(fa.mean() - ex.mean()) / abs(ex.mean()) * 100:+.2f} %",
                pm(row["exact"]["offdiag_std"]),
                pm(row["fast"]["offdiag_std"]),
                f"{row['random_subspace_diag']:.4f}" if row["regime"] == "exact" else "—",
            ]
        )
    head = ["fast regime", "diag mean exact", "diag mean fast", "fast vs exact", "off-diag std exact"]
    head += ["off-diag std fast", previous]
    return _report.md_table([size_header, f"{size_header}/d", *head], cells)


def regime_tables(res: dict) -> str:
    d = res["d"]
    qk = _regime_table(d, res["query_key"], "k", "previous fast (β k/d)", lambda row: row["rank"])
    vo = _regime_table(
        d,
        res["value_output"],
        "H·k",
        "previous fast (−β H·k/d)",
        lambda row: f"{row['heads']}×{row['head_dim']} = {row['rank']}",
    )
    return (
        f"### Rank regimes, d = {d} ({res['keys']} keys)\n\nQuery/key, 2 heads of size k (per head, averaged "
        f"over the 2 heads of a draw):\n\n{qk}\n\nValue/out, rank H·k (per layer):\n\n{vo}\n"
    )


def grouped_table(results: list[dict]) -> str:
    rows = []
    for res in results:
        cfg = f"d {res['d']}, H {res['heads']}×{res['head_dim']}, H_kv {res['kv_heads']} ({res['regime']})"
        for name, label in (("exact", "exact"), ("fast", "fast"), ("first_head", "previous (first head's key space)")):
            pos = res[name]["position_diag_mean"]
            means = pos.mean(0)
            rows.append(
                [cfg, label, " / ".join(f"{m:.4f}" for m in means), f"{means.max() - means.min():.4f}", pm(pos.mean(1))]
            )
            cfg = ""
        rows.append(["", "LS error, group / previous", pm(res["ls_error_group"]), "", pm(res["ls_error_first_head"])])
    return _report.md_table(
        [
            "configuration",
            "construction",
            "diag mean by position in the group (1…g)",
            "largest − smallest",
            "diag mean, all heads (± over keys)",
        ],
        rows,
    )


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0])
    run = _report.Run(
        "attention_regimes", "Mimetic attention: rank regimes and grouped-query heads, exact vs fast", args
    )
    sizes = [192] if args.quick else [96, 192, 384]
    n_keys = 4 if args.quick else 16
    gqa = [(192, 4, 48, 2), (192, 8, 24, 2), (192, 4, 96, 2), (192, 4, 192, 2)]
    if not args.quick:
        gqa += [(768, 12, 64, 4)]
    base = jax.random.key(20260515)
    reg, grp = [], []
    for d in sizes:
        run.stage(f"rank regimes, d={d}, {n_keys} keys")
        reg.append(regimes(d, jax.random.split(jax.random.fold_in(base, d), n_keys)))
    for cfg in gqa:
        run.stage(f"grouped-query {cfg}, {n_keys} keys")
        grp.append(grouped(*cfg, jax.random.split(jax.random.fold_in(base, 1000 + sum(cfg)), n_keys)))
    body = (
        "Published defaults α1 = β1 = 0.7 (query/key), α2 = β2 = 0.4, sign −1 (value/out), normal Z. Each "
        f"entry: mean ± std over {n_keys} keys. `fast regime` is `mimetic_jax._linalg.fast_regime`: template "
        "(r ≤ d/2), exact (d/2 < r < d: fast draws the target and returns the exact recipe's arrays, so the two "
        "columns are equal by construction), rotation (r = d: the target's exact law). `previous fast` is the "
        "diagonal mean fast had in the exact regime before (the projection onto a random r-dimensional "
        "subspace, β r/d in expectation).\n\n"
        + "\n".join(regime_tables(r) for r in reg)
        + "\n### Grouped-query attention\n\n"
        "Per-head diagonal mean of W_q^h W_k^hᵀ by the head's position inside its group (averaged over the "
        "groups and keys), for the shared key space taken from the stack of the group's targets (exact, fast) "
        "and for the previous construction (the group's first head's key space, every head its least-squares "
        "fit; computed from the same targets as exact). LS error: Σ_h ‖A_h − W_q^h W_kᵀ‖² / Σ_h ‖A_h‖² over the "
        "heads of a draw, same targets.\n\n" + grouped_table(grp) + "\n"
    )
    run.data.update({"rank_regimes": reg, "grouped": grp})
    run.finish(body)


if __name__ == "__main__":
    main()
