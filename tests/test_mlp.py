"""The mimetic MLP mean shift (SPEC §3): statistics, the LayerNorm/BatchNorm property, transform, errors."""

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
def test_mean_and_std_as_asked(dtype):
    d_in, d_out, mean = 256, 512, 0.05
    w = mean_shift_init(mean)(KEY, (d_in, d_out), dtype).astype(jnp.float32)
    n = w.size
    std = 1 / math.sqrt(d_in)  # lecun_normal
    assert float(w.mean()) == pytest.approx(mean, abs=5 * std / math.sqrt(n) + 1e-3 * (dtype == jnp.bfloat16))
    assert float(w.std()) == pytest.approx(std, rel=5 * math.sqrt(1 / (2 * n)) + 0.01 * (dtype == jnp.bfloat16))


def test_base_initializer_is_used():
    w = mean_shift_init(-0.5, base=jax.nn.initializers.zeros)(KEY, (4, 1, 1, 8))
    np.testing.assert_array_equal(w, -0.5 * np.ones((4, 1, 1, 8)))
    base = jax.nn.initializers.normal(0.02)
    np.testing.assert_allclose(mean_shift_init(0.1, base)(KEY, (8, 8)), base(KEY, (8, 8)) + 0.1, rtol=1e-6)


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


def test_transform_finds_first_mlp_layers_and_adds_mean():
    vit = init(ViT(10, width=16, depth=2, num_heads=2), jnp.zeros((1, 8, 8, 1)))
    mixer = init(ConvMixer(10, width=8, depth=2), jnp.zeros((1, 8, 8, 1)))
    convnext = jax.eval_shape(ConvNeXt(10, dims=(8,), depths=(2,)).init, KEY, jnp.zeros((1, 8, 8, 3)))
    assert [s.name for s in find_mlp_layers(vit)] == [f"params/block_{i}/mlp_in/kernel" for i in range(2)]
    assert [s.name for s in find_mlp_layers(mixer)] == [f"params/block_{i}/pointwise/kernel" for i in range(2)]
    assert [s.name for s in find_mlp_layers(convnext)] == [f"params/stage_0_block_{i}/pwconv1/kernel" for i in range(2)]
    shifted = mimetic_mlp(mixer, mean=-0.1)
    diff = shifted["params"]["block_1"]["pointwise"]["kernel"] - mixer["params"]["block_1"]["pointwise"]["kernel"]
    np.testing.assert_allclose(diff, -0.1, atol=1e-6)
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
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*int32"):
        mean_shift_init(0.1)(KEY, (4, 4), jnp.int32)
    with pytest.raises(TypeError, match="kernel params/mlp_in/kernel dtype must be a floating dtype"):
        mimetic_mlp({"params": {"mlp_in": {"kernel": jnp.zeros((4, 4), jnp.int32)}}})
    tree = {"conv": {"kernel": jnp.zeros((3, 3, 4, 4))}}
    with pytest.raises(ValueError, match="no first MLP layer .* found"):
        mimetic_mlp(tree)
    assert mimetic_mlp(tree, allow_empty=True) is tree
