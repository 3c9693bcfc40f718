"""One small training loop, shared by the command line, the benchmarks and the notebooks.

It trains *many* models at once: the parameters of ``M`` models (for instance
inits × seeds) are stacked along a leading axis and one jitted, ``jax.vmap``-ed train step
updates them all. Each model draws its minibatches from its own data key, so two models
given the same data key see exactly the same examples in the same order ("paired by
seed"): any difference between them comes from their parameters alone.

- optimizer: AdamW with linear warm-up and cosine decay to zero (:func:`make_optimizer`);
  decoupled weight decay on kernels only (:func:`weight_decay_mask`);
- loss: softmax cross-entropy with integer labels, no label smoothing; for sequence tasks
  (labels ``(N, L)``) a label ``-1`` masks a position out of the loss and the accuracy;
- data: the whole training set lives on the device; each step gathers a batch from an
  epoch-wise permutation drawn from ``fold_in(data_key, epoch)`` (:func:`batch_indices`);
- loop: ``jax.lax.fori_loop`` over runs of steps between two evaluations (one compiled
  program whatever the run's length), test accuracy of every model at each checkpoint.

Example:
    >>> import jax
    >>> from mimetic_jax.experiments.models import ViT
    >>> from mimetic_jax.experiments.tasks import load_digits
    >>> data = load_digits()
    >>> model = ViT(num_classes=10, width=32, depth=1, num_heads=2)
    >>> keys = jax.random.split(jax.random.key(0), 2)
    >>> params = stack_trees([init_params(model, k, data.x_train) for k in keys])
    >>> history = train_models(model.apply, params, keys, data, steps=50,
    ...                        learning_rate=3e-3, eval_steps=(25, 50))
    >>> history.test_accuracy.shape
    (2, 2)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mimetic_jax.experiments.tasks import Dataset

__all__ = [
    "History",
    "batch_indices",
    "checkpoint_steps",
    "cross_entropy",
    "init_params",
    "make_optimizer",
    "paired_inits",
    "stack_trees",
    "train_models",
    "unstack_tree",
    "weight_decay_mask",
]

PyTree = Any

#: A model's ``apply``: ``(variables, x) -> logits``; with ``mutable`` collections it is also
#: called with ``train=True, mutable=[...]`` and returns ``(logits, updated collections)``.
ApplyFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True, eq=False)
class History:
    """What :func:`train_models` returns.

    Attributes:
        steps: the checkpoint steps, ``(C,)`` int.
        test_accuracy: test accuracy in ``[0, 1]`` of each model at each checkpoint,
            ``(M, C)``.
        train_loss: mean training loss of each model over the steps since the previous
            checkpoint, ``(M, C)`` (NaN at a checkpoint at step 0).
        test_loss: mean test cross-entropy (nats; sequence tasks: over the positions
            with a label) of each model at each checkpoint, ``(M, C)``; for a character
            language model, ``test_loss / ln 2`` is bits per character.
        params: the final parameters, stacked along a leading model axis.
        seconds: wall time of training and evaluation, compilation included.
    """

    steps: np.ndarray
    test_accuracy: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    params: PyTree
    seconds: float


def init_params(model: nn.Module, key: jax.Array, sample_x: jax.Array | np.ndarray) -> PyTree:
    """Initialize a linen model's variables from one example of ``sample_x`` (jitted).

    Example:
        >>> from mimetic_jax.experiments.models import ViT
        >>> v = init_params(ViT(10, width=16, depth=1), jax.random.key(0), np.zeros((3, 8, 8, 1)))
        >>> sorted(v)
        ['params']
    """
    return jax.jit(model.init)(key, jnp.asarray(sample_x[:1]))


def paired_inits(
    model: nn.Module,
    sample_x: jax.Array | np.ndarray,
    seeds: Sequence[int],
    *,
    method: str = "exact",
    transform: Callable[[PyTree, jax.Array], PyTree] | None = None,
) -> tuple[list[PyTree], list[PyTree], list[jax.Array]]:
    """Default and mimetic parameters of ``model`` and a data key, paired by seed.

    ``transform(variables, key)`` makes the mimetic parameters (default: attention only,
    ``mimetic_attention(variables, key, method=method)``); pass e.g.
    ``lambda v, k: mimetic_conv(v, k)`` for a ConvMixer.

    For each seed ``s``, ``jax.random.key(s)`` splits into an init key, a mimetic key and
    a data key: the default parameters are ``model.init(init_key, ...)``, the mimetic ones
    are the same tree with only its attention kernels replaced by
    :func:`mimetic_jax.mimetic_attention` (``method``). Giving both models of a
    pair the same data key (see :func:`train_models`) makes them see the same data order.

    One compiled init serves all seeds; the transform runs eagerly (its per-op
    compilations are shared by all layers and seeds, which is cheaper on CPU than
    compiling it whole).

    Returns:
        ``(default_params, mimetic_params, data_keys)``, three lists of ``len(seeds)``.
    """
    from mimetic_jax.attention import mimetic_attention

    init = jax.jit(model.init)
    sample = jnp.asarray(sample_x[:1])
    default_params, mimetic_params, data_keys = [], [], []
    for seed in seeds:
        init_key, mimetic_key, data_key = jax.random.split(jax.random.key(seed), 3)
        params = init(init_key, sample)
        default_params.append(params)
        mimetic_params.append(
            mimetic_attention(params, mimetic_key, method=method)
            if transform is None
            else transform(params, mimetic_key)
        )
        data_keys.append(data_key)
    return default_params, mimetic_params, data_keys


def stack_trees(trees: Sequence[PyTree]) -> PyTree:
    """Stack identically structured trees along a new leading axis.

    Example:
        >>> stack_trees([{"w": jnp.zeros(3)}, {"w": jnp.ones(3)}])["w"].shape
        (2, 3)
    """
    if not trees:
        raise ValueError("trees must hold at least one tree")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree: PyTree, index: int) -> PyTree:
    """The ``index``-th tree of a stack made by :func:`stack_trees`."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def weight_decay_mask(params: PyTree) -> PyTree:
    """``True`` for leaves named ``kernel`` or ``embedding``; biases and norms are not decayed."""

    def is_decayed(path: tuple, _leaf: Any) -> bool:
        last = path[-1] if path else None
        name = getattr(last, "key", getattr(last, "name", None))
        return name in ("kernel", "embedding")

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def make_optimizer(
    learning_rate: float,
    steps: int,
    *,
    warmup_steps: int,
    weight_decay: float = 0.05,
    frozen: PyTree | None = None,
) -> optax.GradientTransformation:
    """AdamW with a linear warm-up from 0 to ``learning_rate`` and a cosine decay to 0.

    The schedule reaches its peak after ``warmup_steps`` and zero at ``steps``. Weight
    decay is decoupled and applies to the leaves selected by :func:`weight_decay_mask`.
    ``frozen``: a mask (``True`` = frozen, e.g. :func:`mimetic_jax.freeze_mask`) whose
    leaves get a zero final update (no step, no weight decay).
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not 0 <= warmup_steps < steps:
        raise ValueError(f"warmup_steps must lie in [0, steps={steps}), got {warmup_steps}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps, decay_steps=steps, end_value=0.0
    )
    adamw = optax.adamw(schedule, weight_decay=weight_decay, mask=weight_decay_mask)
    if frozen is None:
        return adamw
    return optax.chain(adamw, optax.masked(optax.set_to_zero(), frozen))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits (B, K)`` against integer ``labels (B,)``.

    Sequence tasks: ``logits (B, L, K)``, ``labels (B, L)``; a label ``-1`` marks a position
    without loss (the loss mask), and the mean is over the other positions.
    """
    if labels.ndim == 1:
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()
    valid = labels >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.where(valid, labels, 0))
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def batch_indices(key: jax.Array, step: jax.Array | int, num_examples: int, batch_size: int) -> jax.Array:
    """Indices of the examples of minibatch ``step``: epoch-wise shuffling without replacement.

    Epoch ``e = step // (num_examples // batch_size)`` uses the permutation drawn from
    ``fold_in(key, e)``; the last incomplete batch of an epoch is dropped. Pure in
    ``(key, step)``, so equal keys give equal data orders.

    Example:
        >>> idx = batch_indices(jax.random.key(0), 3, num_examples=100, batch_size=10)
        >>> idx.shape
        (10,)
    """
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"batch_size must lie in [1, num_examples={num_examples}], got {batch_size}")
    per_epoch = num_examples // batch_size
    step = jnp.asarray(step, jnp.int32)
    perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), num_examples)
    return jax.lax.dynamic_slice_in_dim(perm, (step % per_epoch) * batch_size, batch_size)


def checkpoint_steps(steps: int, count: int) -> tuple[int, ...]:
    """``count`` evaluation steps spread evenly over ``(0, steps]``, the last one ``steps``.

    Example:
        >>> checkpoint_steps(600, 4)
        (150, 300, 450, 600)
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    return tuple(sorted({max(1, round(steps * (i + 1) / count)) for i in range(count)}))


def _check_eval_steps(eval_steps: Sequence[int], steps: int) -> np.ndarray:
    out = np.asarray(sorted(set(int(s) for s in eval_steps)), dtype=np.int64)
    if out.size == 0 or out[0] < 0 or out[-1] > steps:
        raise ValueError(f"eval_steps must be a non-empty set of steps in [0, steps={steps}], got {eval_steps!r}")
    return out


def _num_models(params_stack: PyTree) -> int:
    sizes = {leaf.shape[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(params_stack)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"params_stack leaves must share one leading model axis, got sizes {sizes}")
    return cast(int, sizes.pop())  # not None: checked above


def _make_train_chunk(
    apply_fn: ApplyFn, optimizer: optax.GradientTransformation, batch_size: int, mutable: tuple[str, ...] = ()
) -> Callable:
    """Jitted ``(params, opt_state, keys, start, stop, x, y) -> (params, opt_state, loss_sum)``.

    Runs steps ``start .. stop-1`` of every stacked model; ``start`` and ``stop`` are traced,
    so runs of any length share one compiled program. With ``mutable`` collections (e.g.
    BatchNorm's ``batch_stats``) ``params`` is the variables dict: its ``"params"`` are
    trained, the mutable collections are replaced by the ones the training forward returns.
    """

    def loss_fn(params: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        return cross_entropy(apply_fn(params, x), y)

    def one_model_step(params, opt_state, key, step, x_train, y_train):
        idx = batch_indices(key, step, x_train.shape[0], batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def stateful_loss(trained, variables, x, y):
        logits, state = apply_fn({**variables, "params": trained}, x, train=True, mutable=list(mutable))
        return cross_entropy(logits, y), state

    def stateful_step(variables, opt_state, key, step, x_train, y_train):
        idx = batch_indices(key, step, x_train.shape[0], batch_size)
        (loss, state), grads = jax.value_and_grad(stateful_loss, has_aux=True)(
            variables["params"], variables, x_train[idx], y_train[idx]
        )
        updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
        return {**variables, **state, "params": optax.apply_updates(variables["params"], updates)}, opt_state, loss

    all_models_step = jax.vmap(stateful_step if mutable else one_model_step, in_axes=(0, 0, 0, None, None, None))

    @jax.jit
    def train_chunk(params, opt_state, keys, start, stop, x_train, y_train):
        def body(step, carry):
            params, opt_state, loss_sum = carry
            params, opt_state, loss = all_models_step(params, opt_state, keys, step, x_train, y_train)
            return params, opt_state, loss_sum + loss.astype(jnp.float32)

        loss0 = jnp.zeros(keys.shape[:1], jnp.float32)
        return jax.lax.fori_loop(start, stop, body, (params, opt_state, loss0))

    return train_chunk


def _make_evaluate(apply_fn: ApplyFn, x_test: np.ndarray, eval_batch_size: int) -> Callable:
    """Jitted ``(params_stack, x, y) -> (accuracy (M,), mean cross-entropy (M,))`` over the test set, in batches."""
    n = x_test.shape[0]
    batch = min(eval_batch_size, n)
    num_batches = -(-n // batch)
    pad = num_batches * batch - n

    def one_batch(params, xi):
        logits = apply_fn(params, xi).astype(jnp.float32)
        return jnp.argmax(logits, axis=-1), jax.nn.log_softmax(logits, axis=-1)

    def one_model(params, x, y):
        xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((num_batches, batch) + x.shape[1:])
        yb = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape((num_batches, batch) + y.shape[1:])

        def per_batch(xy):
            preds, logp = one_batch(params, xy[0])
            nll = -jnp.take_along_axis(logp, jnp.maximum(xy[1], 0)[..., None], axis=-1)[..., 0]
            return preds, nll

        preds, nll = jax.lax.map(per_batch, (xb, yb))
        preds = preds.reshape((-1,) + preds.shape[2:])[:n]
        nll = nll.reshape((-1,) + nll.shape[2:])[:n]
        if y.ndim == 1:
            return jnp.mean((preds == y).astype(jnp.float32)), jnp.mean(nll)
        valid = y >= 0  # sequence task: accuracy and loss over the answer positions
        count = jnp.maximum(jnp.sum(valid), 1)
        return jnp.sum((preds == y) & valid) / count, jnp.sum(jnp.where(valid, nll, 0.0)) / count

    return jax.jit(jax.vmap(one_model, in_axes=(0, None, None)))


def train_models(
    apply_fn: ApplyFn,
    params_stack: PyTree,
    data_keys: jax.Array,
    dataset: Dataset,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int = 128,
    weight_decay: float = 0.05,
    warmup_steps: int | None = None,
    eval_steps: Sequence[int] | None = None,
    eval_batch_size: int = 1024,
    progress: Callable[[int], object] | None = None,
    progress_every: int = 25,
    mutable: Sequence[str] = (),
    frozen: PyTree | None = None,
) -> History:
    """Train ``M`` stacked models side by side and evaluate them at checkpoints.

    Args:
        apply_fn: ``apply_fn(params, x) -> logits``, e.g. a linen ``model.apply``; the
            whole tree ``params`` is trained (no mutable collections, no dropout RNG).
        params_stack: the ``M`` models' parameters stacked along a leading axis
            (:func:`stack_trees`).
        data_keys: ``(M,)`` PRNG keys of the models' data orders; equal keys, equal orders.
        dataset: a :class:`~mimetic_jax.experiments.tasks.Dataset`.
        steps: number of optimizer steps.
        learning_rate: peak learning rate of the warm-up + cosine schedule.
        batch_size: training minibatch size.
        weight_decay: AdamW decoupled weight decay (kernels only).
        warmup_steps: linear warm-up length; default ``steps // 10``.
        eval_steps: steps after which test accuracy is measured (0 = at init); default
            five evenly spaced checkpoints (:func:`checkpoint_steps`).
        eval_batch_size: test examples per forward pass.
        progress: called with the number of steps done so far, about every
            ``progress_every`` steps (e.g. ``lambda s: bar.update(s - bar.n)``).
        progress_every: steps between two ``progress`` calls.
        mutable: collections the training forward updates, e.g. ``("batch_stats",)`` for
            BatchNorm. Then ``params_stack`` holds whole variables dicts, only their
            ``"params"`` are trained, and the training forward is
            ``apply_fn(variables, x, train=True, mutable=[...])`` (evaluation stays
            ``apply_fn(variables, x)``).
        frozen: a mask with the structure of one model's trained tree (``params_stack``
            without the model axis; with ``mutable``, its ``"params"``, or a whole
            variables mask from which ``"params"`` is taken), ``True`` where the leaves stay
            at their initial values (e.g. :func:`mimetic_jax.freeze_mask`).

    Returns:
        a :class:`History`.
    """
    start_time = time.perf_counter()
    num_models = _num_models(params_stack)
    data_keys = jnp.asarray(data_keys)
    if data_keys.shape[:1] != (num_models,):
        raise ValueError(f"data_keys must hold one key per model ({num_models}), got shape {data_keys.shape}")
    warmup_steps = steps // 10 if warmup_steps is None else warmup_steps
    checkpoints = _check_eval_steps(checkpoint_steps(steps, 5) if eval_steps is None else eval_steps, steps)
    if not 0 < batch_size <= dataset.x_train.shape[0]:
        raise ValueError(
            f"batch_size must lie in [1, {dataset.x_train.shape[0]}] (training examples), got {batch_size}"
        )
    if progress_every <= 0:
        raise ValueError(f"progress_every must be positive, got {progress_every}")

    mutable = tuple(mutable)
    if mutable and frozen is not None and "params" in frozen:
        frozen = frozen["params"]
    optimizer = make_optimizer(
        learning_rate, steps, warmup_steps=warmup_steps, weight_decay=weight_decay, frozen=frozen
    )
    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    x_test, y_test = jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test)
    train_chunk = _make_train_chunk(apply_fn, optimizer, batch_size, mutable)
    evaluate = _make_evaluate(apply_fn, dataset.x_test, eval_batch_size)

    # Through one jit, so that the first chunk sees committed arrays like all later ones
    # (otherwise the chunk program compiles twice).
    trained = (lambda v: v["params"]) if mutable else (lambda v: v)
    params, opt_state, data_keys = jax.jit(lambda p, k: (p, jax.vmap(optimizer.init)(trained(p)), k))(
        params_stack, data_keys
    )
    accuracy = np.zeros((num_models, checkpoints.size), np.float32)
    test_loss = np.zeros((num_models, checkpoints.size), np.float32)
    train_loss = np.full((num_models, checkpoints.size), np.nan, np.float32)
    step, loss_sum, since = 0, np.zeros(num_models, np.float64), 0
    for stop in sorted(set(checkpoints.tolist()) | {steps}):
        while step < stop:
            end = min(stop, step + progress_every)
            params, opt_state, chunk_loss = train_chunk(params, opt_state, data_keys, step, end, x_train, y_train)
            loss_sum += np.asarray(chunk_loss, np.float64)
            since += end - step
            step = end
            if progress is not None:
                progress(step)
        if stop in checkpoints:
            c = int(np.searchsorted(checkpoints, stop))
            if since:
                train_loss[:, c] = loss_sum / since
            accuracy[:, c], test_loss[:, c] = (np.asarray(a) for a in evaluate(params, x_test, y_test))
            loss_sum, since = np.zeros(num_models, np.float64), 0
    return History(
        steps=checkpoints,
        test_accuracy=accuracy,
        train_loss=train_loss,
        test_loss=test_loss,
        params=params,
        seconds=time.perf_counter() - start_time,
    )
