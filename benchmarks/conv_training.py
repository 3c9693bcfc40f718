"""Conv and MLP schemes in training: covariance-structured depthwise filters and the mean shift.

What it measures (scikit-learn's digits, 8x8 images; a small honest budget: the box has
2 CPU cores shared with other jobs):

1. Sweep (seeds 1000, 1001): ConvMixer (BatchNorm) with default init, covariance init
   (``mimetic_conv``) for several ``(σ_start, σ_end)``, and the MLP mean shift
   (``mimetic_mlp``, on the pointwise convs) for several means; ViT (LayerNorm) with
   default init and the same means on ``mlp_in``. Each choice's final test accuracy;
   the best ``(σ_start, σ_end)`` and the best mean (ConvMixer and ViT pooled, with the
   default/zero as the reference) become the main run's settings and the package defaults.
2. Main run (seeds 0, 1, 2, disjoint from the sweep's): ConvMixer default, covariance,
   covariance + frozen filters, default + frozen filters, default + mean shift,
   covariance + mean shift; ViT default, mean shift, mimetic attention, mimetic attention
   + mean shift. Test accuracy at checkpoints, mean ± std over seeds (ddof=1), and the
   paired difference to the default init.

Pairing: for seed ``s`` every variant starts from the same ``model.init`` draw (only the
layers its scheme touches re-drawn or shifted) and sees the same minibatches in the same
order. Training: ``mimetic_jax.experiments.training.train_models`` (AdamW, wd 0.05 on kernels,
warm-up 10 %, cosine to 0; BatchNorm statistics updated in training, running averages at
test time); frozen filters get a zero final update (``freeze_mask``). One learning rate
for all (no per-init sweep: budget).

Run: ``python benchmarks/conv_training.py [--quick] [--steps N]`` (~15 min on the shared
2-core box; ``--quick`` ~2 min, writes ``conv_training.quick.*``).
"""

from __future__ import annotations

import _report
import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import freeze_mask, mimetic_attention, mimetic_conv, mimetic_mlp
from mimetic_jax.experiments.models import ConvMixer, ViT
from mimetic_jax.experiments.tasks import load_dataset
from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models

SWEEP_SEED0 = 1000
SIGMAS = [(0.5, 0.5), (0.5, 2.0), (1.0, 1.0), (1.0, 3.0), (2.0, 2.0), (0.5, 4.0)]
MEANS = [-0.05, 0.02, 0.05, 0.1]


def _extra(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 150; quick 20)")
    p.add_argument("--seeds", type=int, default=3, help="main-run seeds")
    p.add_argument("--sweep-seeds", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=None, help="ConvMixer width (default 16)")
    p.add_argument("--depth", type=int, default=3, help="ConvMixer blocks")
    p.add_argument("--kernel", type=int, default=5, help="ConvMixer depthwise kernel size")


def _inits(model, x, seed):
    init_key, scheme_key, data_key = jax.random.split(jax.random.key(seed), 3)
    return jax.jit(model.init)(init_key, jnp.asarray(x[:1])), scheme_key, data_key


def _variant(name: str, v, key, sigma, mean):
    if name.startswith("cov"):
        v = mimetic_conv(v, key, sigma_start=sigma[0], sigma_end=sigma[1])
    if name.startswith("attn"):
        v = mimetic_attention(v, key)
    if name.endswith("+mean"):
        v = mimetic_mlp(v, mean=mean)
    return v


def train_variants(
    model, data, seeds, variants: dict[str, tuple], cfg, eval_steps, *, frozen: bool = False, mutable=()
) -> dict:
    """``variants``: name -> (scheme, σ pair, mean). Returns name -> accuracy (seeds, C), plus steps/seconds."""
    trees, keys = [], []
    for seed in seeds:
        base, scheme_key, data_key = _inits(model, data.x_train, seed)
        for scheme, sigma, mean in variants.values():
            trees.append(_variant(scheme, base, scheme_key, sigma, mean))
            keys.append(data_key)
    mask = freeze_mask(trees[0]) if frozen else None
    h = train_models(
        model.apply,
        stack_trees(trees),
        jnp.stack(keys),
        data,
        steps=cfg["steps"],
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        eval_steps=eval_steps,
        mutable=mutable,
        frozen=mask,
    )
    acc = h.test_accuracy.reshape(len(seeds), len(variants), -1)
    out = {name: acc[:, i] for i, name in enumerate(variants)}
    _report.log(
        f"  {len(trees)} models, {cfg['steps']} steps: {h.seconds:.0f} s; final "
        + ", ".join(f"{n} {100 * a[:, -1].mean():.2f}" for n, a in out.items())
    )
    return {"acc": out, "steps": h.steps.tolist(), "seconds": h.seconds}


def _pm(a: np.ndarray) -> str:
    return _report.fmt_pm(100 * a.mean(), 100 * a.std(ddof=1) if a.size > 1 else 0.0, 2)


def markdown(cfg: dict, res: dict) -> str:
    parts = [
        f"digits; ConvMixer width {cfg['width']}, depth {cfg['depth']}, kernel {cfg['kernel']}, patch 1 "
        f"(BatchNorm); ViT width 32, depth 2, 2 heads, patch 2 (LayerNorm). {cfg['steps']} steps, batch "
        f"{cfg['batch_size']}, lr {cfg['lr']:g}, AdamW wd 0.05, warm-up 10 %, cosine. Accuracies in %, "
        "mean ± std over seeds (ddof=1); diff = variant − default per seed (paired)."
    ]
    if "sweep" in res:
        sw = res["sweep"]
        rows = [[k, _pm(np.asarray(v))] for k, v in sw["convmixer"].items()]
        parts.append(
            f"### Sweep ({cfg['sweep_seeds']} seeds, final accuracy): ConvMixer\n\n"
            + _report.md_table(["variant", "accuracy"], rows)
        )
        rows = [[k, _pm(np.asarray(v))] for k, v in sw["vit"].items()]
        parts.append("### Sweep: ViT\n\n" + _report.md_table(["variant", "accuracy"], rows))
        parts.append(
            f"Chosen: σ_start, σ_end = {res['chosen']['sigma']}, mean = {res['chosen']['mean']:g} "
            f"({res['chosen']['why']})."
        )
    for model in ("convmixer", "vit"):
        if model not in res:
            continue
        r = res[model]
        steps = r["steps"]
        default = np.asarray(r["acc"]["default"])
        rows = []
        for name, a in r["acc"].items():
            a = np.asarray(a)
            rows.append(
                [name]
                + [_pm(a[:, c]) for c in range(len(steps))]
                + [_pm(a[:, -1] - default[:, -1]) if name != "default" else "—"]
            )
        parts.append(
            f"### Main run: {model} ({cfg['seeds']} seeds)\n\n"
            + _report.md_table(["variant"] + [f"step {s}" for s in steps] + ["final diff"], rows)
        )
    return "\n\n".join(parts)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "steps": args.steps or (20 if q else 150),
        "seeds": 2 if q else args.seeds,
        "sweep_seeds": args.sweep_seeds,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "width": args.width or 16,
        "depth": args.depth,
        "kernel": args.kernel,
    }
    run = _report.Run("conv_training", "Training: covariance depthwise filters and the MLP mean shift", args)
    res: dict = {}
    run.data.update({"config": cfg, "results": res})
    run.partial_markdown = lambda: markdown(cfg, res)
    data = load_dataset("digits")
    mixer = ConvMixer(data.num_classes, width=cfg["width"], depth=cfg["depth"], kernel_size=cfg["kernel"])
    vit = ViT(data.num_classes, width=32, depth=2, num_heads=2, patch_size=(2, 2))
    bn = ("batch_stats",)
    sigmas = SIGMAS[:2] if q else SIGMAS
    means = MEANS[1:3] if q else MEANS
    sweep_seeds = list(range(SWEEP_SEED0, SWEEP_SEED0 + cfg["sweep_seeds"]))
    final = (cfg["steps"],)

    run.stage("sweep: ConvMixer")
    variants = {"default": ("default", None, 0.0)}
    variants |= {f"cov σ {s0:g}→{s1:g}": ("cov", (s0, s1), 0.0) for s0, s1 in sigmas}
    variants |= {f"mean {m:g}": ("default+mean", None, m) for m in means}
    cm = train_variants(mixer, data, sweep_seeds, variants, cfg, final, mutable=bn)
    run.stage("sweep: ViT")
    vv = {"default": ("default", None, 0.0)} | {f"mean {m:g}": ("default+mean", None, m) for m in means}
    vt = train_variants(vit, data, sweep_seeds, vv, cfg, final)
    res["sweep"] = {
        "convmixer": {k: a[:, -1].tolist() for k, a in cm["acc"].items()},
        "vit": {k: a[:, -1].tolist() for k, a in vt["acc"].items()},
        "seconds": cm["seconds"] + vt["seconds"],
    }
    sig_scores = {s: cm["acc"][f"cov σ {s[0]:g}→{s[1]:g}"][:, -1].mean() for s in sigmas}
    best_sigma = max(sigmas, key=lambda s: sig_scores[s])
    mean_scores = {
        m: (
            cm["acc"][f"mean {m:g}"][:, -1].mean()
            - cm["acc"]["default"][:, -1].mean()
            + vt["acc"][f"mean {m:g}"][:, -1].mean()
            - vt["acc"]["default"][:, -1].mean()
        )
        / 2
        for m in means
    }
    best_mean = max(means, key=lambda m: mean_scores[m])
    res["chosen"] = {
        "sigma": list(best_sigma),
        "mean": best_mean,
        "why": "highest mean final sweep accuracy; mean: highest gain over default, ConvMixer and ViT averaged",
        "sigma_scores": {f"{s[0]:g},{s[1]:g}": float(v) for s, v in sig_scores.items()},
        "mean_gains": {f"{m:g}": float(v) for m, v in mean_scores.items()},
    }
    _report.log(f"chosen {res['chosen']}")
    run.finish(markdown(cfg, res))

    seeds = list(range(cfg["seeds"]))
    eval_steps = checkpoint_steps(cfg["steps"], 3)
    run.stage("main: ConvMixer")
    mv = {
        "default": ("default", None, 0.0),
        "covariance": ("cov", best_sigma, 0.0),
        "default + mean": ("default+mean", None, best_mean),
        "covariance + mean": ("cov+mean", best_sigma, best_mean),
    }
    main = train_variants(mixer, data, seeds, mv, cfg, eval_steps, mutable=bn)
    fz = {"default, frozen filters": ("default", None, 0.0), "covariance, frozen filters": ("cov", best_sigma, 0.0)}
    frozen = train_variants(mixer, data, seeds, fz, cfg, eval_steps, mutable=bn, frozen=True)
    res["convmixer"] = {
        "steps": main["steps"],
        "acc": {k: a.tolist() for k, a in (main["acc"] | frozen["acc"]).items()},
        "seconds": main["seconds"] + frozen["seconds"],
    }
    run.finish(markdown(cfg, res))
    run.stage("main: ViT")
    vm = {
        "default": ("default", None, 0.0),
        "mean": ("default+mean", None, best_mean),
        "mimetic attention": ("attn", None, 0.0),
        "mimetic attention + mean": ("attn+mean", None, best_mean),
    }
    vr = train_variants(vit, data, seeds, vm, cfg, eval_steps)
    res["vit"] = {"steps": vr["steps"], "acc": {k: a.tolist() for k, a in vr["acc"].items()}, "seconds": vr["seconds"]}
    run.finish(markdown(cfg, res))
    print(markdown(cfg, res))


if __name__ == "__main__":
    main()
