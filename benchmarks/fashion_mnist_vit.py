"""Fashion-MNIST ViT: default init vs mimetic attention init, ``exact`` and ``fast``, paired seeds.

What it measures: test accuracy of a small ViT (``mimetic_jax.experiments.models.ViT``, width
64, depth 4, 4 heads, patch 4x4 -> 49 tokens of the 28x28 images) trained from three inits:
its default Flax init, ``mimetic_attention(params, key, method="exact")`` (the published
construction of Trockman & Kolter 2023) and ``mimetic_attention(params, key, method="fast")``
(the package's cheaper sampler). Real data: Fashion-MNIST (Xiao et al. 2017) read by
``mimetic_jax.experiments.tasks.load_fashion_mnist`` (``apt-get install dataset-fashion-mnist``,
or ``--data-dir``), a class-stratified training subset and test subset (the CPU budget).

Pairing (``mimetic_jax.experiments.training.paired_inits``, as ``mimetic-jax compare``): for
seed ``s`` the three models start from the same ``model.init`` draw (the mimetic ones have
only their attention kernels replaced, both from the same key) and draw the same minibatches
in the same order; the mimetic transforms run under ``jax.jit``. All ``3 × seeds`` models train in one vmapped ``train_models`` program.
Training: AdamW (weight decay 0.05 on kernels), linear warm-up over 10 % of the steps, cosine
decay to zero, softmax cross-entropy, no augmentation.

Learning rate: a fixed, stated choice, 3e-3 for every init (no sweep: budget). It is the rate
``benchmarks/training.py``'s sweep (3e-4, 1e-3, 3e-3) picked for both inits of this same ViT
(width 64, depth 4, 4 heads) on digits and on MNIST-1D (``results/training.json``). One rate
for all three arms keeps the comparison paired; it may favour one init.

Reported, per checkpoint: each init's test accuracy mean ± std over seeds (ddof=1); the
paired differences exact − default, fast − default and exact − fast per seed pair: mean,
std, 95 % confidence interval (Student's t), paired t-test p (``scipy.stats.ttest_rel``),
wins/ties/losses (``_report.paired_difference``). Figure: ``results/fashion_mnist_vit.png``.

Budget of the full run (the defaults): 10 seed pairs (seeds 0-9), 3 inits = 30 models, 250
steps of batch 32 (8,000 examples per model, 0.8 epochs of the subset) on a 10,000-image
class-stratified training subset, a 2,000-image stratified test subset, 3 checkpoints. Sized
from a probe on this box: one training example-step of this ViT costs about 2.3 ms of CPU
time, so training is about 550 CPU-seconds, evaluation about 150, inits and compilation about
75 (about 7 minutes on an idle 2-core box; the full run measured 823 s of CPU time). A first run at 400 steps was stopped: the shared box
gave it a fifth of a core and it would not have finished in the session. Measured on
the shared 2-core CPU box of this project, busy with other jobs (see the JSON's load
averages): wall time and process CPU time are in ``results/fashion_mnist_vit.{json,md}``
(``script_wall_s``, ``cpu_seconds``). CPU time / 2 estimates the wall time on an idle 2-core box.

Run: ``python benchmarks/fashion_mnist_vit.py [--quick] [--seeds N] [--steps N] [--data-dir DIR]``
(``--quick``: 2 seeds, 20 steps, depth 1, small subsets, under a minute; writes
``fashion_mnist_vit.quick.*``).
"""

from __future__ import annotations

import time

import _report
import jax
import numpy as np

from mimetic_jax.attention import mimetic_attention
from mimetic_jax.experiments.models import ViT
from mimetic_jax.experiments.tasks import DatasetNotFoundError, load_fashion_mnist
from mimetic_jax.experiments.training import checkpoint_steps, paired_inits, stack_trees, train_models

INITS = ("default", "exact", "fast")
PAIRS = (("exact", "default"), ("fast", "default"), ("exact", "fast"))


def _extra(p) -> None:
    p.add_argument("--seeds", type=int, default=None, help="seed pairs (default 10; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 250; quick 20)")
    p.add_argument("--batch-size", type=int, default=None, help="batch (default 32)")
    p.add_argument("--num-train", type=int, default=None, help="training subset (default 10000; quick 1000)")
    p.add_argument("--num-test", type=int, default=None, help="test subset (default 2000; quick 500)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate, all inits (default 3e-3)")
    p.add_argument("--checkpoints", type=int, default=None, help="evaluations, evenly spaced (default 3; quick 2)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=None, help="blocks (default 4; quick 1)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=4, help="square patch size (default 4: 49 tokens)")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (see load_fashion_mnist)")


def _pct_pm(a: np.ndarray) -> str:
    return _report.fmt_pm(100 * a.mean(), 100 * a.std(ddof=1) if a.size > 1 else 0.0, 2)


def markdown(cfg: dict, res: dict) -> str:
    parts = [
        f"Fashion-MNIST, {cfg['num_train']} training / {cfg['num_test']} test images (class-stratified subsets of "
        f"60,000 / 10,000). ViT width {cfg['width']}, depth {cfg['depth']}, {cfg['heads']} heads, patch "
        f"{cfg['patch']}x{cfg['patch']} ({(28 // cfg['patch']) ** 2} tokens). Inits: default Flax init; "
        '`mimetic_attention(..., method="exact")`; `mimetic_attention(..., method="fast")`. Budget: '
        f"{cfg['seeds']} seed pairs × 3 inits, {cfg['steps']} steps, batch {cfg['batch_size']}, AdamW lr "
        f"{cfg['lr']:g} (fixed for all inits; wd 0.05), warm-up 10 %, cosine to 0. Accuracies in %, mean ± std "
        "over seeds (ddof=1). Differences in percentage points per seed pair: mean ± std, 95 % CI (t), "
        "p = paired t-test (scipy.stats.ttest_rel), W/T/L = pairs the first arm wins/ties/loses."
    ]
    if "acc" not in res:
        return "\n\n".join(parts)
    parts.append(
        "Measured on this project's shared 2-core CPU box while other jobs ran (load averages above), so the wall "
        f"time overstates the cost: whole-script CPU time {res['cpu_seconds']:.0f} s; CPU time / 2 "
        f"(about {_report.fmt_s(res['cpu_seconds'] / 2)}) estimates the wall time on an idle 2-core box."
    )
    steps = res["steps"]
    acc = {k: np.asarray(v) for k, v in res["acc"].items()}
    rows = [[s] + [_pct_pm(acc[i][:, c]) for i in INITS] for c, s in enumerate(steps)]
    parts.append("### Test accuracy\n\n" + _report.md_table(["step", *INITS], rows))
    for c_label, c in (("final", len(steps) - 1), ("first checkpoint", 0)):
        rows = [[f"{a} − {b}"] + _report.paired_cells(res["paired"][f"{a}-{b}"][c]) for a, b in PAIRS]
        parts.append(
            f"### Paired differences at step {steps[c]} ({c_label})\n\n"
            + _report.md_table(["difference", *_report.PAIRED_HEADERS], rows)
        )
    ef = res["paired"]["exact-fast"][-1]
    per_seed = ", ".join(f"{100 * d:+.2f}" for d in ef["per_seed"])
    parts.append(f"exact − fast per seed at step {steps[-1]} (pp): {per_seed}.")
    parts.append(
        f"Training time: {res['train_seconds']:.0f} s wall for all {3 * cfg['seeds']} models (compilation "
        f"included); init: {res['init_seconds']:.1f} s; whole script CPU time {res['cpu_seconds']:.0f} s."
    )
    return "\n\n".join(parts)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "seeds": args.seeds or (2 if q else 10),
        "steps": args.steps or (20 if q else 250),
        "batch_size": args.batch_size or 32,
        "num_train": args.num_train or (1000 if q else 10000),
        "num_test": args.num_test or (500 if q else 2000),
        "lr": args.lr,
        "lr_choice": "fixed: the rate benchmarks/training.py's sweep picked for both inits of this ViT on digits "
        "and MNIST-1D",
        "checkpoints": args.checkpoints or (2 if q else 3),
        "width": args.width,
        "depth": args.depth or (1 if q else 4),
        "heads": args.heads,
        "patch": args.patch,
        "data": "Fashion-MNIST (load_fashion_mnist), class-stratified subsets drawn with seed 0",
    }
    try:
        data = load_fashion_mnist(data_dir=args.data_dir, num_train=cfg["num_train"], num_test=cfg["num_test"])
    except DatasetNotFoundError as err:
        raise SystemExit(f"fashion_mnist_vit.py: {err}") from None
    cpu0 = time.process_time()
    run = _report.Run("fashion_mnist_vit", "Fashion-MNIST ViT: default vs mimetic attention, exact and fast", args)
    res: dict = {}
    run.data.update({"config": cfg, "results": res})
    run.partial_markdown = lambda: markdown(cfg, res)
    model = ViT(
        num_classes=data.num_classes,
        width=cfg["width"],
        depth=cfg["depth"],
        num_heads=cfg["heads"],
        patch_size=(cfg["patch"], cfg["patch"]),
    )
    seeds = list(range(cfg["seeds"]))
    run.stage("inits")
    t0 = time.perf_counter()
    # One jitted transform per method (compiled once, run per seed: cheaper here than eager).
    exact_fn = jax.jit(lambda v, k: mimetic_attention(v, k, method="exact"))
    fast_fn = jax.jit(lambda v, k: mimetic_attention(v, k, method="fast"))
    default, exact, keys = paired_inits(model, data.x_train, seeds, transform=exact_fn)
    _, fast, keys_fast = paired_inits(model, data.x_train, seeds, transform=fast_fn)
    assert all(bool((jax.random.key_data(a) == jax.random.key_data(b)).all()) for a, b in zip(keys, keys_fast))
    res["init_seconds"] = time.perf_counter() - t0
    run.stage(f"train {3 * len(seeds)} models, {cfg['steps']} steps")
    history = train_models(
        model.apply,
        stack_trees(default + exact + fast),
        jax.numpy.stack(keys * 3),  # the three inits of a seed see the same data order
        data,
        steps=cfg["steps"],
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        eval_steps=checkpoint_steps(cfg["steps"], cfg["checkpoints"]),
        eval_batch_size=250,
        progress=lambda s: _report.log(f"  step {s}"),
    )
    n = len(seeds)
    acc = {name: history.test_accuracy[i * n : (i + 1) * n] for i, name in enumerate(INITS)}
    steps = [int(s) for s in history.steps]
    res.update(
        steps=steps,
        acc={k: v.tolist() for k, v in acc.items()},
        train_loss={name: history.train_loss[i * n : (i + 1) * n].tolist() for i, name in enumerate(INITS)},
        paired={
            f"{a}-{b}": [_report.paired_difference(acc[a][:, c], acc[b][:, c]) for c in range(len(steps))]
            for a, b in PAIRS
        },
        train_seconds=history.seconds,
    )
    res["cpu_seconds"] = time.process_time() - cpu0
    for a, b in PAIRS:
        s = res["paired"][f"{a}-{b}"][-1]
        _report.log(f"{a} − {b}: {100 * s['mean']:+.2f} pp [{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]")
    run.data["plot"] = _report.figure_path(run).name  # the docs page embeds it
    _report.plot_paired(
        _report.figure_path(run),
        steps,
        acc,
        PAIRS,
        f"ViT d={cfg['width']} L={cfg['depth']} H={cfg['heads']} on Fashion-MNIST ({cfg['num_train']} train), "
        f"{n} seed pairs, {cfg['steps']} steps",
    )
    run.finish(markdown(cfg, res))
    print(markdown(cfg, res))


if __name__ == "__main__":
    main()
