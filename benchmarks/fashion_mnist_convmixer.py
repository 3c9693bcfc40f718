"""Fashion-MNIST ConvMixer: default filters vs covariance-structured filters, trained and frozen, paired seeds.

What it measures: test accuracy of a small ConvMixer (``mimetic_jax.experiments.models.ConvMixer``,
BatchNorm, width 32, depth 4, depthwise kernel 5x5, patch 4 -> a 7x7 grid of the 28x28 images)
with its default Flax init of the depthwise kernels (``lecun_normal``) and with
``mimetic_conv(variables, key)`` (covariance-structured depthwise filters, the package's
default σ schedule 0.5 -> 2 over depth; our reconstruction of Trockman, Willmott & Kolter,
ICLR 2023), each with the depthwise filters trained and frozen at init (``freeze_mask``: no
step, no weight decay). Real data: Fashion-MNIST (Xiao et al. 2017) read by
``mimetic_jax.experiments.tasks.load_fashion_mnist`` (``apt-get install dataset-fashion-mnist``,
or ``--data-dir``), the same class-stratified subsets as ``fashion_mnist_vit.py``.

Pairing (``mimetic_jax.experiments.training.paired_inits``): for seed ``s`` the four variants
start from the same ``model.init`` draw (the covariance ones have only their depthwise kernels
re-drawn) and draw the same minibatches in the same order. The ``2 × seeds`` models with
trained filters train in one vmapped ``train_models`` program, the ``2 × seeds`` frozen ones
in a second (the frozen mask is one per program). Training: AdamW (weight decay 0.05 on
kernels), linear warm-up over 10 % of the steps, cosine decay to zero, BatchNorm statistics
updated in training and running averages at test time, no augmentation.

Learning rate: a fixed, stated choice, 3e-3 for every variant (no sweep: budget), the rate
of ``benchmarks/conv_training.py`` (the run that set the σ defaults, on digits).

Reported, per checkpoint: each variant's test accuracy mean ± std over seeds (ddof=1); the
paired differences covariance − default (filters trained), covariance − default (filters
frozen) and covariance frozen − default trained per seed: mean, std, 95 % confidence interval
(Student's t), paired t-test p (``scipy.stats.ttest_rel``), wins/ties/losses
(``_report.paired_difference``). Figure: ``results/fashion_mnist_convmixer.png``.

Budget of the full run (the defaults): 10 seeds (0-9), 4 variants = 40 models, 300 steps of
batch 32 (9,600 examples per model, about one epoch of the 10,000-image class-stratified
training subset), a 2,000-image stratified test subset, 4 checkpoints. Sized from a probe on
this box (convolutions are slow on XLA:CPU: about 6 ms of CPU time per example-step at patch
2, a 14x14 grid, hence patch 4); the full run measured 579 s of CPU time (about 5 minutes on an
idle 2-core box). Measured on the shared 2-core CPU box of this project, busy
with other jobs (see the JSON's load averages): wall time and process CPU time are in
``results/fashion_mnist_convmixer.{json,md}`` (``script_wall_s``, ``cpu_seconds``).

Run: ``python benchmarks/fashion_mnist_convmixer.py [--quick] [--seeds N] [--steps N] [--data-dir DIR]``
(``--quick``: 2 seeds, 20 steps, depth 1, small subsets, under a minute; writes
``fashion_mnist_convmixer.quick.*``).
"""

from __future__ import annotations

import time

import _report
import jax
import numpy as np

from mimetic_jax import freeze_mask, mimetic_conv
from mimetic_jax.conv import DEFAULT_SIGMA_END, DEFAULT_SIGMA_START
from mimetic_jax.experiments.models import ConvMixer
from mimetic_jax.experiments.tasks import DatasetNotFoundError, load_fashion_mnist
from mimetic_jax.experiments.training import checkpoint_steps, paired_inits, stack_trees, train_models

VARIANTS = ("default", "covariance", "default, frozen", "covariance, frozen")
PAIRS = (("covariance", "default"), ("covariance, frozen", "default, frozen"), ("covariance, frozen", "default"))


def _extra(p) -> None:
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 10; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 300; quick 20)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-train", type=int, default=None, help="training subset (default 10000; quick 1000)")
    p.add_argument("--num-test", type=int, default=None, help="test subset (default 2000; quick 500)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate, all variants (default 3e-3)")
    p.add_argument("--checkpoints", type=int, default=None, help="evaluations, evenly spaced (default 4; quick 2)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=None, help="blocks (default 4; quick 1)")
    p.add_argument("--kernel", type=int, default=5, help="depthwise kernel size")
    p.add_argument("--patch", type=int, default=4, help="stem patch size (default 4: a 7x7 grid)")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (see load_fashion_mnist)")


def _pct_pm(a: np.ndarray) -> str:
    return _report.fmt_pm(100 * a.mean(), 100 * a.std(ddof=1) if a.size > 1 else 0.0, 2)


def markdown(cfg: dict, res: dict) -> str:
    parts = [
        f"Fashion-MNIST, {cfg['num_train']} training / {cfg['num_test']} test images (class-stratified subsets of "
        f"60,000 / 10,000). ConvMixer (BatchNorm) width {cfg['width']}, depth {cfg['depth']}, depthwise kernel "
        f"{cfg['kernel']}x{cfg['kernel']}, patch {cfg['patch']} ({28 // cfg['patch']}x{28 // cfg['patch']} grid). "
        "Variants: default depthwise init (lecun_normal) or `mimetic_conv` (covariance filters, σ "
        f"{cfg['sigma'][0]:g} → {cfg['sigma'][1]:g} over depth), depthwise filters trained or frozen at init "
        f"(`freeze_mask`). Budget: {cfg['seeds']} seeds × 4 variants, {cfg['steps']} steps, batch "
        f"{cfg['batch_size']}, AdamW lr {cfg['lr']:g} (fixed for all; wd 0.05), warm-up 10 %, cosine to 0. "
        "Accuracies in %, mean ± std over seeds (ddof=1). Differences in percentage points per seed: mean ± std, "
        "95 % CI (t), p = paired t-test (scipy.stats.ttest_rel), W/T/L = seeds the first variant wins/ties/loses."
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
    rows = [[s] + [_pct_pm(acc[v][:, c]) for v in VARIANTS] for c, s in enumerate(steps)]
    parts.append("### Test accuracy\n\n" + _report.md_table(["step", *VARIANTS], rows))
    for c_label, c in (("final", len(steps) - 1), ("first checkpoint", 0)):
        rows = [[f"{a} − {b}"] + _report.paired_cells(res["paired"][f"{a} - {b}"][c]) for a, b in PAIRS]
        parts.append(
            f"### Paired differences at step {steps[c]} ({c_label})\n\n"
            + _report.md_table(["difference", *_report.PAIRED_HEADERS], rows)
        )
    parts.append(
        f"Training time: {res['train_seconds']['trained']:.0f} s (filters trained) + "
        f"{res['train_seconds']['frozen']:.0f} s (frozen) wall, {2 * cfg['seeds']} models each, compilation "
        f"included; whole script CPU time {res['cpu_seconds']:.0f} s."
    )
    return "\n\n".join(parts)


def main() -> None:
    args = _report.parse_args(__doc__.splitlines()[0], _extra)
    q = args.quick
    cfg = {
        "seeds": args.seeds or (2 if q else 10),
        "steps": args.steps or (20 if q else 300),
        "batch_size": args.batch_size,
        "num_train": args.num_train or (1000 if q else 10000),
        "num_test": args.num_test or (500 if q else 2000),
        "lr": args.lr,
        "lr_choice": "fixed: the rate of benchmarks/conv_training.py",
        "checkpoints": args.checkpoints or (2 if q else 4),
        "width": args.width,
        "depth": args.depth or (1 if q else 4),
        "kernel": args.kernel,
        "patch": args.patch,
        "sigma": [DEFAULT_SIGMA_START, DEFAULT_SIGMA_END],
        "data": "Fashion-MNIST (load_fashion_mnist), class-stratified subsets drawn with seed 0",
    }
    try:
        data = load_fashion_mnist(data_dir=args.data_dir, num_train=cfg["num_train"], num_test=cfg["num_test"])
    except DatasetNotFoundError as err:
        raise SystemExit(f"fashion_mnist_convmixer.py: {err}") from None
    cpu0 = time.process_time()
    run = _report.Run("fashion_mnist_convmixer", "Fashion-MNIST ConvMixer: default vs covariance filters", args)
    res: dict = {}
    run.data.update({"config": cfg, "results": res})
    run.partial_markdown = lambda: markdown(cfg, res)
    model = ConvMixer(
        data.num_classes, width=cfg["width"], depth=cfg["depth"], kernel_size=cfg["kernel"], patch_size=cfg["patch"]
    )
    seeds = list(range(cfg["seeds"]))
    n = len(seeds)
    default, covariance, keys = paired_inits(model, data.x_train, seeds, transform=lambda v, k: mimetic_conv(v, k))
    common = dict(
        steps=cfg["steps"],
        learning_rate=cfg["lr"],
        batch_size=cfg["batch_size"],
        eval_steps=checkpoint_steps(cfg["steps"], cfg["checkpoints"]),
        eval_batch_size=250,
        mutable=("batch_stats",),
        progress=lambda s: _report.log(f"  step {s}"),
    )
    acc, seconds = {}, {}
    for label, frozen in (("trained", None), ("frozen", freeze_mask(default[0]))):
        run.stage(f"train {2 * n} models, filters {label}, {cfg['steps']} steps")
        h = train_models(
            model.apply, stack_trees(default + covariance), jax.numpy.stack(keys * 2), data, frozen=frozen, **common
        )
        suffix = "" if frozen is None else ", frozen"
        acc[f"default{suffix}"], acc[f"covariance{suffix}"] = h.test_accuracy[:n], h.test_accuracy[n:]
        seconds[label] = h.seconds
        steps = [int(s) for s in h.steps]
    res.update(
        steps=steps,
        acc={v: acc[v].tolist() for v in VARIANTS},
        paired={
            f"{a} - {b}": [_report.paired_difference(acc[a][:, c], acc[b][:, c]) for c in range(len(steps))]
            for a, b in PAIRS
        },
        train_seconds=seconds,
        cpu_seconds=time.process_time() - cpu0,
    )
    for a, b in PAIRS:
        s = res["paired"][f"{a} - {b}"][-1]
        _report.log(f"{a} − {b}: {100 * s['mean']:+.2f} pp [{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]")
    run.data["plot"] = _report.figure_path(run).name  # the docs page embeds it
    _report.plot_paired(
        _report.figure_path(run),
        steps,
        {v: acc[v] for v in VARIANTS},
        PAIRS,
        f"ConvMixer C={cfg['width']} L={cfg['depth']} k={cfg['kernel']} p={cfg['patch']} on Fashion-MNIST "
        f"({cfg['num_train']} train), {n} seeds, {cfg['steps']} steps",
    )
    run.finish(markdown(cfg, res))
    print(markdown(cfg, res))


if __name__ == "__main__":
    main()
