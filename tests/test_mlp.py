"""The mimetic MLP mean shift: statistics, relative to the std, the LayerNorm/BatchNorm/RMSNorm property, transform, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimetic_jax import find_mlp_layers, mean_shift_init, mimetic_mlp
from mimetic_jax.experiments.models import ConvMixer, ConvNeXt, ConvNeXtBlock, ViT

KEY = jax.random.key(0)


def init(model, x):
    """Jitted ``model.init`` (eager linen init is slow on a busy CPU)."""
    return jax.jit(model.init)(KEY, x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_absolute_mean_and_std_as_asked(dtype):
    d_in, d_out, mean = 256, 512, 0.05
    w = mean_shift_init(mean, relative=False)(KEY, (d_in, d_out), dtype).astype(jnp.float32)
    n = w.size
    std = 1 / math.sqrt(d_in)  # lecun_normal
    assert float(w.mean()) == pytest.approx(mean, abs=5 * std / math.sqrt(n) + 1e-3 * (dtype == jnp.bfloat16))
    assert float(w.std()) == pytest.approx(std, rel=5 * math.sqrt(1 / (2 * n)) + 0.01 * (dtype == jnp.bfloat16))


@pytest.mark.parametrize("d_in", [32, 4096])
def test_relative_mean_is_the_same_fraction_of_the_std_at_every_width(d_in):
    w = mean_shift_init(0.1)(KEY, (d_in, 64))
    base = jax.nn.initializers.lecun_normal()(KEY, (d_in, 64))
    np.testing.assert_allclose(w - base, 0.1 * float(base.std()), rtol=1e-4)
    # the draw's own std is kept; its mean is 0.1 std, up to the sample mean of the base (5 sigma)
    std = 1 / math.sqrt(d_in)
    assert float(w.mean()) == pytest.approx(0.1 * std, abs=5 * std / math.sqrt(w.size))


def test_base_initializer_is_used():
    w = mean_shift_init(-0.5, base=jax.nn.initializers.zeros, relative=False)(KEY, (4, 1, 1, 8))
    np.testing.assert_array_equal(w, -0.5 * np.ones((4, 1, 1, 8)))
    base = jax.nn.initializers.normal(0.02)
    np.testing.assert_allclose(
        mean_shift_init(0.1, base, relative=False)(KEY, (8, 8)), base(KEY, (8, 8)) + 0.1, rtol=1e-6
    )
    b = base(KEY, (8, 8))
    np.testing.assert_allclose(mean_shift_init(0.1, base)(KEY, (8, 8)), b + 0.1 * b.std(), rtol=1e-6)


def test_layernorm_hides_mean_shift_at_init_vit():
    x = jax.random.normal(KEY, (4, 8, 8, 1))
    model = ViT(10, width=32, depth=1, num_heads=2)
    v = init(model, x)
    shifted = mimetic_mlp(v, mean=0.3)
    assert not np.array_equal(
        shifted["params"]["block_0"]["mlp_in"]["kernel"], v["params"]["block_0"]["mlp_in"]["kernel"]
    )
    np.testing.assert_allclose(*(jax.jit(model.apply)(t, x) for t in (shifted, v)), atol=2e-4, rtol=1e-4)


def test_layernorm_hides_mean_shift_at_init_convnext_block():
    x = jax.random.normal(KEY, (2, 6, 6, 16))
    model = ConvNeXtBlock(layer_scale=1.0)
    v = init(model, x)
    np.testing.assert_allclose(
        *(jax.jit(model.apply)(t, x) for t in (mimetic_mlp(v, mean=0.3), v)), atol=2e-4, rtol=1e-4
    )


def test_batchnorm_lets_mean_shift_act_at_init_convmixer():
    x = jax.random.normal(KEY, (4, 8, 8, 1))
    model = ConvMixer(10, width=16, depth=2)
    v = init(model, x)
    shifted = mimetic_mlp(v, mean=0.3)
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    for train in (False, True):
        kw = {"train": True, "mutable": ("batch_stats",)} if train else {}
        a, b = (apply(t, x, **kw) for t in (v, shifted))
        a, b = (a[0], b[0]) if train else (a, b)
        assert float(jnp.abs(a - b).max()) > 1e-2


def test_rmsnorm_lets_mean_shift_act_at_init():
    # RMSNorm scales without centering: the normalized features do not sum to zero
    h = jax.random.normal(KEY, (4, 32)) + 0.5
    x = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + 1e-6)
    w = {"mlp_in": {"kernel": jax.nn.initializers.lecun_normal()(KEY, (32, 64))}}
    shifted = mimetic_mlp(w, mean=0.3)["mlp_in"]["kernel"]
    expected = 0.3 * float(w["mlp_in"]["kernel"].std()) * x.sum(-1, keepdims=True)
    np.testing.assert_allclose(x @ shifted - x @ w["mlp_in"]["kernel"], jnp.broadcast_to(expected, (4, 64)), rtol=1e-4)
    assert float(jnp.abs(expected).min()) > 0.1


def test_stacked_kernels_are_shifted_by_their_own_std():
    k = jnp.stack([jnp.full((4, 8), 0.0).at[0].set(1.0), jnp.full((4, 8), 0.0).at[0].set(3.0)])
    out = mimetic_mlp({"mlp_in": {"kernel": k}}, mean=0.5, stacked_axes=1)["mlp_in"]["kernel"]
    np.testing.assert_allclose(
        out - k, 0.5 * np.std(np.asarray(k), axis=(1, 2), keepdims=True) * np.ones_like(k), rtol=1e-6
    )


def test_transform_finds_first_mlp_layers_and_adds_mean():
    vit = init(ViT(10, width=16, depth=2, num_heads=2), jnp.zeros((1, 8, 8, 1)))
    mixer = init(ConvMixer(10, width=8, depth=2), jnp.zeros((1, 8, 8, 1)))
    convnext = jax.eval_shape(ConvNeXt(10, dims=(8,), depths=(2,)).init, KEY, jnp.zeros((1, 8, 8, 3)))
    assert [s.name for s in find_mlp_layers(vit)] == [f"params/block_{i}/mlp_in/kernel" for i in range(2)]
    assert [s.name for s in find_mlp_layers(mixer)] == [f"params/block_{i}/pointwise/kernel" for i in range(2)]
    assert [s.name for s in find_mlp_layers(convnext)] == [f"params/stage_0_block_{i}/pwconv1/kernel" for i in range(2)]
    shifted = mimetic_mlp(mixer, mean=-0.1, relative=False)
    diff = shifted["params"]["block_1"]["pointwise"]["kernel"] - mixer["params"]["block_1"]["pointwise"]["kernel"]
    np.testing.assert_allclose(diff, -0.1, atol=1e-6)
    rel = mimetic_mlp(mixer, mean=-0.1)["params"]["block_1"]["pointwise"]["kernel"]
    base = mixer["params"]["block_1"]["pointwise"]["kernel"]
    np.testing.assert_allclose(rel - base, -0.1 * float(base.std()), rtol=1e-4)
    np.testing.assert_array_equal(shifted["params"]["head"]["kernel"], mixer["params"]["head"]["kernel"])
    bf = jax.tree.map(lambda a: a.astype(jnp.bfloat16), vit)
    assert mimetic_mlp(bf, mean=0.1)["params"]["block_0"]["mlp_in"]["kernel"].dtype == jnp.bfloat16


def test_errors_bad_mean_base_dtype_and_empty_tree():
    with pytest.raises(ValueError, match="mean must be finite, got nan"):
        mean_shift_init(float("nan"))
    with pytest.raises(TypeError, match="mean must be a real number"):
        mean_shift_init("0.1")
    with pytest.raises(TypeError, match="base must be an initializer"):
        mean_shift_init(0.1, base=3)
    with pytest.raises(TypeError, match="relative must be True or False, got 'yes'"):
        mean_shift_init(0.1, relative="yes")
    with pytest.raises(TypeError, match="relative must be True or False, got 1"):
        mimetic_mlp({"params": {"mlp_in": {"kernel": jnp.zeros((4, 4))}}}, relative=1)
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*int32"):
        mean_shift_init(0.1)(KEY, (4, 4), jnp.int32)
    with pytest.raises(TypeError, match="kernel params/mlp_in/kernel dtype must be a floating dtype"):
        mimetic_mlp({"params": {"mlp_in": {"kernel": jnp.zeros((4, 4), jnp.int32)}}})
    tree = {"conv": {"kernel": jnp.zeros((3, 3, 4, 4))}}
    with pytest.raises(ValueError, match="no first MLP layer .* found"):
        mimetic_mlp(tree)
    assert mimetic_mlp(tree, allow_empty=True) is tree
