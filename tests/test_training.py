"""Tests of mimetic_jax.experiments.training: the shared, vmapped training loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimetic_jax.experiments.models import ViT
from mimetic_jax.experiments.tasks import load_digits
from mimetic_jax.experiments.training import (
    batch_indices,
    checkpoint_steps,
    cross_entropy,
    init_params,
    make_optimizer,
    stack_trees,
    train_models,
    unstack_tree,
    weight_decay_mask,
)

STEPS = 60


@pytest.fixture(scope="module")
def run():
    """One training run (one compilation) shared by the tests below.

    Models 0 and 1: same parameters, same data key. Model 2: same parameters, another key.
    """
    data = load_digits()
    model = ViT(num_classes=10, width=32, depth=1, num_heads=2)
    params = init_params(model, jax.random.key(0), data.x_train)
    key, other = jax.random.split(jax.random.key(1))
    progress: list[int] = []
    history = train_models(
        model.apply,
        stack_trees([params] * 3),
        jnp.stack([key, key, other]),
        data,
        steps=STEPS,
        learning_rate=3e-3,
        batch_size=64,
        eval_steps=(0, 20, 40),
        progress=progress.append,
        progress_every=15,
    )
    return history, params, progress


def test_history_shapes(run):
    history, _, progress = run
    np.testing.assert_array_equal(history.steps, [0, 20, 40])
    assert history.test_accuracy.shape == (3, 3) and history.train_loss.shape == (3, 3)
    assert np.isnan(history.train_loss[:, 0]).all() and np.isfinite(history.train_loss[:, 1:]).all()
    assert history.seconds > 0
    # Training runs to ``steps`` even past the last checkpoint; progress is reported on the way.
    assert progress == [15, 20, 35, 40, 55, 60]


def test_same_seed_same_params_give_identical_results(run):
    history, _, _ = run
    np.testing.assert_array_equal(history.test_accuracy[0], history.test_accuracy[1])
    np.testing.assert_array_equal(history.train_loss[0], history.train_loss[1])
    for a, b in zip(jax.tree.leaves(unstack_tree(history.params, 0)), jax.tree.leaves(unstack_tree(history.params, 1))):
        np.testing.assert_array_equal(a, b)


def test_other_data_key_gives_other_model(run):
    history, _, _ = run
    first = unstack_tree(history.params, 0)["params"]["head"]["kernel"]
    other = unstack_tree(history.params, 2)["params"]["head"]["kernel"]
    assert not np.allclose(first, other)
    assert not np.array_equal(history.train_loss[0, 1:], history.train_loss[2, 1:])


def test_accuracy_rises_above_chance_quickly(run):
    history, _, _ = run
    assert history.test_accuracy[:, 0].max() < 0.35  # at init: about chance (0.1)
    assert history.test_accuracy[:, -1].min() > 0.3  # after 40 steps of 64 examples (~0.5 seen)
    assert (history.train_loss[:, -1] < history.train_loss[:, 1]).all()


def test_batch_indices_orders():
    key, other = jax.random.split(jax.random.key(0))
    n, b = 100, 10
    epoch = np.concatenate([np.asarray(batch_indices(key, s, n, b)) for s in range(n // b)])
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))  # one epoch: every example once
    next_epoch = np.concatenate([np.asarray(batch_indices(key, s, n, b)) for s in range(n // b, 2 * n // b)])
    assert not np.array_equal(epoch, next_epoch)  # reshuffled each epoch
    np.testing.assert_array_equal(batch_indices(key, 3, n, b), batch_indices(key, 3, n, b))
    assert not np.array_equal(batch_indices(key, 0, n, b), batch_indices(other, 0, n, b))
    # Incomplete last batch dropped: 105 // 10 = 10 steps per epoch.
    assert np.asarray(batch_indices(key, 10, 105, b)).shape == (b,)
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(key, 0, n, 101)


def test_checkpoint_steps():
    assert checkpoint_steps(600, 4) == (150, 300, 450, 600)
    assert checkpoint_steps(3, 5) == (1, 2, 3)
    with pytest.raises(ValueError, match="count"):
        checkpoint_steps(10, 0)


def test_optimizer_schedule_and_mask():
    params = {"params": {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "ln": {"scale": jnp.ones(2)}}}
    mask = weight_decay_mask(params)
    assert mask == {"params": {"dense": {"kernel": True, "bias": False}, "ln": {"scale": False}}}
    opt = make_optimizer(1.0, 10, warmup_steps=2, weight_decay=0.0)
    grads = jax.tree.map(jnp.ones_like, params)
    first, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    assert float(first["params"]["ln"]["scale"][0]) == 0.0  # warm-up starts at 0
    with pytest.raises(ValueError, match="warmup_steps"):
        make_optimizer(1e-3, 10, warmup_steps=10)
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(0.0, 10, warmup_steps=1)


def test_cross_entropy_matches_log_softmax():
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 1, 0], np.int32)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_p[np.arange(5), labels].mean()
    np.testing.assert_allclose(jax.jit(cross_entropy)(logits, labels), expected, rtol=1e-5)


def test_stack_and_unstack():
    trees = [{"w": jnp.full(3, float(i))} for i in range(4)]
    stacked = stack_trees(trees)
    assert stacked["w"].shape == (4, 3)
    np.testing.assert_array_equal(unstack_tree(stacked, 2)["w"], trees[2]["w"])
    with pytest.raises(ValueError, match="trees"):
        stack_trees([])


def test_train_models_argument_errors():
    data = load_digits()
    params = stack_trees([{"w": jnp.zeros((64, 10))}] * 2)
    apply_fn = lambda p, x: x.reshape(x.shape[0], -1) @ p["w"]
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="data_keys"):
        train_models(apply_fn, params, keys[:1], data, steps=10, learning_rate=1e-3)
    with pytest.raises(ValueError, match="eval_steps"):
        train_models(apply_fn, params, keys, data, steps=10, learning_rate=1e-3, eval_steps=(11,))
    with pytest.raises(ValueError, match="batch_size"):
        train_models(apply_fn, params, keys, data, steps=10, learning_rate=1e-3, batch_size=5000)


def test_linear_model_trains_paired():
    """A generic apply function (no Flax) trains too, and paired models stay paired."""
    data = load_digits()
    apply_fn = lambda p, x: x.reshape(x.shape[0], -1) @ p["w"] + p["b"]
    params = stack_trees([{"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}] * 2)
    key = jax.random.key(3)
    history = train_models(
        apply_fn, params, jnp.stack([key, key]), data, steps=30, learning_rate=1e-2, batch_size=32, eval_steps=(30,)
    )
    assert history.test_accuracy[0, 0] == history.test_accuracy[1, 0] > 0.8


def test_test_loss_at_init_is_the_mean_cross_entropy_of_the_model(run):
    history, params, _ = run
    data = load_digits()
    model = ViT(num_classes=10, width=32, depth=1, num_heads=2)
    expected = float(cross_entropy(model.apply(params, jnp.asarray(data.x_test)), jnp.asarray(data.y_test)))
    assert history.test_loss.shape == (3, 3)
    np.testing.assert_allclose(history.test_loss[:, 0], expected, rtol=1e-5)
    assert (history.test_loss[:, -1] < history.test_loss[:, 0]).all()  # training lowers it
