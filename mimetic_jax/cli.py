"""The ``mimetic-jax`` command line.

``mimetic-jax compare`` trains the same small ViT with its default init and with mimetic
attention init, over several seeds, *paired by seed*: for seed ``s`` both models start
from the same ``model.init`` parameters (the mimetic one has only its attention kernels
replaced by :func:`mimetic_jax.transforms.mimetic_attention`) and see the same data
order. It prints test accuracy (mean ± std over seeds) at the checkpoints, and writes
``results.json`` and ``compare.png`` (accuracy curves; ``W_q^h W_k^hT`` per head of the
first layer at init) to ``--out``.

``--model convmixer`` trains a ConvMixer (BatchNorm) instead; ``--schemes`` picks what the
mimetic arm applies: ``attention`` (:func:`~mimetic_jax.mimetic_attention`), ``conv``
(:func:`~mimetic_jax.mimetic_conv`), ``mlp`` (:func:`~mimetic_jax.mimetic_mlp`), comma
separated (default ``attention`` for the ViT, ``conv`` for the ConvMixer).

Example:
    $ mimetic-jax compare --dataset digits --seeds 3
    $ mimetic-jax compare --model convmixer --schemes conv,mlp --steps 200
    $ python -m mimetic_jax compare --dataset mnist1d --patch 1x4 --out runs/mnist1d

``--task copying`` / ``--task mqar`` run the same comparison for a small Mamba language
model on a synthetic recall task, default init against :func:`mimetic_jax.mimetic_ssm`
(see :mod:`mimetic_jax.cli_ssm`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UsageError", "build_parser", "check_options", "format_table", "main", "parse_patch", "parse_schemes",
           "run_compare"]

DEFAULT_PATCH = {"digits": (2, 2), "mnist1d": (1, 4)}
"""Patch size per data set when ``--patch`` is not given: 16 tokens for digits, 10 for MNIST-1D."""
MODELS = ("vit", "convmixer")
SCHEMES = {"vit": ("attention", "mlp"), "convmixer": ("conv", "mlp")}
"""Schemes ``--schemes`` accepts per model (the first is the default)."""


def parse_schemes(text: str | None, model: str) -> tuple[str, ...]:
    """``"conv,mlp"`` -> ``("conv", "mlp")``, checked against the model; ``None`` -> the model's default.

    Example:
        >>> parse_schemes(None, "convmixer"), parse_schemes("attention,mlp", "vit")
        (('conv',), ('attention', 'mlp'))
    """
    if text is None:
        return SCHEMES[model][:1]
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in SCHEMES[model]]
    if not names or bad:
        raise UsageError(f"--schemes for --model {model} must be a comma-separated subset of "
                         f"{','.join(SCHEMES[model])}, got {text!r}")
    return names


TASK_DEFAULTS = {"image": {"lr": 1e-3, "batch_size": 128, "depth": 4},
                 "copying": {"lr": 3e-3, "batch_size": 32, "depth": 2},
                 "mqar": {"lr": 3e-3, "batch_size": 32, "depth": 2}}
"""``--lr``, ``--batch-size`` and ``--depth`` when not given, per ``--task``."""


class UsageError(ValueError):
    """A combination of options that cannot work; reported like an argparse error."""


def parse_patch(text: str, dataset: str) -> tuple[int, int]:
    """``"P"`` or ``"PHxPW"`` -> a patch size; a single ``P`` means ``(1, P)`` for MNIST-1D.

    Example:
        >>> parse_patch("2", "digits"), parse_patch("4", "mnist1d"), parse_patch("1x5", "mnist1d")
        ((2, 2), (1, 4), (1, 5))
    """
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) <= 0:
        raise UsageError(f"--patch must be P or PHxPW with positive integers, got {text!r}")
    if len(sizes) == 1:
        return (1, sizes[0]) if dataset == "mnist1d" else (sizes[0], sizes[0])
    return sizes[0], sizes[1]


def check_options(args: argparse.Namespace, image_shape: Sequence[int], num_train: int) -> tuple[int, int]:
    """Validate the ``compare`` options against the data; return the patch size.

    Raises:
        UsageError: naming the first bad option.
    """
    patch = DEFAULT_PATCH[args.dataset] if args.patch is None else parse_patch(args.patch, args.dataset)
    if image_shape[0] % patch[0] or image_shape[1] % patch[1]:
        raise UsageError(f"--patch {patch[0]}x{patch[1]} must divide the {args.dataset} image size "
                         f"{image_shape[0]}x{image_shape[1]}")
    if getattr(args, "model", "vit") == "vit" and (args.width % 4 or args.width % args.heads):
        raise UsageError(f"--width must be a multiple of 4 and of --heads={args.heads}, got {args.width}")
    if args.batch_size > num_train:
        raise UsageError(f"--batch-size must be at most {num_train} (training examples), got {args.batch_size}")
    if args.warmup_steps is not None and not 0 <= args.warmup_steps < args.steps:
        raise UsageError(f"--warmup-steps must lie in [0, --steps={args.steps}), got {args.warmup_steps}")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    return patch


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mimetic-jax`` (one sub-command, ``compare``)."""
    parser = argparse.ArgumentParser(prog="mimetic-jax", description="Mimetic initialization for JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmp = sub.add_parser(
        "compare",
        help="train a small ViT with default vs mimetic attention init, paired by seed",
        description="Train the same ViT with its default init and with mimetic attention init "
        "(same parameters otherwise, same data order per seed); report test accuracy at "
        "checkpoints and write results.json and compare.png.",
    )
    cmp.add_argument("--model", choices=MODELS, default="vit", help="model (default: %(default)s)")
    cmp.add_argument("--schemes", default=None,
                     help="mimetic schemes, comma separated: attention,mlp (vit) or conv,mlp (convmixer); "
                          "default attention (vit), conv (convmixer)")
    cmp.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="image",
                     help="image: a ViT on --dataset; copying, mqar: a Mamba LM, default vs mimetic_ssm "
                          "(default: %(default)s)")
    cmp.add_argument("--state", type=_positive_int, default=8,
                     help="SSM state size N (copying, mqar; default: %(default)s)")
    cmp.add_argument("--ssm-version", type=int, choices=(1, 2), default=2,
                     help="Mamba version (copying, mqar; default: %(default)s)")
    cmp.add_argument("--dataset", choices=sorted(DEFAULT_PATCH), default="digits",
                     help="data set (default: %(default)s)")
    cmp.add_argument("--seeds", type=_positive_int, default=3,
                     help="number of seeds, 0..SEEDS-1 (default: %(default)s)")
    cmp.add_argument("--steps", type=_positive_int, default=400,
                     help="optimizer steps per model (default: %(default)s)")
    cmp.add_argument("--checkpoints", type=_positive_int, default=8,
                     help="number of test evaluations, evenly spaced (default: %(default)s)")
    cmp.add_argument("--width", type=_positive_int, default=64, help="token width d (default: %(default)s)")
    cmp.add_argument("--depth", type=_positive_int, default=None,
                     help="transformer blocks / Mamba layers (default: 4 / 2)")
    cmp.add_argument("--heads", type=_positive_int, default=4, help="attention heads (default: %(default)s)")
    cmp.add_argument("--patch", default=None,
                     help="patch size P or PHxPW (default 2x2 for digits, 1x4 for mnist1d)")
    cmp.add_argument("--lr", type=_positive_float, default=None,
                     help="peak learning rate of AdamW (default: 1e-3 for image, 3e-3 for copying/mqar)")
    cmp.add_argument("--batch-size", type=_positive_int, default=None,
                     help="training batch size (default: 128 for image, 32 for copying/mqar)")
    cmp.add_argument("--weight-decay", type=float, default=0.05,
                     help="AdamW weight decay on kernels (default: %(default)s)")
    cmp.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: STEPS/10)")
    cmp.add_argument("--method", choices=("exact", "fast"), default="exact",
                     help="mimetic construction (default: %(default)s)")
    cmp.add_argument("--out", type=Path, default=Path("runs/compare"),
                     help="output folder for results.json and compare.png (default: %(default)s)")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _mean_std(acc: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and (population) std over seeds (axis 0), as lists."""
    return acc.mean(axis=0).tolist(), acc.std(axis=0).tolist()


def format_table(steps: np.ndarray, default: np.ndarray, mimetic: np.ndarray) -> str:
    """Text table of test accuracy (%) per checkpoint: mean ± std over seeds and the
    paired difference mimetic − default (mean ± std over seeds)."""
    diff = mimetic - default
    cells = [(f"{int(s)}",) + tuple(f"{100 * a[:, i].mean():6.2f} ± {100 * a[:, i].std():5.2f}"
                                   for a in (default, mimetic, diff))
             for i, s in enumerate(steps)]
    header = ("step", "default (%)", "mimetic (%)", "mimetic - default")
    widths = [max(len(r[j]) for r in cells + [header]) for j in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _scheme_transform(schemes: Sequence[str], method: str):
    """``(variables, key) -> variables`` applying the chosen schemes in order, each with its own key."""
    from mimetic_jax import mimetic_attention, mimetic_conv, mimetic_mlp

    steps = {"attention": lambda v, k: mimetic_attention(v, k, method=method),
             "conv": mimetic_conv, "mlp": lambda v, k: mimetic_mlp(v)}

    def transform(variables: Any, key: Any) -> Any:
        import jax

        for i, name in enumerate(schemes):
            variables = steps[name](variables, jax.random.fold_in(key, i) if i else key)
        return variables

    return transform


def _init_maps(model: str, default: Any, mimetic: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-head ``W_q^h W_k^hT`` of the first ViT layer, or the first depthwise layer's filter covariance."""
    if model == "vit":
        from mimetic_jax.models import query_key_products

        return (np.asarray(query_key_products(default)[0]), np.asarray(query_key_products(mimetic)[0]),
                r"right: $W_q^h W_k^{h\top}$ per head of the first layer at init (seed 0)")
    from mimetic_jax import filter_covariances

    return (np.asarray(filter_covariances(default)[0])[None], np.asarray(filter_covariances(mimetic)[0])[None],
            "right: filter covariance of the first depthwise layer at init (seed 0)")


def _plot(path: Path, steps: np.ndarray, default: np.ndarray, mimetic: np.ndarray,
          qk_default: np.ndarray, qk_mimetic: np.ndarray, title: str,
          maps_title: str = r"right: $W_q^h W_k^{h\top}$ per head of the first layer at init (seed 0)") -> None:
    """Write the figure: accuracy curves (mean ± std) and per-head ``W_q^h W_k^hT`` maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = qk_default.shape[0]
    fig = plt.figure(figsize=(5.5 + 2.0 * heads, 4.6), layout="constrained")
    grid = fig.add_gridspec(2, heads + 1, width_ratios=[2.6] + [1.0] * heads)
    ax = fig.add_subplot(grid[:, 0])
    for acc, label, color in ((default, "default", "tab:blue"), (mimetic, "mimetic", "tab:orange")):
        mean, std = 100 * acc.mean(axis=0), 100 * acc.std(axis=0)
        ax.plot(steps, mean, marker="o", ms=3, color=color, label=f"{label} ({acc.shape[0]} seeds)")
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.25, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    for row, (qk, label) in enumerate(((qk_default, "default"), (qk_mimetic, "mimetic"))):
        vmax = float(np.abs(qk).max()) or 1.0
        for h in range(heads):
            hax = fig.add_subplot(grid[row, h + 1])
            image = hax.imshow(qk[h], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            hax.set_xticks([])
            hax.set_yticks([])
            hax.set_title(f"{label}, head {h}", fontsize=8)
        fig.colorbar(image, ax=hax, shrink=0.8)
    fig.suptitle(maps_title, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Train default vs mimetic ViTs as ``args`` say; print the table, write the outputs.

    Returns the dictionary written to ``results.json``.

    Raises:
        UsageError: if the options do not fit the data (see :func:`check_options`).
    """
    import jax

    from mimetic_jax.models import ConvMixer, ViT
    from mimetic_jax.tasks import load_dataset
    from mimetic_jax.training import checkpoint_steps, paired_inits, stack_trees, train_models

    start = time.perf_counter()
    model_name = getattr(args, "model", "vit")
    schemes = parse_schemes(getattr(args, "schemes", None), model_name)
    data = load_dataset(args.dataset)
    patch = check_options(args, data.image_shape, data.x_train.shape[0])
    if model_name == "vit":
        model = ViT(num_classes=data.num_classes, width=args.width, depth=args.depth,
                    num_heads=args.heads, patch_size=patch)
    else:
        model = ConvMixer(num_classes=data.num_classes, width=args.width, depth=args.depth, patch_size=patch)

    default_params, mimetic_params, data_keys = paired_inits(
        model, data.x_train, range(args.seeds), transform=_scheme_transform(schemes, args.method))
    maps_default, maps_mimetic, maps_title = _init_maps(model_name, default_params[0], mimetic_params[0])

    params_stack = stack_trees(default_params + mimetic_params)
    keys = jax.numpy.stack(data_keys + data_keys)  # pairs see the same data order
    eval_steps = checkpoint_steps(args.steps, args.checkpoints)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, desc=f"{2 * args.seeds} models", unit="step")
    try:
        history = train_models(
            model.apply, params_stack, keys, data, steps=args.steps, learning_rate=args.lr,
            mutable=("batch_stats",) if model_name == "convmixer" else (),
            batch_size=args.batch_size, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
            eval_steps=eval_steps, progress=None if bar is None else (lambda s: bar.update(s - bar.n)),
        )
    finally:
        if bar is not None:
            bar.close()

    acc = history.test_accuracy
    default_acc, mimetic_acc = acc[: args.seeds], acc[args.seeds:]
    title = (f"ViT d={args.width} L={args.depth} H={args.heads} on {args.dataset}" if model_name == "vit"
             else f"ConvMixer C={args.width} L={args.depth} on {args.dataset}") + f" [{'+'.join(schemes)}]"
    print(title)
    print(format_table(history.steps, default_acc, mimetic_acc))

    args.out.mkdir(parents=True, exist_ok=True)
    _plot(args.out / "compare.png", history.steps, default_acc, mimetic_acc, maps_default, maps_mimetic, title,
          maps_title)
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("command", "no_progress")} | {"patch": list(patch), "schemes": list(schemes)},
        "steps": history.steps.tolist(),
        "seeds": list(range(args.seeds)),
        "default": _results_entry(default_acc),
        "mimetic": _results_entry(mimetic_acc),
        "difference": dict(zip(("mean", "std"), _mean_std(mimetic_acc - default_acc))),
        "train_seconds": history.seconds,
        "total_seconds": time.perf_counter() - start,
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'compare.png'} "
          f"({results['total_seconds']:.0f} s)")
    return results


def _results_entry(acc: np.ndarray) -> dict[str, Any]:
    mean, std = _mean_std(acc)
    return {"test_accuracy": acc.tolist(), "mean": mean, "std": std}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mimetic-jax`` and ``python -m mimetic_jax``; returns the exit code.

    Bad options exit through ``argparse`` (``SystemExit`` with code 2).

    Example:
        >>> main(["compare", "--steps", "20", "--seeds", "1", "--out", "/tmp/run"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        for name, value in TASK_DEFAULTS[args.task].items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        try:
            if args.task != "image":
                if args.model != "vit" or args.schemes is not None:
                    raise UsageError(f"--model and --schemes choose the image model; --task {args.task} "
                                     "always trains a Mamba LM (choose it with --ssm-version and --state)")
                from mimetic_jax.cli_ssm import run_compare_sequence

                run_compare_sequence(args)
                return 0
            run_compare(args)
        except UsageError as err:
            parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
