"""Emergence-promoting scaling: Xavier/Kaiming vs emergence-scaled, over an alpha sweep, on digits.

What it measures: test accuracy after the first epoch and at the end of training, and the
emergence measure at init (``mimetic_jax.emergence_measure``, log10 E, mean over 512
training images), of small MLPs and CNNs on scikit-learn's digits, each with and without
BatchNorm, initialized with Xavier (``glorot_uniform``) or Kaiming (``he_normal``) kernels
and then scaled by ``emergence_scale(..., alpha=α)`` (Li, George & Silva 2024,
arXiv 2407.19044) for every α of the sweep (α = 1 is the unscaled baseline).

Models (ReLU, zero biases): MLP 64 → 256 → 256 → 256 → 256 → 10 (5 Dense layers);
CNN conv 3x3 8 → 8 (stride 2) → 16 → 16, global average pool, Dense 10 (5 layers; small
because vmapped convolutions of 30 models are slow on a shared 2-core CPU). With
BatchNorm, a ``BatchNorm`` sits between each hidden layer and its ReLU. BatchNorm always
normalizes with the statistics of the batch it sees, at test time too (the whole 450-image
test set is one batch), so the shared loop (``mimetic_jax.experiments.training.train_models``) needs no
mutable state; the running averages are never used. This is ours, for the comparison of
inits; it is not how a deployed BatchNorm model is evaluated.

Pairing: for seed ``s``, every α and both base inits of seed ``s`` share one data order;
all α of one base init start from the same base draw. All models of one (architecture,
BatchNorm) configuration train in one vmapped program. Training: AdamW (weight decay 0.05
on kernels), no warm-up, cosine decay to zero, batch 64, ``--epochs`` epochs.

Reported: accuracy mean ± std over seeds (ddof=1) per configuration, base init and α; the
paired difference to α = 1 averaged over everything; the default α is the sweep's α > 1
with the best mean final accuracy difference to α = 1 over all configurations and base
inits (ties: the smaller α) if that difference is positive with p < 0.05 (one-sample t-test of
the paired differences); otherwise α = 1.1 (the value of a third-party implementation; the
authors' repository holds no code) stays the default, backed by this sweep.

Run: ``python benchmarks/emergence.py [--quick] [--epochs N] [--seeds N]`` (full run ~15 min on
2 shared CPU cores; ``--quick`` about 1 min, writes ``emergence.quick.*``).

``--mechanism`` (a few seconds, no training; writes ``emergence_mechanism.*``): why the measure
falls with α. For a bias-free ReLU MLP 64 → 256 ×4 → 10 (one Xavier and one Kaiming draw, key 0)
on 512 digits images, per α: the fraction of active units (> 0.05) in each hidden layer, the
RMS pre-activation of each hidden layer, and log10 E (mean over images) with ``paths="all"``,
``paths="to_output"`` and ``threshold=0`` (activity by sign, which positive scaling cannot change).
"""

from __future__ import annotations

import _report
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import (
    emergence_factors,
    emergence_measure,
    emergence_scale,
    forward_order,
)
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import stack_trees, train_models

THIRD_PARTY_ALPHA = 1.1  # a third-party implementation's value (the authors' repository holds no code)
BASES = {"xavier": nn.initializers.glorot_uniform(), "kaiming": nn.initializers.he_normal()}


class MLP(nn.Module):
    widths: tuple[int, ...]
    num_classes: int
    batch_norm: bool
    kernel_init: nn.initializers.Initializer

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for w in self.widths:
            x = nn.Dense(w, kernel_init=self.kernel_init)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            self.sow("intermediates", "act", x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


class CNN(nn.Module):
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_classes: int
    batch_norm: bool
    kernel_init: nn.initializers.Initializer

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        for c, s in zip(self.channels, self.strides):
            x = nn.Conv(c, (3, 3), strides=(s, s), kernel_init=self.kernel_init)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            self.sow("intermediates", "act", x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x.mean(axis=(1, 2)))


def _extra(p) -> None:
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 15; quick 3)")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 2)")
    p.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=None,
        help="swept alphas, 1 first (default 1 1.1 1.25 1.5 2; quick 1 1.5)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--archs", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument(
        "--mechanism",
        action="store_true",
        help="no training: active units per hidden layer and E vs alpha (why E falls with alpha)",
    )
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="recompute the summary and tables from results/emergence[.quick].json (no training)",
    )


def make_model(arch: str, batch_norm: bool, base: str, quick: bool) -> nn.Module:
    init = BASES[base]
    if arch == "mlp":
        return MLP((64,) * 2 if quick else (256,) * 4, 10, batch_norm, init)
    return CNN((8, 8) if quick else (8, 8, 16, 16), (1, 2) if quick else (1, 2, 1, 1), 10, batch_norm, init)


def activations(model: nn.Module, variables, x: jax.Array) -> list[np.ndarray]:
    """``[input, hidden ReLU outputs ..., logits]`` of one model on ``x`` (batch statistics)."""
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    hidden = state["intermediates"]["act"]  # sown in forward order by the top module
    return [np.asarray(x)] + [np.asarray(h) for h in hidden] + [np.asarray(logits)]


def run_config(arch: str, batch_norm: bool, data, cfg: dict, quick: bool) -> dict:
    seeds, alphas = list(range(cfg["seeds"])), cfg["alphas"]
    x0 = jnp.asarray(data.x_train[:1])
    probe = jnp.asarray(data.x_train[:512])
    models, stacks, keys, labels, measures = {}, [], [], [], {}
    for base in BASES:
        model = models[base] = make_model(arch, batch_norm, base, quick)
        order = forward_order(model, x0)
        init = jax.jit(model.init)
        for alpha in alphas:
            for s in seeds:
                init_key, data_key = jax.random.split(jax.random.key(s))
                variables = init(init_key, x0)
                if alpha != 1.0:
                    variables = emergence_scale(variables, alpha=alpha, order=order)
                stacks.append(variables)
                keys.append(data_key)
                labels.append((base, alpha, s))
                log_e = emergence_measure(activations(model, variables, probe), log=True)
                measures[(base, alpha, s)] = float(np.mean(log_e) / np.log(10))
    model = models["xavier"]  # same apply for both bases (kernel_init only matters at init)

    def apply_fn(variables, x):
        return model.apply(variables, x, train=True, mutable=["batch_stats"])[0]

    spe = data.x_train.shape[0] // cfg["batch_size"]
    steps = cfg["epochs"] * spe
    eval_steps = sorted({spe, min(steps, 5 * spe), steps})
    history = train_models(
        apply_fn,
        stack_trees(stacks),
        jnp.stack(keys),
        data,
        steps=steps,
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        warmup_steps=0,
        eval_steps=eval_steps,
    )
    acc = {lab: history.test_accuracy[i].tolist() for i, lab in enumerate(labels)}
    out = {
        "steps": [int(s) for s in history.steps],
        "steps_per_epoch": spe,
        "seconds": history.seconds,
        "runs": [
            {
                "base": b,
                "alpha": a,
                "seed": s,
                "accuracy": acc[(b, a, s)],
                "log10_emergence_at_init": measures[(b, a, s)],
            }
            for (b, a, s) in labels
        ],
    }
    _report.log(f"  {arch} bn={batch_norm}: {len(labels)} models, {steps} steps, {history.seconds:.0f} s")
    return out


def summarize(results: dict, alphas: list[float]) -> dict:
    """Per-α paired differences to α = 1 over every configuration, base and seed; the default α."""
    diffs: dict[float, dict[str, list[float]]] = {a: {"first": [], "final": []} for a in alphas[1:]}
    for r in results.values():
        runs = {(x["base"], x["alpha"], x["seed"]): x for x in r["runs"]}
        for (b, a, s), x in runs.items():
            if a == alphas[0]:
                continue
            ref = runs[(b, alphas[0], s)]
            diffs[a]["first"].append(x["accuracy"][0] - ref["accuracy"][0])
            diffs[a]["final"].append(x["accuracy"][-1] - ref["accuracy"][-1])
    table = {f"{a:g}": {k: _paired(v) for k, v in d.items()} for a, d in diffs.items()}
    best = None
    if table:
        cand = max(alphas[1:], key=lambda a: (table[f"{a:g}"]["final"]["mean"], -a))
        final = table[f"{cand:g}"]["final"]
        best = cand if final["mean"] > 0 and final["p"] is not None and final["p"] < 0.05 else None
    return {
        "paired_vs_alpha1": table,
        "best_alpha": best,
        "default_alpha": best if best is not None else THIRD_PARTY_ALPHA,
    }


def _paired(v: list[float]) -> dict:
    """Mean, std (ddof=1), wins and the two-sided one-sample t-test p-value of paired differences."""
    from scipy import stats

    arr = np.asarray(v, np.float64)
    p = float(stats.ttest_1samp(arr, 0.0).pvalue) if arr.size > 1 and np.any(arr != arr[0]) else None
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "wins": int(np.sum(arr > 0)),
        "losses": int(np.sum(arr < 0)),
        "n": int(arr.size),
        "p": p,
    }


def markdown(cfg: dict, results: dict, summary: dict | None) -> str:
    parts = [
        f"Digits (1347 train / 450 test), AdamW lr {cfg['lr']:g} (wd 0.05, no warm-up, cosine to 0), batch "
        f"{cfg['batch_size']}, {cfg['epochs']} epochs; {cfg['seeds']} seeds; α = 1 is the plain init. "
        "Accuracy in %, mean ± std over seeds (ddof=1). log10 E: emergence measure at init (threshold 0.05, "
        "nodes = input pixels, every hidden unit (h, w, c), logits; consecutive layers treated as fully "
        "connected), mean over 512 training images. BatchNorm uses batch statistics at test time too."
    ]
    for name, r in results.items():
        rows = []
        for base in BASES:
            for a in cfg["alphas"]:
                runs = [x for x in r["runs"] if x["base"] == base and x["alpha"] == a]
                first = 100 * np.array([x["accuracy"][0] for x in runs])
                final = 100 * np.array([x["accuracy"][-1] for x in runs])
                le = np.array([x["log10_emergence_at_init"] for x in runs])
                sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                rows.append(
                    [
                        base,
                        f"{a:g}",
                        _report.fmt_pm(first.mean(), sd(first), 2),
                        _report.fmt_pm(final.mean(), sd(final), 2),
                        f"{le.mean():.2f}",
                    ]
                )
        parts.append(
            f"## {name} (first epoch = step {r['steps'][0]}, end = step {r['steps'][-1]}; "
            f"{r['seconds']:.0f} s for {len(r['runs'])} models)\n\n"
            + _report.md_table(["init", "α", "acc. after epoch 1", "acc. at end", "log10 E at init"], rows)
        )
    if summary is not None:

        def cells(d: dict) -> list[str]:
            return [
                _report.fmt_pm(100 * d["mean"], 100 * d["std"], 2),
                f"{d['wins']}/{d['losses']}/{d['n']}",
                "—" if d["p"] is None else f"{d['p']:.2g}",
            ]

        rows = [[a, *cells(d["first"]), *cells(d["final"])] for a, d in summary["paired_vs_alpha1"].items()]
        parts.append(
            "## Paired difference to α = 1 (same base draw and data order), over all configurations, "
            "base inits and seeds (percentage points; W/L/n = wins/losses/pairs; p = two-sided one-sample "
            "t-test of the differences)\n\n"
            + _report.md_table(["α", "epoch 1", "W/L/n", "p", "end", "W/L/n", "p"], rows)
        )
        best = summary["best_alpha"]
        parts.append(
            "Rule: the α > 1 with the best mean final difference becomes the default if that difference is "
            "positive with p < 0.05; otherwise the default stays α = "
            f"{THIRD_PARTY_ALPHA:g} (a third-party implementation's value; the authors' repository holds no "
            "code). Outcome: "
            + (
                f"**{best:g}**."
                if best is not None
                else f"**no α is distinguishable from no scaling; default stays {THIRD_PARTY_ALPHA:g}**."
            )
        )
    return "\n\n".join(parts)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "epochs": args.epochs or (3 if q else 15),
        "seeds": args.seeds or (2 if q else 3),
        "alphas": args.alphas or ([1.0, 1.5] if q else [1.0, 1.1, 1.25, 1.5, 2.0]),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "archs": args.archs,
    }
    if cfg["alphas"][0] != 1.0:
        raise SystemExit("--alphas must start with 1 (the unscaled baseline)")
    if args.summarize_only:
        return _resummarize(q)
    if args.mechanism:
        return _mechanism(args)
    run = _report.Run("emergence", "Emergence-promoting scaling vs plain Xavier/Kaiming init on digits", args)
    results: dict = {}
    run.data.update({"config": cfg, "configs": results})
    run.partial_markdown = lambda: markdown(cfg, results, None)
    data = load_digits()
    for arch in cfg["archs"]:
        for bn in (False, True):
            name = f"{arch.upper()}{' + BatchNorm' if bn else ''}"
            run.stage(name)
            results[name] = run_config(arch, bn, data, cfg, q)
            run.finish(markdown(cfg, results, None))  # partial results after each configuration
    summary = summarize(results, cfg["alphas"])
    run.data["summary"] = summary
    body = markdown(cfg, results, summary)
    run.finish(body)
    print(body)


def _mechanism(args) -> None:
    """Active units and E vs alpha for a bias-free ReLU MLP at init (module docstring)."""
    run = _report.Run("emergence_mechanism", "Why the emergence measure falls with α (no training)", args)
    x = jnp.asarray(load_digits().x_train[:512]).reshape(512, -1)
    widths, alphas = [x.shape[1], 256, 256, 256, 256, 10], [1.0, 1.1, 1.5, 2.0]
    rows, data = [], []
    for name, init in BASES.items():
        keys = jax.random.split(jax.random.key(0), len(widths) - 1)
        kernels = [init(k, (a, b)) for k, a, b in zip(keys, widths[:-1], widths[1:])]
        for alpha in alphas:
            factors = emergence_factors(len(kernels), alpha=alpha)
            h, acts, active, rms = x, [np.asarray(x)], [], []
            for i, (w, c) in enumerate(zip(kernels, factors)):
                z = h @ (w * c)
                h = z if i == len(kernels) - 1 else jax.nn.relu(z)
                acts.append(np.asarray(h))
                if i < len(kernels) - 1:
                    active.append(float((h > 0.05).mean()))
                    rms.append(float(jnp.sqrt(jnp.mean(z**2))))
            log10 = {
                k: float(np.mean(emergence_measure(acts, log=True, **kw)) / np.log(10))
                for k, kw in (("all", {}), ("to_output", {"paths": "to_output"}), ("threshold 0", {"threshold": 0.0}))
            }
            data.append({"init": name, "alpha": alpha, "active": active, "rms": rms, "log10_e": log10})
            rows.append(
                [
                    name,
                    f"{alpha:g}",
                    " / ".join(f"{a:.2f}" for a in active),
                    " / ".join(f"{r:.3f}" for r in rms),
                    *(f"{v:.2f}" for v in log10.values()),
                ]
            )
    run.data["rows"] = data
    body = (
        "Bias-free ReLU MLP 64 → 256 ×4 → 10 at init (key 0), 512 digits training images, threshold 0.05 "
        "unless said. Active: fraction of hidden units > 0.05 per hidden layer; RMS: of each hidden "
        "layer's pre-activations.\n\n"
        + _report.md_table(
            [
                "init",
                "α",
                "active (hidden 1–4)",
                "RMS pre-activation",
                "log10 E all",
                "log10 E to_output",
                "log10 E threshold 0",
            ],
            rows,
        )
    )
    run.finish(body)
    print(body)


def _resummarize(quick: bool) -> None:
    import json

    path = _report.RESULTS / f"emergence{'.quick' if quick else ''}.json"
    saved = json.loads(path.read_text())
    cfg, results = saved["config"], saved["configs"]
    summary = summarize(results, cfg["alphas"])
    data = {k: v for k, v in saved.items() if k not in ("benchmark", "quick", "machine", "script_wall_s")}
    data["summary"] = summary
    body = markdown(cfg, results, summary)
    _report.write_results(
        "emergence",
        quick,
        saved["machine"],
        data,
        "Emergence-promoting scaling vs plain Xavier/Kaiming init on digits",
        body,
        wall_s=saved["script_wall_s"],
    )
    print(body)


if __name__ == "__main__":
    main()
