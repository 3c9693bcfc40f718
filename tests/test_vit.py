"""Tests of mimetic_jax.experiments.models.vit: the reference Vision Transformer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mimetic_jax.experiments.models import ViT, query_key_products, value_output_products

# Compiling is what costs time on CPU: one jitted init and apply serve most tests, and
# shape-only checks trace with jax.eval_shape (no compilation).


@pytest.fixture(scope="module")
def small():
    model = ViT(num_classes=10, width=32, depth=2, num_heads=4)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    return model, jax.jit(model.init)(jax.random.key(0), x), x


@pytest.fixture(scope="module")
def apply(small):
    return jax.jit(small[0].apply)


def test_forward_shape(small, apply):
    _, variables, x = small
    logits = apply(variables, x)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_one_row_images_with_row_patches():
    model = ViT(num_classes=10, width=16, depth=1, num_heads=2, patch_size=(1, 4))
    x = jnp.ones((2, 1, 40, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)
    assert variables["params"]["patch_embed"]["kernel"].shape == (1, 4, 1, 16)


def test_reduced_precision_dtype():
    model = ViT(num_classes=10, width=16, depth=1, num_heads=2, dtype=jnp.bfloat16)
    x = jnp.ones((2, 8, 8, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert variables["params"]["block_0"]["attn"]["query"]["kernel"].dtype == jnp.float32
    assert jax.eval_shape(model.apply, variables, x).dtype == jnp.bfloat16


def test_parameter_names_and_attention_layout(small):
    _, variables, _ = small
    assert set(variables) == {"params"}
    paths = {"/".join(p): v.shape for p, v in traverse_util.flatten_dict(variables["params"]).items()}
    assert paths["block_0/attn/query/kernel"] == (32, 4, 8)  # (d, H, k)
    assert paths["block_0/attn/key/kernel"] == (32, 4, 8)
    assert paths["block_0/attn/value/kernel"] == (32, 4, 8)
    assert paths["block_1/attn/out/kernel"] == (4, 8, 32)  # (H, k, d)
    assert paths["block_1/mlp_in/kernel"] == (32, 64)  # mlp_ratio 2
    assert paths["block_1/mlp_out/kernel"] == (64, 32)
    assert paths["patch_embed/kernel"] == (2, 2, 1, 32)
    assert paths["head/kernel"] == (32, 10)
    assert {p.split("/")[0] for p in paths} == {"patch_embed", "block_0", "block_1", "ln_final", "head"}


def test_position_embedding_is_fixed_not_a_parameter(small, apply):
    _, variables, x = small
    leaves = traverse_util.flatten_dict(variables["params"])
    assert not any("pos" in "/".join(p) for p in leaves)
    # 16 patch tokens x 32 widths would be a parameter of 512 entries; there is none.
    assert all(v.shape != (16, 32) and v.shape[-2:] != (16, 32) for v in leaves.values())
    # Without a position signal, a ViT with average pooling is invariant to permuting the
    # patches; with the fixed sin-cos embedding it is not.
    patches = x.reshape(3, 4, 2, 4, 2, 1).transpose(0, 1, 3, 2, 4, 5)  # (N, gh, gw, ph, pw, C)
    swapped = patches[:, ::-1, ::-1].transpose(0, 1, 3, 2, 4, 5).reshape(x.shape)
    assert not np.allclose(apply(variables, x), apply(variables, swapped), atol=1e-4)


def test_query_key_products(small):
    _, variables, _ = small
    products = query_key_products(variables)
    assert [p.shape for p in products] == [(4, 32, 32), (4, 32, 32)]
    attn = variables["params"]["block_1"]["attn"]
    w_q, w_k = attn["query"]["kernel"][:, 2], attn["key"]["kernel"][:, 2]
    np.testing.assert_allclose(products[1][2], w_q @ w_k.T, rtol=1e-5, atol=1e-6)
    # Works on the bare ``params`` collection too.
    np.testing.assert_array_equal(query_key_products(variables["params"])[0], products[0])


def test_value_output_products(small):
    _, variables, _ = small
    products = value_output_products(variables)
    attn = variables["params"]["block_0"]["attn"]
    expected = attn["value"]["kernel"].reshape(32, 32) @ attn["out"]["kernel"].reshape(32, 32)
    assert [p.shape for p in products] == [(32, 32), (32, 32)]
    np.testing.assert_allclose(products[0], expected, rtol=1e-5, atol=1e-6)


def test_blocks_in_natural_order():
    def block(value: float):
        kernel = jnp.full((4, 1, 4), value)
        return {
            "attn": {n: {"kernel": kernel} for n in ("query", "key", "value")}
            | {"out": {"kernel": jnp.full((1, 4, 4), value)}}
        }

    params = {"params": {f"block_{i}": block(float(i)) for i in (10, 2, 0)}}
    firsts = [float(p[0, 0, 0]) for p in query_key_products(params)]
    assert firsts == [0.0, 4 * 2.0**2, 4 * 10.0**2]


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({"width": 30, "num_heads": 3}, (1, 8, 8, 1), "width"),
        ({"width": 32, "num_heads": 3}, (1, 8, 8, 1), "num_heads"),
        ({"patch_size": (3, 3)}, (1, 8, 8, 1), "patch_size"),
        ({}, (8, 8, 1), "x must be images"),
    ],
)
def test_bad_configuration(kwargs, shape, match):
    model = ViT(num_classes=10, depth=1, **kwargs)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
