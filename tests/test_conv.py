"""Covariance-structured depthwise filters (SPEC §2): statistics, transfer, transforms, errors."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mimetic_jax import (
    conv_filter_covariance,
    depthwise_conv_init,
    filter_covariance,
    filter_covariances,
    find_depthwise_convs,
    freeze_mask,
    mimetic_conv,
    resize_covariance,
    transfer_covariances,
)
from mimetic_jax.conv import _root_for, gaussian, layer_sigma
from mimetic_jax.experiments.models import ConvMixer, ConvNeXt

KEY = jax.random.key(0)


def init(model, x):
    """Jitted ``model.init`` (eager linen init is slow on a busy CPU)."""
    return jax.jit(model.init)(KEY, x)


@pytest.fixture(scope="module")
def mixer():
    """Variables of one small ConvMixer (width 8, depth 2, kernel 5), shared by the tests."""
    return init(ConvMixer(10, width=8, depth=2), jnp.zeros((1, 8, 8, 1)))


def entry_tolerance(cov: np.ndarray, n: int, z: float = 5.0) -> np.ndarray:
    """``z`` standard errors of each entry of a sample covariance of ``n`` Gaussian draws."""
    d = np.diag(cov)
    return z * np.sqrt((np.outer(d, d) + cov**2) / n) + 1e-7


def sample_covariance(w: jax.Array) -> np.ndarray:
    """Uncentered covariance of the filters of a depthwise kernel (zero-mean law)."""
    flat = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    return flat @ flat.T / flat.shape[1]


# --------------------------------------------------------------------------- closed form


def test_closed_form_is_scaled_kronecker_of_1d_gaussians():
    sigma, k = 1.3, 5
    g = np.exp(-(np.subtract.outer(np.arange(k), np.arange(k)) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(conv_filter_covariance(k, sigma, scale=0.5), 0.25 * np.kron(g, g), rtol=1e-6)
    np.testing.assert_allclose(conv_filter_covariance((k,), sigma), g, rtol=1e-6)
    assert conv_filter_covariance((3, 5), sigma).shape == (15, 15)


def test_displacement_function_is_pluggable():
    laplace = lambda delta, s: np.exp(-np.abs(delta).sum(-1) / s)
    cov = np.asarray(conv_filter_covariance(3, 2.0, displacement=laplace))
    assert cov[0, 1] == pytest.approx(np.exp(-0.5), rel=1e-6) and cov[0, 4] == pytest.approx(np.exp(-1.0), rel=1e-6)
    w = depthwise_conv_init(0, 1, sigma_start=2.0, sigma_end=2.0, displacement=laplace)(KEY, (3, 3, 1, 20000))
    target = cov / 9.0
    assert np.all(np.abs(sample_covariance(w) - target) <= entry_tolerance(target, 20000))


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("shape", [(3, 3, 1, 20000), (5, 1, 20000), (3, 5, 1, 20000)], ids=["2d", "1d", "3x5"])
def test_samples_have_the_target_covariance(shape):
    sigma = 1.5
    w = depthwise_conv_init(0, 1, sigma_start=sigma, sigma_end=sigma)(KEY, shape)
    assert w.shape == shape and w.dtype == jnp.float32
    dims = shape[:-2]
    target = np.asarray(conv_filter_covariance(dims if len(dims) == 2 else dims, sigma), np.float64)
    target /= math.prod(dims)
    est = sample_covariance(w)
    assert np.all(np.abs(est - target) <= entry_tolerance(target, shape[-1]))


def test_no_failure_or_nan_for_any_size_and_sigma():
    for k in range(3, 10):
        for sigma in (0.1, 0.5, 2.0, 10.0):
            root = _root_for((k, k), sigma, None, None, gaussian)
            cov = np.asarray(conv_filter_covariance(k, sigma), np.float64) / k**2
            assert np.all(np.isfinite(root)), (k, sigma)
            np.testing.assert_allclose(root @ root, cov, atol=1e-6 * cov.max())  # R² = Σ: no rank lost
            full = _root_for((k, k), sigma, None, cov, gaussian)  # the general (non-separable) path
            np.testing.assert_allclose(full @ full, cov, atol=1e-6 * cov.max())
    for dtype in (jnp.float32, jnp.bfloat16):
        for k, sigma in ((3, 0.1), (9, 10.0), (7, 2.0)):
            w = depthwise_conv_init(0, 1, sigma_start=sigma, sigma_end=sigma)(KEY, (k, k, 1, 16), dtype)
            assert w.dtype == dtype and bool(jnp.all(jnp.isfinite(w.astype(jnp.float32)))), (k, sigma)
            assert float(jnp.abs(w.astype(jnp.float32)).max()) > 0


def test_scale_none_matches_flax_default_per_weight_variance():
    c = 20000
    conv = nn.Conv(c, (5, 5), feature_group_count=c, use_bias=False)
    default = conv.init(KEY, jnp.ones((1, 5, 5, c)))["params"]["kernel"]
    ours = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)(KEY, default.shape)
    n = default.size
    tol = 5 * math.sqrt(2 / n) / 25  # 5 standard errors of a variance estimate
    assert float(jnp.var(default)) == pytest.approx(1 / 25, abs=tol)
    assert float(jnp.mean(ours**2)) == pytest.approx(1 / 25, abs=3 * tol)  # correlated taps: wider error
    w = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, scale=0.3)(KEY, (3, 3, 1, c))
    assert np.diag(sample_covariance(w)).mean() == pytest.approx(0.09, rel=0.05)


def test_sigma_grows_linearly_with_depth():
    assert [layer_sigma(i, 5, 1.0, 3.0) for i in range(5)] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert layer_sigma(0, 1, 1.0, 3.0) == 1.0
    v = init(ConvMixer(10, width=4096, depth=3, kernel_size=3), jnp.zeros((1, 4, 4, 1)))
    v = mimetic_conv(v, KEY, sigma_start=0.5, sigma_end=2.0)
    corr = []
    for c in filter_covariances(v, center=False):
        c = np.asarray(c)
        corr.append(c[4, 5] / c[4, 4])  # centre tap with its right neighbour
    expected = [math.exp(-1 / (2 * s**2)) for s in (0.5, 1.25, 2.0)]
    np.testing.assert_allclose(corr, expected, atol=5 * math.sqrt(2 / 4096))
    assert corr[0] < corr[1] < corr[2]


def test_same_key_same_array_eager_jit_vmap():
    init = depthwise_conv_init(2, 4, sigma_start=1.0, sigma_end=3.0)
    shape = (7, 7, 1, 32)
    eager = init(KEY, shape)
    jitted = jax.jit(lambda k: init(k, shape))(KEY)
    mapped = jax.vmap(lambda k: init(k, shape))(jnp.stack([KEY, KEY]))
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_allclose(mapped[1], eager, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- transfer


def test_transfer_round_trip_sample_estimate_resample():
    n = 20000
    target = np.asarray(conv_filter_covariance(3, 1.0), np.float64) / 9
    first = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)(KEY, (3, 3, 1, n))
    estimate = filter_covariance(first)
    again = depthwise_conv_init(0, 1, sigma_start=9.0, sigma_end=9.0, covariance=estimate)(
        jax.random.key(1), (3, 3, 1, n)
    )
    assert np.all(np.abs(sample_covariance(again) - target) <= entry_tolerance(target, n, z=7.0))


def test_filter_covariance_matches_numpy_cov():
    w = jax.random.normal(KEY, (3, 3, 1, 50))
    np.testing.assert_allclose(filter_covariance(w), np.cov(np.asarray(w).reshape(9, 50)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        filter_covariance(w[:, 0], center=False),
        np.asarray(w[:, 0]).reshape(3, 50) @ np.asarray(w[:, 0]).reshape(3, 50).T / 50,
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize(("old", "new"), [(3, 7), (7, 3), (5, 9), ((5,), (3,))])
def test_resize_keeps_covariance_symmetric_psd(old, new):
    cov = conv_filter_covariance(old, 1.2)
    out = np.asarray(resize_covariance(cov, old, new), np.float64)
    size = (new,) * 2 if isinstance(new, int) else new
    assert out.shape == (math.prod(size),) * 2
    np.testing.assert_array_equal(out, out.T)
    assert np.linalg.eigvalsh(out).min() >= -1e-6 * np.abs(out).max()


def test_resize_to_same_size_is_identity():
    cov = conv_filter_covariance(5, 1.0)
    np.testing.assert_allclose(resize_covariance(cov, 5, 5), cov, rtol=1e-6)


def test_transfer_maps_layers_by_relative_depth():
    src = [conv_filter_covariance(3, s) for s in (0.5, 1.0, 2.0)]
    out = transfer_covariances(src, 5)
    for got, i in zip(out, [0, 0, 1, 2, 2]):  # round(l * 2 / 4) with round-half-even
        np.testing.assert_array_equal(got, src[i])
    assert [c.shape for c in transfer_covariances(src, 2, kernel_size=3, new_kernel_size=(5, 5))] == [(25, 25)] * 2


def test_transferred_covariances_drive_mimetic_conv(mixer):
    v = mixer
    src = transfer_covariances([conv_filter_covariance(3, 1.0)], 2, kernel_size=3, new_kernel_size=5)
    v2 = mimetic_conv(v, KEY, covariances=src)
    assert v2["params"]["block_1"]["depthwise"]["kernel"].shape == (5, 5, 1, 8)
    with pytest.raises(ValueError, match=r"one matrix per depthwise layer \(2\), got 1"):
        mimetic_conv(v, KEY, covariances=src[:1])


# --------------------------------------------------------------------------- whole-model transform


def test_mimetic_conv_changes_only_depthwise_kernels(mixer):
    v = mixer
    v2 = mimetic_conv(v, jax.random.key(1))
    flat, flat2 = jax.tree_util.tree_flatten_with_path(v)[0], dict(jax.tree_util.tree_flatten_with_path(v2)[0])
    changed = [jax.tree_util.keystr(p) for p, leaf in flat if not np.array_equal(leaf, flat2[p])]
    assert changed == [f"['params']['block_{i}']['depthwise']['kernel']" for i in range(2)]


def test_depthwise_found_by_name_not_single_channel_stem():
    v = jax.eval_shape(ConvMixer(10, width=8, depth=2, patch_size=2).init, KEY, jnp.zeros((1, 8, 8, 1)))
    assert [s.name for s in find_depthwise_convs(v)] == [f"params/block_{i}/depthwise/kernel" for i in range(2)]
    names = [s.name for s in find_depthwise_convs(v, include=None)]
    assert "params/stem/kernel" in names  # (2, 2, 1, 8): a depthwise shape, hence the name pattern
    convnext = jax.eval_shape(ConvNeXt(10, dims=(8, 16), depths=(1, 12)).init, KEY, jnp.zeros((1, 8, 8, 3)))
    order = [s.name.split("/")[1] for s in find_depthwise_convs(convnext)]
    assert order == ["stage_0_block_0"] + [f"stage_1_block_{i}" for i in range(12)]


def test_mimetic_conv_on_nnx_module_stacked_and_jit():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dwconv = nnx.Conv(16, 16, (3, 3), feature_group_count=16, rngs=rngs)

    net = Net(nnx.Rngs(0))
    out = mimetic_conv(net, KEY)
    assert out is net and net.dwconv.kernel[...].shape == (3, 3, 1, 16)
    stacked = {"layers": {"dwconv": {"kernel": jnp.zeros((4, 3, 3, 1, 16))}}}
    new = jax.jit(lambda k: mimetic_conv(stacked, k, stacked_axes=1))(KEY)
    eager = mimetic_conv(stacked, KEY, stacked_axes=1)
    w = new["layers"]["dwconv"]["kernel"]
    assert w.shape == (4, 3, 3, 1, 16) and not np.array_equal(w[0], w[1])
    np.testing.assert_allclose(w, eager["layers"]["dwconv"]["kernel"], rtol=1e-6)


def test_freeze_mask_keeps_depthwise_filters_fixed_in_training(mixer):
    import optax

    params = mixer["params"]
    mask = freeze_mask(params)
    assert mask["block_0"]["depthwise"]["kernel"] is True
    assert sum(jax.tree.leaves(mask)) == 2
    opt = optax.chain(optax.adamw(0.1, weight_decay=0.5), optax.masked(optax.set_to_zero(), mask))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(lambda g, p: opt.update(g, opt.init(p), p))(grads, params)
    assert float(jnp.abs(updates["block_0"]["depthwise"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(updates["block_0"]["pointwise"]["kernel"]).max()) > 0.0


# --------------------------------------------------------------------------- errors


def test_error_kernel_not_depthwise():
    init = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)
    with pytest.raises(ValueError, match=r"\(3, 3, 4, 8\) is not a depthwise kernel.*4 input features"):
        init(KEY, (3, 3, 4, 8))
    with pytest.raises(ValueError, match="rank 3 or 4"):
        init(KEY, (3, 8))
    with pytest.raises(ValueError, match="is not a depthwise kernel"):
        filter_covariance(jnp.zeros((3, 3, 2, 8)))


def test_error_covariance_size_mismatch():
    init = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=np.eye(9, dtype=np.float32))
    with pytest.raises(ValueError, match=r"covariance must have shape \(25, 25\) for this kernel, got \(9, 9\)"):
        init(KEY, (5, 5, 1, 4))
    with pytest.raises(ValueError, match="covariance must be a square matrix"):
        depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=np.ones((3, 4)))


def test_error_covariance_not_symmetric_psd():
    bad = np.eye(4, dtype=np.float32)
    bad[0, 1] = 0.5
    with pytest.raises(ValueError, match="must be symmetric"):
        depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=bad)
    neg = np.diag([1.0, 1.0, 1.0, -0.5]).astype(np.float32)
    with pytest.raises(ValueError, match="positive semi-definite, got smallest eigenvalue -0.5"):
        depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=neg)
    with pytest.raises(ValueError, match="positive semi-definite"):
        resize_covariance(neg, (2, 2), (3, 3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        conv_filter_covariance(3, 1.0, displacement=lambda d, s: -np.ones(d.shape[:-1]) + 2 * (d == 0).all(-1))


@pytest.mark.parametrize("name", ["sigma_start", "sigma_end"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_error_non_positive_sigma(name, value):
    kwargs = {"sigma_start": 1.0, "sigma_end": 1.0, name: value}
    with pytest.raises(ValueError, match=f"{name} must be positive, got {value}"):
        depthwise_conv_init(0, 2, **kwargs)
    with pytest.raises(ValueError, match="sigma must be positive"):
        conv_filter_covariance(3, value)


def test_error_integer_dtypes():
    init = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*int32"):
        init(KEY, (3, 3, 1, 4), jnp.int32)
    with pytest.raises(TypeError, match="covariance must be a floating array, got dtype int64"):
        depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0, covariance=np.eye(9, dtype=np.int64))
    with pytest.raises(TypeError, match="kernel dtype must be a floating dtype"):
        filter_covariance(jnp.zeros((3, 3, 1, 4), jnp.int32))


def test_error_bad_layer_and_empty_tree():
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, num_layers=3\), got 3"):
        depthwise_conv_init(3, 3, sigma_start=1.0, sigma_end=2.0)
    tree = {"dense": {"kernel": jnp.zeros((4, 4))}}
    with pytest.raises(ValueError, match="no depthwise conv kernel .* found.*'dense'"):
        mimetic_conv(tree, KEY)
    assert mimetic_conv(tree, KEY, allow_empty=True) is tree


def test_depthwise_conv_module_equals_grouped_nn_conv():
    from mimetic_jax.experiments.models import DepthwiseConv

    x = jax.random.normal(KEY, (2, 6, 7, 8))
    k = (4, 3)  # an even size checks SAME padding's extra tap at the end
    ours = DepthwiseConv(k)
    v = {"params": {"kernel": jax.random.normal(KEY, (4, 3, 1, 8)), "bias": jax.random.normal(KEY, (8,))}}
    ref = nn.Conv(8, k, feature_group_count=8, padding="SAME")
    np.testing.assert_allclose(jax.jit(ours.apply)(v, x), jax.jit(ref.apply)(v, x), rtol=1e-5, atol=1e-5)
    assert jax.eval_shape(ours.init, KEY, x)["params"]["kernel"].shape == (4, 3, 1, 8)


@pytest.mark.slow
def test_train_models_updates_batch_stats_and_keeps_frozen_filters():
    from mimetic_jax.experiments.tasks import Dataset
    from mimetic_jax.experiments.training import stack_trees, train_models

    rng = np.random.default_rng(0)
    data = Dataset(
        name="toy",
        x_train=rng.normal(size=(32, 4, 4, 1)).astype(np.float32),
        y_train=rng.integers(0, 3, 32).astype(np.int32),
        x_test=rng.normal(size=(8, 4, 4, 1)).astype(np.float32),
        y_test=rng.integers(0, 3, 8).astype(np.int32),
        num_classes=3,
    )
    model = ConvMixer(3, width=4, depth=1, kernel_size=3)
    v = init(model, data.x_train[:1])
    stack = stack_trees([v, mimetic_conv(v, KEY)])
    h = train_models(
        model.apply,
        stack,
        jnp.stack([KEY, KEY]),
        data,
        steps=3,
        learning_rate=0.1,
        batch_size=16,
        eval_steps=(3,),
        mutable=("batch_stats",),
        frozen=freeze_mask(v),
    )
    p = h.params
    np.testing.assert_array_equal(
        p["params"]["block_0"]["depthwise"]["kernel"], stack["params"]["block_0"]["depthwise"]["kernel"]
    )
    assert not np.array_equal(
        p["params"]["block_0"]["pointwise"]["kernel"], stack["params"]["block_0"]["pointwise"]["kernel"]
    )
    assert not np.array_equal(p["batch_stats"]["stem_bn"]["mean"], stack["batch_stats"]["stem_bn"]["mean"])


def test_nothing_found_names_the_kernels_of_the_right_shape_and_the_option_that_takes_them():
    class Grouped(nn.Module):  # a depthwise conv whose name the default pattern does not know
        @nn.compact
        def __call__(self, x):
            return nn.Conv(16, (3, 3), feature_group_count=16, name="grouped")(nn.Conv(16, (1, 1), name="stem")(x))

    params = Grouped().init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"other names: \['params/grouped/kernel'\]; include=None takes"):
        mimetic_conv(params, jax.random.key(1))
    assert mimetic_conv(params, jax.random.key(1), include=None)["params"]["grouped"]["kernel"].shape == (
        3,
        3,
        1,
        16,
    )
