"""Paired-seed training benchmark: mimetic self-attention init vs default init.

What it measures: test accuracy of a small ViT (``mimetic_jax.experiments.models.ViT``, the CLI
defaults: width 64, depth 4, 4 heads, patch 2x2 on digits and 1x4 on MNIST-1D) trained
with its default Flax init and with ``mimetic_attention(params, key, method="exact")``
(the published recipe of Trockman & Kolter 2023), at equal steps, on scikit-learn's
digits and on MNIST-1D (``mimetic_jax.experiments.tasks.load_dataset``).

Protocol (per data set):

1. Learning-rate sweep: for each learning rate of ``--lrs``, ``--sweep-seeds`` seed pairs
   (seeds 1000, 1001, ...) trained ``--sweep-steps`` steps; each init's best learning
   rate is the one with the highest mean final test accuracy (ties: the smaller rate).
2. Main run: ``--seeds`` seed pairs (seeds 0, 1, ...; disjoint from the sweep's) trained
   ``--steps`` steps, each init at its own best learning rate.

Pairing (``mimetic_jax.experiments.training.paired_inits``, as ``mimetic-jax compare`` does): for seed
``s`` both models start from the same ``model.init`` parameters (the mimetic one has only
its attention kernels replaced) and draw the same minibatches in the same order. All
models of one learning rate train in one vmapped ``train_models`` program. Training:
AdamW (weight decay 0.05 on kernels), linear warm-up over 10 % of the steps, cosine decay
to zero, batch ``--batch-size``, softmax cross-entropy.

Reported: test accuracy mean ± std (over seeds, ddof=1) of each init at every
checkpoint; the paired difference mimetic − default (mean, std with ddof=1, paired t-test
p-value from ``scipy.stats.ttest_rel``, wins/ties/losses of mimetic) at an early
checkpoint (the first) and at the final step. The learning rates are picked by *test*
accuracy on the sweep's seeds; the main run's seeds are different ones.

Run: ``python benchmarks/training.py [--quick] [--steps N] [--seeds N] [--datasets digits mnist1d]``
(full run ~20 min on 2 CPU cores; ``--quick`` about 1 min, mostly compilation, writes ``training.quick.*``).
"""

from __future__ import annotations

import _report
import jax
import numpy as np
from scipy import stats

from mimetic_jax.attention import mimetic_attention
from mimetic_jax.experiments.cli import DEFAULT_PATCH
from mimetic_jax.experiments.models import ViT
from mimetic_jax.experiments.tasks import load_dataset
from mimetic_jax.experiments.training import checkpoint_steps, paired_inits, stack_trees, train_models

INITS = ("default", "mimetic")
SWEEP_SEED0 = 1000


def _extra(p) -> None:
    p.add_argument("--datasets", nargs="+", choices=sorted(DEFAULT_PATCH), default=["digits", "mnist1d"])
    p.add_argument("--steps", type=int, default=None, help="main-run steps (default 500; quick 20)")
    p.add_argument("--seeds", type=int, default=None, help="main-run seed pairs (default 10; quick 2)")
    p.add_argument("--sweep-steps", type=int, default=None, help="sweep steps (default STEPS/2)")
    p.add_argument("--sweep-seeds", type=int, default=None, help="sweep seed pairs (default 3; quick 2)")
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3], help="swept learning rates")
    p.add_argument("--checkpoints", type=int, default=5, help="evaluations in the main run, evenly spaced")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=None, help="token width (default 64; quick 32)")
    p.add_argument("--depth", type=int, default=None, help="blocks (default 4; quick 1)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--method", choices=("exact", "fast"), default="exact")
    p.add_argument(
        "--rotate-heads",
        action="store_true",
        help="mimetic_attention(..., rotate_heads=True): value/out heads evened out by a rotation",
    )


def train_pairs(
    model,
    data,
    seeds,
    inits_lr: dict[str, float],
    steps: int,
    eval_steps,
    batch_size: int,
    method: str,
    rotate_heads: bool = False,
) -> dict[str, np.ndarray]:
    """Train both inits over ``seeds``, paired; inits sharing a learning rate share one program.

    Returns ``{init: test accuracy (len(seeds), C)}`` and ``"steps"``, ``"seconds"``.
    """

    def transform(variables, key):
        return mimetic_attention(variables, key, method=method, rotate_heads=rotate_heads)

    default_params, mimetic_params, data_keys = paired_inits(model, data.x_train, seeds, transform=transform)
    params = {"default": default_params, "mimetic": mimetic_params}
    out: dict[str, np.ndarray] = {"seconds": {}}
    for lr in sorted(set(inits_lr.values())):
        group = [name for name in INITS if inits_lr[name] == lr]
        stack = stack_trees([p for name in group for p in params[name]])
        keys = jax.numpy.stack(data_keys * len(group))  # pairs see the same data order
        history = train_models(
            model.apply, stack, keys, data, steps=steps, learning_rate=lr, batch_size=batch_size, eval_steps=eval_steps
        )
        n = len(seeds)
        for i, name in enumerate(group):
            out[name] = history.test_accuracy[i * n : (i + 1) * n]
        out["steps"] = history.steps
        out["seconds"][f"{lr:g}"] = history.seconds
        _report.log(
            f"  lr {lr:g} ({'+'.join(group)}, {len(group) * n} models, {steps} steps): "
            f"{history.seconds:.0f} s; final acc "
            + ", ".join(f"{name} {out[name][:, -1].mean():.4f}" for name in group)
        )
    return out


def paired_stats(default: np.ndarray, mimetic: np.ndarray) -> dict:
    diff = mimetic - default
    n = diff.size
    t = stats.ttest_rel(mimetic, default) if n > 1 and np.any(diff != diff[0]) else None
    return {
        "n": n,
        "default_mean": float(default.mean()),
        "default_std": float(default.std(ddof=1)) if n > 1 else 0.0,
        "mimetic_mean": float(mimetic.mean()),
        "mimetic_std": float(mimetic.std(ddof=1)) if n > 1 else 0.0,
        "diff_mean": float(diff.mean()),
        "diff_std": float(diff.std(ddof=1)) if n > 1 else 0.0,
        "t": None if t is None else float(t.statistic),
        "p": None if t is None else float(t.pvalue),
        # 95 % confidence interval of the mean paired difference (Student t, n - 1 dof)
        "ci95": None if t is None else [float(v) for v in t.confidence_interval(0.95)],
        "wins": int((diff > 0).sum()),
        "ties": int((diff == 0).sum()),
        "losses": int((diff < 0).sum()),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(cfg: dict, results: dict) -> str:
    parts = [
        f"ViT width {cfg['width']}, depth {cfg['depth']}, {cfg['heads']} heads; mimetic = "
        f'`mimetic_attention(..., method="{cfg["method"]}", rotate_heads={cfg.get("rotate_heads", False)})`; '
        f"batch {cfg['batch_size']}, AdamW "
        f"(wd 0.05), warm-up 10 %, cosine to 0. Sweep: lrs {cfg['lrs']}, {cfg['sweep_seeds']} seed pairs, "
        f"{cfg['sweep_steps']} steps. Main: {cfg['seeds']} seed pairs, {cfg['steps']} steps, each init at its "
        "best sweep lr. Accuracies in %, mean ± std over seeds (ddof=1); diff = mimetic − default per seed pair; "
        "p = paired t-test (scipy.stats.ttest_rel); W/T/L = seed pairs where mimetic wins/ties/loses."
    ]
    for name, r in results.items():
        parts.append(
            f"## {name} (patch {r['patch'][0]}x{r['patch'][1]}, {r['num_train']} train / {r['num_test']} test)"
        )
        if "sweep" in r:
            sw = r["sweep"]
            rows = [
                [f"{lr:g}"]
                + [
                    _report.fmt_pm(100 * np.mean(a), 100 * np.std(a, ddof=1) if len(a) > 1 else 0.0, 2)
                    for a in (sw[f"{lr:g}"][i] for i in INITS)
                ]
                for lr in cfg["lrs"]
                if f"{lr:g}" in sw
            ]
            parts.append(
                f"Sweep, final test accuracy at step {cfg['sweep_steps']}:\n\n"
                + _report.md_table(["lr", "default", "mimetic"], rows)
            )
        if "best_lr" in r:
            parts.append("Chosen learning rates: " + ", ".join(f"{i} {r['best_lr'][i]:g}" for i in INITS) + ".")
        if "main" in r:
            m = r["main"]
            rows = []
            for c, step in enumerate(m["steps"]):
                s = paired_stats(np.asarray(m["default"])[:, c], np.asarray(m["mimetic"])[:, c])
                rows.append(
                    [
                        step,
                        _report.fmt_pm(100 * s["default_mean"], 100 * s["default_std"], 2),
                        _report.fmt_pm(100 * s["mimetic_mean"], 100 * s["mimetic_std"], 2),
                        _report.fmt_pm(100 * s["diff_mean"], 100 * s["diff_std"], 2),
                        "—" if s["p"] is None else f"{s['p']:.3g}",
                        f"{s['wins']}/{s['ties']}/{s['losses']}",
                    ]
                )
            parts.append(
                f"Main run, test accuracy ({m['n_seeds']} seed pairs):\n\n"
                + _report.md_table(["step", "default", "mimetic", "diff", "p", "W/T/L"], rows)
            )
            key_rows = [
                [
                    f"{label} (step {s['step']})",
                    _pct(s["diff_mean"]),
                    _pct(s["diff_std"]),
                    "—" if s["p"] is None else f"{s['p']:.3g}",
                    f"{s['wins']}/{s['n']}",
                ]
                for label, s in (("early", m["early"]), ("final", m["final"]))
            ]
            parts.append(
                "Paired difference mimetic − default (percentage points):\n\n"
                + _report.md_table(["checkpoint", "mean", "std", "p (paired t)", "wins"], key_rows)
            )
            parts.append(f"Training time: {', '.join(f'lr {k}: {v:.0f} s' for k, v in m['seconds'].items())}.")
    return "\n\n".join(parts)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    steps = args.steps or (20 if q else 500)
    cfg = {
        "datasets": args.datasets,
        "steps": steps,
        "seeds": args.seeds or (2 if q else 10),
        "sweep_steps": args.sweep_steps or max(1, steps // 2),
        "sweep_seeds": args.sweep_seeds or (2 if q else 3),
        "lrs": list(args.lrs),
        "checkpoints": args.checkpoints,
        "batch_size": args.batch_size,
        "width": args.width or (32 if q else 64),
        "depth": args.depth or (1 if q else 4),
        "heads": 2 if q and args.heads == 4 else args.heads,
        "method": args.method,
        "rotate_heads": args.rotate_heads,
    }
    if q and args.lrs == [3e-4, 1e-3, 3e-3]:
        cfg["lrs"] = [1e-3, 3e-3]
    # The published (exact) construction writes results/training.*, the fast one training_fast.*.
    name = "training" if args.method == "exact" else f"training_{args.method}"
    run = _report.Run(name, "Training: mimetic vs default attention init, paired seeds", args)
    results: dict = {}
    run.data.update({"config": cfg, "datasets": results})
    run.partial_markdown = lambda: markdown(cfg, results)
    for name in cfg["datasets"]:
        data = load_dataset(name)
        patch = DEFAULT_PATCH[name]
        model = ViT(
            num_classes=data.num_classes,
            width=cfg["width"],
            depth=cfg["depth"],
            num_heads=cfg["heads"],
            patch_size=patch,
        )
        r = results[name] = {
            "patch": list(patch),
            "num_train": int(data.x_train.shape[0]),
            "num_test": int(data.x_test.shape[0]),
        }
        run.stage(f"{name}: sweep")
        sweep_seeds = list(range(SWEEP_SEED0, SWEEP_SEED0 + cfg["sweep_seeds"]))
        r["sweep"], r["sweep_seconds"] = {}, {}
        for lr in cfg["lrs"]:
            out = train_pairs(
                model,
                data,
                sweep_seeds,
                {i: lr for i in INITS},
                cfg["sweep_steps"],
                (cfg["sweep_steps"],),
                cfg["batch_size"],
                cfg["method"],
                cfg["rotate_heads"],
            )
            r["sweep"][f"{lr:g}"] = {i: out[i][:, -1].tolist() for i in INITS}
            r["sweep_seconds"][f"{lr:g}"] = out["seconds"][f"{lr:g}"]
        best = {}
        for init in INITS:
            means = [np.mean(r["sweep"][f"{lr:g}"][init]) for lr in cfg["lrs"]]
            best[init] = float(cfg["lrs"][int(np.argmax(means))])  # first max: lrs in given order
        r["best_lr"] = best
        _report.log(f"{name}: best lr {best}")
        run.stage(f"{name}: main run")
        eval_steps = checkpoint_steps(steps, cfg["checkpoints"])
        out = train_pairs(
            model,
            data,
            list(range(cfg["seeds"])),
            best,
            steps,
            eval_steps,
            cfg["batch_size"],
            cfg["method"],
            cfg["rotate_heads"],
        )
        steps_done = [int(s) for s in out["steps"]]
        main_r = {
            "steps": steps_done,
            "n_seeds": cfg["seeds"],
            "seconds": out["seconds"],
            "default": out["default"].tolist(),
            "mimetic": out["mimetic"].tolist(),
            "per_checkpoint": [
                paired_stats(out["default"][:, c], out["mimetic"][:, c]) for c in range(len(steps_done))
            ],
        }
        main_r["early"] = dict(main_r["per_checkpoint"][0], step=steps_done[0])
        main_r["final"] = dict(main_r["per_checkpoint"][-1], step=steps_done[-1])
        r["main"] = main_r
        _report.log(
            f"{name}: final diff {100 * main_r['final']['diff_mean']:+.2f} pp "
            f"(p={main_r['final']['p']}, wins {main_r['final']['wins']}/{cfg['seeds']}); early "
            f"{100 * main_r['early']['diff_mean']:+.2f} pp (p={main_r['early']['p']})"
        )
        run.finish(markdown(cfg, results))  # partial results after each data set; the last call is final
    print(markdown(cfg, results))


if __name__ == "__main__":
    main()
