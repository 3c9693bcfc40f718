"""Does training grow the attention structure mimetic init puts in at the start? (ViT on digits)

What it measures: :func:`mimetic_jax.analyze` scores of a small ViT (``mimetic_jax.models.ViT``,
patch 2x2) on scikit-learn's digits, at init and after ``--steps`` steps of the shared
training loop (``mimetic_jax.training.train_models``: AdamW, warm-up + cosine, batch 128),
for the default Flax init and for ``mimetic(params, key, preset="vit")``, paired by seed
(``paired_inits``: same init draw apart from the mimetic kernels, same data order).

Scores (per model, averaged over layers and heads): ``qk_diag_ratio`` (mean diagonal of
``W_q^h W_k^hᵀ`` over the std of its off-diagonal; i.i.d. init ≈ 0 ± 1/√d, mimetic ≈ √d),
``vo_diag_ratio`` (same for ``Σ_h W_v^h W_o^h``; mimetic < 0) and the test accuracy.
Reported: mean ± std over seeds (ddof=1). A small model and few steps: whether the
structure *grows* from default init here says little about long ImageNet runs.

Run: ``python benchmarks/analysis_trained.py [--quick] [--steps N] [--seeds N]``
(the default run takes a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import _report
import jax.numpy as jnp
import numpy as np

import mimetic_jax as mj
from mimetic_jax.models import ViT
from mimetic_jax.tasks import load_dataset
from mimetic_jax.training import paired_inits, stack_trees, train_models, unstack_tree

INITS = ("default", "mimetic")


def _extra(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="training steps (default 300; quick 20)")
    p.add_argument("--seeds", type=int, default=None, help="seed pairs (default 3; quick 2)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)


def scores(params) -> dict[str, float]:
    a = mj.analyze(params)
    return {"qk_diag_ratio": float(np.mean([r for s in a.attention for r in s.qk_diag_ratio])),
            "vo_diag_ratio": float(np.mean([s.vo_diag_ratio for s in a.attention])),
            "vo_diag_mean": float(np.mean([s.vo_diag_mean for s in a.attention]))}


def _pm(values) -> str:
    v = np.asarray(values, float)
    return _report.fmt_pm(v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, 2)


def markdown(cfg: dict, res: dict) -> str:
    rows = []
    for init in INITS:
        for when in ("init", "trained"):
            r = res[init][when]
            rows.append([init, "0" if when == "init" else str(cfg["steps"]), _pm(r["qk_diag_ratio"]),
                         _pm(r["vo_diag_ratio"]), _pm(r["vo_diag_mean"]),
                         "—" if when == "init" else _pm(100 * np.asarray(res[init]["accuracy"]))])
    return (f"ViT width {cfg['width']}, depth {cfg['depth']}, {cfg['heads']} heads on digits, lr {cfg['lr']:g}, "
            f"{cfg['seeds']} seed pairs (mean ± std over seeds):\n\n"
            + _report.md_table(["init", "step", "qk diag ratio", "vo diag ratio", "vo diag mean", "test acc %"],
                               rows))


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {"steps": args.steps or (20 if q else 300), "seeds": args.seeds or (2 if q else 3), "width": args.width,
           "depth": args.depth, "heads": args.heads, "lr": args.lr}
    name = "analysis_trained" if cfg["steps"] == 300 or q else f"analysis_trained_{cfg['steps']}steps"
    run = _report.Run(name, "Structure of trained ViTs: does training grow the mimetic structure?",
                      args)
    data = load_dataset("digits")
    model = ViT(num_classes=data.num_classes, width=cfg["width"], depth=cfg["depth"], num_heads=cfg["heads"],
                patch_size=(2, 2))
    run.stage("init")
    default, mimetic, keys = paired_inits(model, data.x_train, list(range(cfg["seeds"])),
                                          transform=lambda v, k: mj.mimetic(v, k, preset="vit"))
    params = {"default": default, "mimetic": mimetic}
    run.stage("train")
    stack = stack_trees(default + mimetic)
    history = train_models(model.apply, stack, jnp.stack(keys * 2),
                           data, steps=cfg["steps"], learning_rate=cfg["lr"], eval_steps=(cfg["steps"],))
    n = cfg["seeds"]
    res: dict = {}
    for j, init in enumerate(INITS):
        at_init = [scores(p) for p in params[init]]
        trained = [scores(unstack_tree(history.params, j * n + i)) for i in range(n)]
        res[init] = {w: {k: [s[k] for s in ss] for k in at_init[0]} for w, ss in (("init", at_init),
                                                                                  ("trained", trained))}
        res[init]["accuracy"] = history.test_accuracy[j * n:(j + 1) * n, -1].tolist()
    res["train_seconds"] = history.seconds
    run.data.update({"config": cfg, "results": res})
    run.finish(markdown(cfg, res))


if __name__ == "__main__":
    main()
