"""``mimetic-jax compare --task copying|mqar``: default vs mimetic SSM init on a recall task.

Trains a small Mamba language model (:class:`mimetic_jax.experiments.models.MambaLM`, ``--depth``
layers, ``--width`` = ``d_model``, state ``--state``, Mamba ``--ssm-version``) with its
default init and with :func:`mimetic_jax.mimetic_ssm` (package defaults), paired by seed:
for seed ``s`` both start from the same ``model.init`` parameters (the mimetic one has only
its SSM parts replaced) and see the same data order. Copying: 16 tokens, vocabulary 16;
MQAR: length 64, 8 pairs, vocabulary 64 (:mod:`mimetic_jax.experiments.tasks`). Writes the same outputs
as the image task (:func:`mimetic_jax.experiments.cli.write_outputs`): the markdown table of masked-token
test accuracy, ``results.json``, ``results.md`` and ``compare.png``, whose init panel shows how
much of a token the state of block 0 keeps after a sequence length.

Example:
    $ mimetic-jax compare --task copying --steps 400 --seeds 3
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from mimetic_jax.experiments._common import UsageError, config_of, require, write_outputs

__all__ = ["TASK_OPTIONS", "retention", "run_compare_sequence"]

TASK_OPTIONS = {
    "copying": {"num_tokens": 16, "vocab_size": 16},
    "mqar": {"seq_len": 64, "num_pairs": 8, "vocab_size": 64},
}
"""Task sizes of ``compare --task``."""
METRIC = {"copying": "copied-token test accuracy", "mqar": "recalled-value test accuracy"}


def retention(params: Any, length: int, layer: int = 0) -> np.ndarray:
    """``exp(−length · Δ · e^{A_log})`` per state entry of block ``layer`` of a ``models.MambaLM``.

    How much of an input the state still holds ``length`` steps later (``Δ = softplus`` of the
    ``dt`` bias; Mamba-1: one value per channel and state entry, Mamba-2: one per head).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from mimetic_jax.experiments.models import MambaLM
        >>> p = MambaLM(vocab_size=8, d_model=16, n_layer=1, d_state=4, version=1).init(
        ...     jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
        >>> r = retention(p, 16); r.shape, bool(((0 <= r) & (r <= 1)).all())
        ((128,), True)
    """
    mixer = params["params"][f"layers_{layer}"]["mixer"]
    a_log = np.asarray(mixer["A_log"], dtype=np.float64)
    bias = np.asarray(mixer["dt_bias"] if "dt_bias" in mixer else mixer["dt_proj"]["bias"], dtype=np.float64)
    delta = np.logaddexp(0.0, bias)
    delta = delta[:, None] if a_log.ndim == 2 else delta
    return np.exp(-length * delta * np.exp(a_log)).ravel()


def _retention_panel(default: Any, mimetic: Any, length: int):
    def draw(fig: Any) -> None:
        ax = fig.subplots()
        bins = np.linspace(0.0, 1.0, 41)
        for params, label, color in ((default, "default init", "tab:blue"), (mimetic, "mimetic init", "tab:orange")):
            ax.hist(retention(params, length), bins=bins, alpha=0.6, color=color, label=label)
        per = "state entries" if np.asarray(default["params"]["layers_0"]["mixer"]["A_log"]).ndim == 2 else "heads"
        ax.set(
            xlabel=f"fraction of an input the state keeps after {length} steps",
            ylabel=f"{per} of block 0",
            title="state retention at init (seed 0)",
        )
        fig.suptitle("what mimetic_ssm changes", fontsize=9)
        ax.legend(fontsize=8)

    return draw


def run_compare_sequence(args: argparse.Namespace) -> dict[str, Any]:
    """Train default vs mimetic Mamba LMs as ``args`` say (after :func:`mimetic_jax.experiments.cli.resolve_options`).

    Returns the dictionary written to ``results.json``.

    Raises:
        UsageError: if an option does not fit the task.
        MissingExtra: if a package of the ``experiments`` extra is missing.
    """
    if args.ssm_version == 2 and (2 * args.width) % 16:
        raise UsageError(f"--width must make 2 * width a multiple of the Mamba-2 head size 16, got {args.width}")
    if args.state > (args.width if args.ssm_version == 2 else 2 * args.width):
        raise UsageError(f"--state {args.state} is larger than the B/C projection allows at --width {args.width}")
    require("matplotlib", why="the figure compare.png")
    if not args.no_progress:
        require("tqdm", why="the progress bar (or pass --no-progress)")
    import jax
    import jax.numpy as jnp

    from mimetic_jax.experiments.models import MambaLM
    from mimetic_jax.experiments.tasks import sequence_dataset
    from mimetic_jax.experiments.training import checkpoint_steps, stack_trees, train_models
    from mimetic_jax.ssm import mimetic_ssm

    start = time.perf_counter()
    data = sequence_dataset(
        args.task, seed=0, num_train=args.steps * args.batch_size, num_test=512, **TASK_OPTIONS[args.task]
    )
    model = MambaLM(
        vocab_size=data.num_classes,
        d_model=args.width,
        n_layer=args.depth,
        d_state=args.state,
        version=args.ssm_version,
    )
    init = jax.jit(model.init)
    default, mimetic, keys = [], [], []
    for seed in range(args.seeds):
        init_key, mimetic_key, data_key = jax.random.split(jax.random.key(seed), 3)
        params = init(init_key, jnp.asarray(data.x_train[:1]))
        default.append(params)
        mimetic.append(mimetic_ssm(params, mimetic_key, config=model))  # Mamba-2's ngroups from the model
        keys.append(data_key)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, desc=f"{2 * args.seeds} models", unit="step")
    try:
        history = train_models(
            model.apply,
            stack_trees(default + mimetic),
            jnp.stack(keys + keys),
            data,
            steps=args.steps,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            eval_steps=checkpoint_steps(args.steps, args.checkpoints),
            eval_batch_size=512,
            progress=None if bar is None else (lambda s: bar.update(s - bar.n)),
        )
    finally:
        if bar is not None:
            bar.close()
    acc = history.test_accuracy
    sizes = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in TASK_OPTIONS[args.task].items())
    results = {
        "task": args.task,
        "title": (
            f"Mamba-{args.ssm_version} LM d={args.width} layers={args.depth} N={args.state} on {args.task} "
            f"({sizes}): default vs mimetic_ssm init"
        ),
        "metric": METRIC[args.task],
        "budget": f"{args.steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g}",
        "config": config_of(args) | {"task_options": TASK_OPTIONS[args.task]},
        "steps": history.steps.tolist(),
        "seeds": list(range(args.seeds)),
        "train_seconds": history.seconds,
    }
    length = int(data.x_train.shape[1])
    return write_outputs(
        args.out,
        results,
        acc[: args.seeds],
        acc[args.seeds :],
        _retention_panel(default[0], mimetic[0], length),
        start=start,
    )
