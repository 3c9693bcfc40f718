"""mimetic_attention on real Flax models: linen, NNX (grouped heads), layouts, jit and sharding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mimetic_jax as mj


class Block(nn.Module):
    heads: int = 4

    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(nn.LayerNorm()(x))
        return x + nn.Dense(x.shape[-1], name="mlp")(nn.gelu(nn.Dense(2 * x.shape[-1])(nn.LayerNorm()(x))))


class TinyViT(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(64)(x) + mj.sincos_2d()(None, (16, 64))
        for i in range(2):
            x = Block(name=f"block_{i}")(x)
        return nn.Dense(10)(x.mean(axis=1))


def qk_diag(w_q, w_k):
    g = w_q.shape[1] // w_k.shape[1]
    p = jnp.einsum("ihk,jhk->hij", w_q, jnp.repeat(w_k, g, axis=1))
    return np.asarray(jnp.diagonal(p, axis1=1, axis2=2).mean(1))


def test_linen_vit_is_transformed_runs_forward_and_has_the_structure():
    x = jnp.ones((2, 16, 8))
    params = TinyViT().init(jax.random.key(0), x)
    new = mj.mimetic_attention(params, jax.random.key(1))
    assert TinyViT().apply(new, x).shape == (2, 10)
    flat_old, flat_new = traverse_util.flatten_dict(params), traverse_util.flatten_dict(new)
    changed = {p for p in flat_old if not np.array_equal(flat_old[p], flat_new[p])}
    assert changed == {
        ("params", f"block_{i}", "attn", n, "kernel") for i in range(2) for n in ("query", "key", "value", "out")
    }
    for i in range(2):
        a = new["params"][f"block_{i}"]["attn"]
        assert np.all(qk_diag(a["query"]["kernel"], a["key"]["kernel"]) > 0.3)
        vo = jnp.einsum("ihk,hkj->ij", a["value"]["kernel"], a["out"]["kernel"])
        assert float(jnp.diagonal(vo).mean()) < -0.3
        old = params["params"][f"block_{i}"]["attn"]
        assert abs(qk_diag(old["query"]["kernel"], old["key"]["kernel"]).mean()) < 0.1


def test_nnx_module_with_grouped_heads_is_updated_in_place():
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.MultiHeadAttention(8, 64, num_kv_heads=2, decode=False, rngs=rngs)

    m = Model(nnx.Rngs(0))
    out = mj.mimetic_attention(m, jax.random.key(1), method="fast")
    assert out is m
    diag = qk_diag(m.attn.query.kernel[...], m.attn.key.kernel[...])
    assert diag[0] > 0.1 and diag[4] > 0.1  # heads of the two groups (every head carries the identity)
    assert m.attn(jnp.ones((1, 5, 64))).shape == (1, 5, 64)


def test_nnx_state_is_returned_new_and_the_input_is_unchanged():
    m = nnx.MultiHeadAttention(4, 32, decode=False, rngs=nnx.Rngs(0))
    state = nnx.state(m, nnx.Param)
    before = np.asarray(state["query"]["kernel"][...])
    new = mj.mimetic_attention(state, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(state["query"]["kernel"][...]), before)
    assert not np.array_equal(np.asarray(new["query"]["kernel"][...]), before)


def test_hf_flat_layout_needs_num_heads_and_keeps_dtypes():
    class HF(nn.Module):
        @nn.compact
        def __call__(self, x):
            kw = dict(param_dtype=jnp.bfloat16)
            q, k, v = (nn.Dense(w, name=n, **kw)(x) for n, w in (("q_proj", 64), ("k_proj", 32), ("v_proj", 32)))
            return nn.Dense(64, name="o_proj", **kw)(q + jnp.tile(k + v, 2))

    params = HF().init(jax.random.key(0), jnp.ones((1, 64)))
    with pytest.raises(ValueError, match="num_heads"):
        mj.mimetic_attention(params, jax.random.key(1))
    new = mj.mimetic_attention(params, jax.random.key(1), num_heads=4)
    (block,) = mj.find_attention_blocks(params, num_heads=4)
    assert (block.num_heads, block.num_kv_heads, block.head_dim) == (4, 2, 16)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(lambda a: (a.shape, a.dtype), params)


def test_no_attention_block_is_an_error_unless_allowed():
    params = nn.Dense(4).init(jax.random.key(0), jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="no attention block"):
        mj.mimetic_attention(params, jax.random.key(0))
    assert mj.mimetic_attention(params, jax.random.key(0), allow_empty=True) is params


def test_stacked_layers_each_get_their_own_draw():
    params = {
        "attn": {
            "query": {"kernel": jnp.zeros((3, 32, 4, 8))},
            "key": {"kernel": jnp.zeros((3, 32, 4, 8))},
            "value": {"kernel": jnp.zeros((3, 32, 4, 8))},
            "out": {"kernel": jnp.zeros((3, 4, 8, 32))},
        }
    }
    new = mj.mimetic_attention(params, jax.random.key(0), stacked_axes=1)
    q = new["attn"]["query"]["kernel"]
    assert not np.allclose(q[0], q[1])
    assert all(np.all(qk_diag(q[i], new["attn"]["key"]["kernel"][i]) > 0.15) for i in range(3))  # k/d = 1/4


def test_query_key_only_keeps_value_and_out():
    params = nn.MultiHeadDotProductAttention(4).init(jax.random.key(0), jnp.ones((1, 4, 32)))
    new = mj.mimetic_attention(params, jax.random.key(1), value_output=False)
    np.testing.assert_array_equal(new["params"]["value"]["kernel"], params["params"]["value"]["kernel"])
    assert not np.array_equal(new["params"]["query"]["kernel"], params["params"]["query"]["kernel"])


def test_jit_with_out_shardings_creates_the_model_sharded_and_equal():
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    model, x = TinyViT(), jnp.ones((1, 16, 8))

    def create(k):
        return mj.mimetic_attention(model.init(k, x), jax.random.fold_in(k, 1))

    ref = create(jax.random.key(0))
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, P("x") if a.shape[0] % 8 == 0 else P()), ref)
    sharded = jax.jit(create, out_shardings=shardings)(jax.random.key(0))
    for a, b, s in zip(jax.tree.leaves(sharded), jax.tree.leaves(ref), jax.tree.leaves(shardings)):
        assert a.sharding.is_equivalent_to(s, a.ndim)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_fast_layer_batch_size_changes_no_bit(monkeypatch):
    # FAST_GROUP_ELEMENTS(_CPU) only sets how many layers one lax.map step draws (speed and transient
    # memory): one layer per step and every layer in one step give the same arrays.
    from mimetic_jax import attention

    params = TinyViT().init(jax.random.key(0), jnp.ones((2, 16, 8)))
    outs = []
    for budget in (1, 1 << 26):
        monkeypatch.setattr(attention, "FAST_GROUP_ELEMENTS", budget)
        monkeypatch.setattr(attention, "FAST_GROUP_ELEMENTS_CPU", budget)
        outs.append(mj.mimetic_attention(params, jax.random.key(1), method="fast"))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), *outs)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_blocks_drawn_together_equal_the_samplers_block_by_block(method):
    # Block i draws from fold_in(key, i), split into query/key and value/out keys, whether
    # blocks of equal shape are batched (fast) or looped (exact).
    x = jnp.ones((2, 16, 8))
    params = TinyViT().init(jax.random.key(0), x)
    key = jax.random.key(1)
    new = mj.mimetic_attention(params, key, method=method)
    for i in range(2):
        k_qk, k_vo = jax.random.split(jax.random.fold_in(key, i))
        a = new["params"][f"block_{i}"]["attn"]
        w_q, w_k = mj.query_key(k_qk, 64, 4, 16, method=method)
        w_v, w_o = mj.value_output(k_vo, 64, 4, 16, method=method)
        for got, want in zip((a["query"], a["key"], a["value"], a["out"]), (w_q, w_k, w_v, w_o)):
            np.testing.assert_allclose(got["kernel"], want, atol=2e-5)
