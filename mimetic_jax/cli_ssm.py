"""``mimetic-jax compare --task copying|mqar``: default vs mimetic SSM init on a recall task.

Trains a small Mamba language model (:class:`mimetic_jax.models.MambaLM`, ``--depth``
layers, ``--width`` = ``d_model``, state ``--state``, Mamba ``--ssm-version``) with its
default init and with :func:`mimetic_jax.mimetic_ssm` (package defaults), paired by seed:
for seed ``s`` both start from the same ``model.init`` parameters (the mimetic one has only
its SSM parts replaced) and see the same data order. Copying: 16 tokens, vocabulary 16;
MQAR: length 64, 8 pairs, vocabulary 64 (:mod:`mimetic_jax.tasks`). Prints masked-token
test accuracy (mean ± std over seeds) at the checkpoints and writes ``results.json`` to
``--out``.

Example:
    $ mimetic-jax compare --task copying --steps 400 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["TASK_OPTIONS", "run_compare_sequence"]

TASK_OPTIONS = {"copying": {"num_tokens": 16, "vocab_size": 16},
                "mqar": {"seq_len": 64, "num_pairs": 8, "vocab_size": 64}}
"""Task sizes of ``compare --task``."""


def run_compare_sequence(args: argparse.Namespace) -> dict[str, Any]:
    """Train default vs mimetic Mamba LMs as ``args`` say; print the table, write ``results.json``.

    Raises:
        UsageError: if an option does not fit the task.
    """
    import jax
    import jax.numpy as jnp

    from mimetic_jax.cli import UsageError, _results_entry, format_table
    from mimetic_jax.models import MambaLM
    from mimetic_jax.ssm_transform import mimetic_ssm
    from mimetic_jax.tasks import sequence_dataset
    from mimetic_jax.training import checkpoint_steps, stack_trees, train_models

    start = time.perf_counter()
    if args.warmup_steps is not None and not 0 <= args.warmup_steps < args.steps:
        raise UsageError(f"--warmup-steps must lie in [0, --steps={args.steps}), got {args.warmup_steps}")
    if args.weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.ssm_version == 2 and (2 * args.width) % 16:
        raise UsageError(f"--width must make 2 * width a multiple of the Mamba-2 head size 16, got {args.width}")
    if args.state > (args.width if args.ssm_version == 2 else 2 * args.width):
        raise UsageError(f"--state {args.state} is larger than the B/C projection allows at --width {args.width}")
    data = sequence_dataset(args.task, seed=0, num_train=args.steps * args.batch_size, num_test=512,
                            **TASK_OPTIONS[args.task])
    model = MambaLM(vocab_size=data.num_classes, d_model=args.width, n_layer=args.depth, d_state=args.state,
                    version=args.ssm_version)
    init = jax.jit(model.init)
    default, mimetic, keys = [], [], []
    for seed in range(args.seeds):
        init_key, mimetic_key, data_key = jax.random.split(jax.random.key(seed), 3)
        params = init(init_key, jnp.asarray(data.x_train[:1]))
        default.append(params)
        mimetic.append(mimetic_ssm(params, mimetic_key))
        keys.append(data_key)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, desc=f"{2 * args.seeds} models", unit="step")
    try:
        history = train_models(
            model.apply, stack_trees(default + mimetic), jnp.stack(keys + keys), data, steps=args.steps,
            learning_rate=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, eval_steps=checkpoint_steps(args.steps, args.checkpoints),
            eval_batch_size=512, progress=None if bar is None else (lambda s: bar.update(s - bar.n)),
        )
    finally:
        if bar is not None:
            bar.close()
    acc = history.test_accuracy
    default_acc, mimetic_acc = acc[: args.seeds], acc[args.seeds:]
    print(f"Mamba-{args.ssm_version} d={args.width} layers={args.depth} N={args.state} on {args.task} "
          f"{TASK_OPTIONS[args.task]} (masked-token test accuracy)")
    print(format_table(history.steps, default_acc, mimetic_acc))
    args.out.mkdir(parents=True, exist_ok=True)
    diff = mimetic_acc - default_acc
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("command", "no_progress")} | {"task_options": TASK_OPTIONS[args.task]},
        "steps": history.steps.tolist(),
        "seeds": list(range(args.seeds)),
        "default": _results_entry(default_acc),
        "mimetic": _results_entry(mimetic_acc),
        "difference": {"mean": diff.mean(axis=0).tolist(), "std": diff.std(axis=0).tolist()},
        "train_seconds": history.seconds,
        "total_seconds": time.perf_counter() - start,
        "versions": {"jax": jax.__version__, "python": sys.version.split()[0]},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'} ({results['total_seconds']:.0f} s)")
    return results
