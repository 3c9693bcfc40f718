"""Does the B/C coupling of mimetic SSM init survive the short convolution? Paired seeds, at init.

Mimetic init sets ``W_C W_Bᵀ ≈ αZ + βI`` so that ``C_t · B_s ≈ β u_tᵀ u_s``: a token attends
to tokens like it. But the scan does not see ``W_B u`` and ``W_C u`` directly:

* Mamba-1: ``B_t = W_B silu(conv(x))_t``, ``C_t = W_C silu(conv(x))_t``: one conv in front of
  both, so ``C_t · B_s`` follows the conv'd features' similarity;
* Mamba-2: ``B_t = silu(conv_B(W_B u))_t``, ``C_t = silu(conv_C(W_C u))_t``: the conv runs on
  the B and C channels themselves with independent random filters and biases, which mixes
  each across time differently.

Measured: the Pearson correlation, over the causal pairs ``s ≤ t`` of one sequence, between
``C_t · B_s`` (first group) as the scan sees it and ``u_tᵀ u_s`` (the block's input), for
tokens from a 16-word vocabulary (embeddings ``N(0, 1)``, length 64, so that repeated tokens
give large ``u_tᵀ u_s``). One standalone block, ``d_model`` 64, ``d_state`` ∈ {8, 32}, for

* ``default``: the reference block's own init (Mamba's);
* ``mimetic conv=False``: ``mimetic_ssm(params, key, conv=False)`` (conv untouched);
* ``mimetic conv="bc"``: identity, zero-bias conv on the B/C channels (Mamba-2 only; Mamba-1
  unchanged by it);
* ``mimetic conv=True``: identity conv on every channel.

Each seed draws its own model, embeddings and tokens, shared by the four inits (paired);
reported: mean ± std over seeds and a paired t-test of each mimetic variant against
``conv=False``.

Also at init, from the same forward pass: the step ``Δ_t`` the scan uses (mean and std over
positions and channels, then averaged over seeds), and the least an input is kept over the
whole sequence, ``min over channels of exp(A Σ_t Δ_t)``, against
:func:`mimetic_jax.min_retention` with the constant target step ``Δ = 1`` (a bound that
ignores the input-dependent part of ``Δ``).

Run: ``python benchmarks/ssm_coupling.py [--quick] [--seeds N]`` (CPU, a few minutes).
"""

from __future__ import annotations

import _report
import jax
import numpy as np
from training import paired_stats

from mimetic_jax.experiments.models.mamba import Mamba1, Mamba2
from mimetic_jax.ssm import DELTA, mimetic_ssm, min_retention

INITS = {"default": None, "mimetic conv=False": False, "mimetic conv='bc'": "bc", "mimetic conv=True": True}
D_MODEL, LENGTH, VOCAB = 64, 64, 16


def intermediates(block, variables, u) -> dict:
    """The block's forward pass on ``u``, every submodule's output captured (one pass serves both measures)."""
    _, state = block.apply(variables, u, capture_intermediates=True)
    return state["intermediates"]


def scan_inputs(block, inter):
    """``(B, C)`` of the first group as the scan sees them, ``(L, N)`` each."""
    n = block.d_state
    if isinstance(block, Mamba1):
        x_dbl = inter["x_proj"]["__call__"][0][0]
        rank = x_dbl.shape[-1] - 2 * n
        return x_dbl[:, rank : rank + n], x_dbl[:, rank + n : rank + 2 * n]
    xbc = jax.nn.silu(inter["conv1d"]["__call__"][0][0])
    d_inner = xbc.shape[-1] - 2 * block.ngroups * n
    gn = block.ngroups * n
    return xbc[:, d_inner : d_inner + n], xbc[:, d_inner + gn : d_inner + gn + n]


def steps_and_decay(block, variables, inter):
    """``(Δ, A)``: the scan's step ``(L, channels)`` and the transition ``A`` (channels × states)."""
    params = variables["params"]
    a = -np.exp(np.asarray(params["A_log"], np.float64))
    if isinstance(block, Mamba1):
        delta = jax.nn.softplus(inter["dt_proj"]["__call__"][0][0])
        return np.asarray(delta, np.float64), a
    heads = a.shape[0]
    dt = inter["in_proj"]["__call__"][0][0][:, -heads:]
    delta = jax.nn.softplus(dt + params["dt_bias"])
    return np.asarray(delta, np.float64), a[:, None]


def retention(block, variables, inter) -> tuple[float, float, float, float]:
    """Δ mean and std, the sequence's least retention and :func:`min_retention`'s constant-Δ value."""
    delta, a = steps_and_decay(block, variables, inter)
    kept = np.exp(a * delta.sum(axis=0)[:, None])  # (channels, states): exp(A Σ_t Δ_t)
    bound = float(min_retention(variables["params"]["A_log"], DELTA, LENGTH))
    return float(delta.mean()), float(delta.std()), float(kept.min()), bound


def coupling(block, inter, u) -> float:
    b, c = scan_inputs(block, inter)
    scores = np.asarray(c @ b.T, np.float64)
    sims = np.asarray(u[0] @ u[0].T, np.float64)
    rows, cols = np.tril_indices(LENGTH)
    return float(np.corrcoef(scores[rows, cols], sims[rows, cols])[0, 1])


def run_all(seeds: int, states: tuple[int, ...]) -> list[dict]:
    rows = []
    for version, cls in ((1, Mamba1), (2, Mamba2)):
        for n in states:
            block = cls(d_model=D_MODEL, d_state=n)
            per_init: dict[str, list[float]] = {name: [] for name in INITS}
            steps: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in INITS}
            for seed in range(seeds):
                k_model, k_emb, k_tok, k_mim = jax.random.split(jax.random.key(seed), 4)
                emb = jax.random.normal(k_emb, (VOCAB, D_MODEL))
                u = emb[jax.random.randint(k_tok, (1, LENGTH), 0, VOCAB)]
                variables = block.init(k_model, u)
                for name, conv in INITS.items():
                    v = variables if name == "default" else mimetic_ssm(variables, k_mim, conv=conv, config=block)
                    inter = intermediates(block, v, u)
                    per_init[name].append(coupling(block, inter, u))
                    steps[name].append(retention(block, v, inter))
            base = np.array(per_init["mimetic conv=False"])
            for name, values in per_init.items():
                values = np.array(values)
                row = dict(
                    version=version, d_state=n, init=name, mean=float(values.mean()), std=float(values.std(ddof=1))
                )
                st = np.array(steps[name])  # (seeds, 4)
                row.update(
                    delta_mean=float(st[:, 0].mean()),
                    delta_std=float(st[:, 1].mean()),
                    retention_min=float(st[:, 2].min()),
                    retention_mean=float(st[:, 2].mean()),
                    retention_bound_min=float(st[:, 3].min()),
                )
                if name.startswith("mimetic") and name != "mimetic conv=False":
                    row.update({f"vs_conv_false_{k}": v for k, v in paired_stats(base, values).items()})
                rows.append(row)
                print(f"Mamba-{version} N {n:3d} {name:22s} {row['mean']:+.3f} ± {row['std']:.3f}", flush=True)
    return rows


def main() -> None:
    args = _report.parse_args(
        __doc__.splitlines()[0],
        lambda p: p.add_argument("--seeds", type=int, default=None, help="paired seeds (default 10, quick 3)"),
    )
    run = _report.Run("ssm_coupling", "Mimetic SSM: B/C coupling at init through the short conv", args)
    seeds = args.seeds or (3 if args.quick else 10)
    states = (8,) if args.quick else (8, 32)
    run.stage(f"{seeds} seeds, d_state {states}")
    rows = run_all(seeds, states)
    table = []
    for r in rows:
        vs = ""
        if "vs_conv_false_diff_mean" in r:
            p = r["vs_conv_false_p"]
            vs = f"{r['vs_conv_false_diff_mean']:+.3f} ({r['vs_conv_false_wins']}/{r['vs_conv_false_n']} higher"
            vs += ", identical)" if p is None else f", p {p:.2g})"
        table.append([f"Mamba-{r['version']}", r["d_state"], r["init"], _report.fmt_pm(r["mean"], r["std"]), vs])
    body = (
        f"Pearson correlation over the causal pairs s ≤ t between C_t·B_s (as the scan sees them, first group) "
        f"and u_tᵀu_s (the block's input), d_model {D_MODEL}, length {LENGTH}, vocabulary {VOCAB}; mean ± std over "
        f"{seeds} paired seeds; last column: the variant minus `conv=False`, seeds where it is higher, paired t-test.\n\n"
        + _report.md_table(["block", "N", "init", "correlation", "vs conv=False"], table)
        + "\n\n## The step Δ and the retention at init\n\n"
        + f"Δ_t as the scan uses it (softplus of the input-dependent part plus the bias): mean and std over "
        f"positions and channels, averaged over seeds. Retention: min over channels and states of "
        f"exp(A Σ_t Δ_t) over the {LENGTH} positions (mean over seeds; least seed), against "
        f"`min_retention(A_log, {DELTA}, {LENGTH})`, which holds Δ at its target (least seed).\n\n"
        + _report.md_table(
            ["block", "N", "init", "Δ mean", "Δ std", "retention (mean; least)", "min_retention, Δ = 1"],
            [
                [
                    f"Mamba-{r['version']}",
                    r["d_state"],
                    r["init"],
                    f"{r['delta_mean']:.3f}",
                    f"{r['delta_std']:.3f}",
                    f"{r['retention_mean']:.3f}; {r['retention_min']:.3f}",
                    f"{r['retention_bound_min']:.3f}",
                ]
                for r in rows
            ],
        )
        + "\n"
    )
    run.data.update({"seeds": seeds, "d_model": D_MODEL, "length": LENGTH, "vocab": VOCAB, "rows": rows})
    run.finish(body)


if __name__ == "__main__":
    main()
