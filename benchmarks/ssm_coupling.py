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

Run: ``python benchmarks/ssm_coupling.py [--quick] [--seeds N]`` (CPU, a few minutes).
"""

from __future__ import annotations

import _report
import jax
import numpy as np
from training import paired_stats

from mimetic_jax.experiments.models.mamba import Mamba1, Mamba2
from mimetic_jax.ssm import mimetic_ssm

INITS = {"default": None, "mimetic conv=False": False, "mimetic conv='bc'": "bc", "mimetic conv=True": True}
D_MODEL, LENGTH, VOCAB = 64, 64, 16


def scan_inputs(block, variables, u):
    """``(B, C)`` of the first group as the scan sees them, ``(L, N)`` each."""
    _, state = block.apply(variables, u, capture_intermediates=True)
    inter = state["intermediates"]
    n = block.d_state
    if isinstance(block, Mamba1):
        x_dbl = inter["x_proj"]["__call__"][0][0]
        rank = x_dbl.shape[-1] - 2 * n
        return x_dbl[:, rank : rank + n], x_dbl[:, rank + n : rank + 2 * n]
    xbc = jax.nn.silu(inter["conv1d"]["__call__"][0][0])
    d_inner = xbc.shape[-1] - 2 * block.ngroups * n
    gn = block.ngroups * n
    return xbc[:, d_inner : d_inner + n], xbc[:, d_inner + gn : d_inner + gn + n]


def coupling(block, variables, u) -> float:
    b, c = scan_inputs(block, variables, u)
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
            for seed in range(seeds):
                k_model, k_emb, k_tok, k_mim = jax.random.split(jax.random.key(seed), 4)
                emb = jax.random.normal(k_emb, (VOCAB, D_MODEL))
                u = emb[jax.random.randint(k_tok, (1, LENGTH), 0, VOCAB)]
                variables = block.init(k_model, u)
                for name, conv in INITS.items():
                    v = variables if name == "default" else mimetic_ssm(variables, k_mim, conv=conv)
                    per_init[name].append(coupling(block, v, u))
            base = np.array(per_init["mimetic conv=False"])
            for name, values in per_init.items():
                values = np.array(values)
                row = dict(
                    version=version, d_state=n, init=name, mean=float(values.mean()), std=float(values.std(ddof=1))
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
        + "\n"
    )
    run.data.update({"seeds": seeds, "d_model": D_MODEL, "length": LENGTH, "vocab": VOCAB, "rows": rows})
    run.finish(body)


if __name__ == "__main__":
    main()
