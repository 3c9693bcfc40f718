"""Does training grow the structure mimetic init puts in at the start? (ViT, ConvMixer on digits)

ViT (``--models vit``, results ``analysis_trained``): :func:`mimetic_jax.analyze` scores of a
small ViT (``mimetic_jax.experiments.models.ViT``, patch 2x2) on scikit-learn's digits, at init and after
``--steps`` steps of the shared training loop (``mimetic_jax.experiments.training.train_models``: AdamW, warm-up + cosine, batch 128),
for the default Flax init and for ``mimetic(params, key, preset="vit")``, paired by seed
(``paired_inits``: same init draw apart from the mimetic kernels, same data order).

Scores (per model, averaged over layers and heads): ``qk_diag_ratio`` (mean diagonal of
``W_q^h W_k^hᵀ`` over the std of its off-diagonal; i.i.d. init ≈ 0 ± 1/√d, mimetic ≈ √d),
``vo_diag_ratio`` (same for ``Σ_h W_v^h W_o^h``; mimetic < 0) and the test accuracy.
Reported: mean ± std over seeds (ddof=1). A small model and few steps: whether the
structure *grows* from default init here says little about long ImageNet runs.

ConvMixer (``--models convmixer``, results ``analysis_trained_convmixer``): the same for a
``ConvMixer`` (BatchNorm, patch 1; width ``--conv-width``, ``--conv-depth`` blocks, kernel
``--kernel``; batch ``--conv-batch``) with the default Flax init and with ``mimetic_conv``
(covariance-structured depthwise filters, the package's σ defaults; the ``"convmixer"``
preset's conv rule), paired by seed the same way, trained with ``--conv-lr``. Scores (per layer, then averaged):
``neighbour_corr`` / ``far_corr`` of the depthwise filters (mean correlation over channels of
4-neighbouring taps / of taps at distance ≥ 2). An i.i.d. init gives both ≈ 0, each tap pair
±1/√C. Trockman, Willmott & Kolter (ICLR 2023) report that trained ConvMixer filters have a
covariance structure; this asks whether it appears in a short run on 8x8 digits.

Run: ``python benchmarks/analysis_trained.py [--quick] [--models vit,convmixer] [--steps N] [--seeds N]``
(the default run takes a few minutes per model on 2 CPU cores).
"""

from __future__ import annotations

import _report
import jax.numpy as jnp
import numpy as np

import mimetic_jax as mj
from mimetic_jax.experiments.models import ConvMixer, ViT
from mimetic_jax.experiments.tasks import load_dataset
from mimetic_jax.experiments.training import paired_inits, stack_trees, train_models, unstack_tree

INITS = ("default", "mimetic")


def _extra(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="training steps (default 300; quick 20)")
    p.add_argument("--seeds", type=int, default=None, help="seed pairs (default 3; quick 2)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--models", default="vit,convmixer", help="comma-separated: vit, convmixer")
    p.add_argument("--conv-width", type=int, default=32)
    p.add_argument("--conv-batch", type=int, default=32)
    p.add_argument("--conv-depth", type=int, default=3)
    p.add_argument("--kernel", type=int, default=5)
    p.add_argument("--conv-lr", type=float, default=3e-3)


def scores(params) -> dict[str, float]:
    a = mj.analyze(params)
    return {
        "qk_diag_ratio": float(np.mean([r for s in a.attention for r in s.qk_diag_ratio])),
        "vo_diag_ratio": float(np.mean([s.vo_diag_ratio for s in a.attention])),
        "vo_diag_mean": float(np.mean([s.vo_diag_mean for s in a.attention])),
    }


def _pm(values) -> str:
    v = np.asarray(values, float)
    return _report.fmt_pm(v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, 2)


def markdown(cfg: dict, res: dict) -> str:
    rows = []
    for init in INITS:
        for when in ("init", "trained"):
            r = res[init][when]
            rows.append(
                [
                    init,
                    "0" if when == "init" else str(cfg["steps"]),
                    _pm(r["qk_diag_ratio"]),
                    _pm(r["vo_diag_ratio"]),
                    _pm(r["vo_diag_mean"]),
                    "—" if when == "init" else _pm(100 * np.asarray(res[init]["accuracy"])),
                ]
            )
    return (
        f"ViT width {cfg['width']}, depth {cfg['depth']}, {cfg['heads']} heads on digits, lr {cfg['lr']:g}, "
        f"{cfg['seeds']} seed pairs (mean ± std over seeds):\n\n"
        + _report.md_table(["init", "step", "qk diag ratio", "vo diag ratio", "vo diag mean", "test acc %"], rows)
    )


def vit(args) -> None:
    q = args.quick
    cfg = {
        "steps": args.steps or (20 if q else 300),
        "seeds": args.seeds or (2 if q else 3),
        "width": args.width,
        "depth": args.depth,
        "heads": args.heads,
        "lr": args.lr,
    }
    name = "analysis_trained" if cfg["steps"] == 300 or q else f"analysis_trained_{cfg['steps']}steps"
    run = _report.Run(name, "Structure of trained ViTs: does training grow the mimetic structure?", args)
    data = load_dataset("digits")
    model = ViT(
        num_classes=data.num_classes, width=cfg["width"], depth=cfg["depth"], num_heads=cfg["heads"], patch_size=(2, 2)
    )
    run.stage("init")
    default, mimetic, keys = paired_inits(
        model, data.x_train, list(range(cfg["seeds"])), transform=lambda v, k: mj.mimetic(v, k, preset="vit")
    )
    params = {"default": default, "mimetic": mimetic}
    run.stage("train")
    stack = stack_trees(default + mimetic)
    history = train_models(
        model.apply,
        stack,
        jnp.stack(keys * 2),
        data,
        steps=cfg["steps"],
        learning_rate=cfg["lr"],
        eval_steps=(cfg["steps"],),
    )
    res = _paired_scores(params, history, cfg["seeds"], scores)
    run.data.update({"config": cfg, "results": res})
    run.finish(markdown(cfg, res))


def _paired_scores(params: dict, history, n: int, score) -> dict:
    """Per init: ``score`` of each seed's model at init and after training, and the final test accuracy."""
    res: dict = {}
    for j, init in enumerate(INITS):
        at_init = [score(p) for p in params[init]]
        trained = [score(unstack_tree(history.params, j * n + i)) for i in range(n)]
        res[init] = {
            w: {k: [s[k] for s in ss] for k in at_init[0]} for w, ss in (("init", at_init), ("trained", trained))
        }
        res[init]["accuracy"] = history.test_accuracy[j * n : (j + 1) * n, -1].tolist()
    res["train_seconds"] = history.seconds
    return res


def conv_scores(variables) -> dict[str, float]:
    conv = mj.analyze(variables, include="depthwise").conv
    out = {
        "neighbour_corr": float(np.mean([c.neighbour_corr for c in conv])),
        "far_corr": float(np.mean([c.far_corr for c in conv])),
    }
    out |= {f"neighbour_corr_{i}": c.neighbour_corr for i, c in enumerate(conv)}
    return out


def conv_markdown(cfg: dict, res: dict) -> str:
    layers = range(cfg["depth"])
    rows = []
    for init in INITS:
        for when in ("init", "trained"):
            r = res[init][when]
            grown = [
                _pm(np.asarray(r[k]) - np.asarray(res[init]["init"][k])) if when == "trained" else "—"
                for k in ("neighbour_corr", "far_corr")
            ]
            rows.append(
                [init, "0" if when == "init" else str(cfg["steps"]), _pm(r["neighbour_corr"]), _pm(r["far_corr"])]
                + grown
                + [_pm(r[f"neighbour_corr_{i}"]) for i in layers]
                + ["—" if when == "init" else _pm(100 * np.asarray(res[init]["accuracy"]))]
            )
    return (
        f"ConvMixer width {cfg['width']}, depth {cfg['depth']}, kernel {cfg['kernel']}, patch 1 (BatchNorm) on "
        f"digits, {cfg['steps']} steps, lr {cfg['lr']:g}, batch {cfg['batch_size']}; "
        f"mimetic = `mimetic_conv` (package σ defaults). {cfg['seeds']} seed pairs, mean ± std over seeds "
        f"(ddof=1). Correlations over the {cfg['width']} channels: an i.i.d. init gives ≈ 0, one tap pair ±1/√C = "
        f"±{1 / np.sqrt(cfg['width']):.2f}.\n\n"
        + "Δ: trained − init, per seed (paired).\n\n"
        + _report.md_table(
            ["init", "step", "neighbour corr (mean)", "far corr (mean)", "Δ neighbour", "Δ far"]
            + [f"neighbour corr, block {i}" for i in layers]
            + ["test acc %"],
            rows,
        )
    )


def convmixer(args) -> None:
    q = args.quick
    cfg = {
        "steps": args.steps or (20 if q else 300),
        "seeds": args.seeds or (2 if q else 3),
        "width": 16 if q else args.conv_width,
        "depth": args.conv_depth,
        "kernel": args.kernel,
        "lr": args.conv_lr,
        "batch_size": args.conv_batch,
    }
    name = (
        "analysis_trained_convmixer" if cfg["steps"] == 300 or q else f"analysis_trained_convmixer_{cfg['steps']}steps"
    )
    run = _report.Run(name, "Structure of trained ConvMixers: does training grow covariance-structured filters?", args)
    data = load_dataset("digits")
    model = ConvMixer(data.num_classes, width=cfg["width"], depth=cfg["depth"], kernel_size=cfg["kernel"])
    run.stage("init")
    default, mimetic, keys = paired_inits(model, data.x_train, list(range(cfg["seeds"])), transform=mj.mimetic_conv)
    run.stage("train")
    history = train_models(
        model.apply,
        stack_trees(default + mimetic),
        jnp.stack(keys * 2),
        data,
        steps=cfg["steps"],
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        eval_steps=(cfg["steps"],),
        mutable=("batch_stats",),
    )
    res = _paired_scores({"default": default, "mimetic": mimetic}, history, cfg["seeds"], conv_scores)
    run.data.update({"config": cfg, "results": res})
    run.finish(conv_markdown(cfg, res))
    print(conv_markdown(cfg, res))


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    runs = {"vit": vit, "convmixer": convmixer}
    unknown = sorted(set(models) - set(runs))
    if unknown or not models:
        raise SystemExit(f"--models: expected a comma-separated subset of {sorted(runs)}, got {args.models!r}")
    for m in models:
        runs[m](args)


if __name__ == "__main__":
    main()
