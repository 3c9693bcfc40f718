"""Tests of the decoder-only transformer (mimetic_jax.experiments.models.DecoderLM) and the causal block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimetic_jax import mimetic_attention, mimetic_mlp
from mimetic_jax.experiments.models import DecoderLM, EncoderBlock, query_key_products

MODEL = DecoderLM(vocab_size=11, width=16, depth=2, num_heads=2, max_len=12)


@pytest.fixture(scope="module")
def variables():
    return MODEL.init(jax.random.key(0), jnp.zeros((1, 12), jnp.int32))


def test_a_position_sees_no_later_token(variables):
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 11)
    logits = MODEL.apply(variables, tokens)
    assert logits.shape == (2, 12, 11) and logits.dtype == jnp.float32
    changed = MODEL.apply(variables, tokens.at[:, 7].set((tokens[:, 7] + 1) % 11))
    np.testing.assert_allclose(changed[:, :7], logits[:, :7], rtol=1e-6, atol=1e-6)
    assert not np.allclose(changed[:, 7:], logits[:, 7:])


def test_the_encoder_block_is_bidirectional_unless_causal():
    x = jax.random.normal(jax.random.key(2), (1, 6, 8))
    for causal, leaks in ((False, True), (True, False)):
        block = EncoderBlock(num_heads=2, mlp_dim=16, causal=causal)
        v = block.init(jax.random.key(3), x)
        y, y2 = block.apply(v, x), block.apply(v, x.at[:, -1].set(jax.random.normal(jax.random.key(5), (8,))))
        assert (not np.allclose(y[:, 0], y2[:, 0])) == leaks


def test_mimetic_attention_and_mlp_find_the_decoder_blocks(variables):
    mimetic = mimetic_attention(variables, jax.random.key(4), method="exact")
    qk0, qk1 = query_key_products(variables), query_key_products(mimetic)
    assert len(qk1) == 2
    # mimetic: W_q W_k^T has a clearly positive diagonal; the default draw's is about zero
    assert all(float(jnp.mean(jnp.diagonal(p, axis1=-2, axis2=-1))) > 0.2 for p in qk1)
    assert all(abs(float(jnp.mean(jnp.diagonal(p, axis1=-2, axis2=-1)))) < 0.2 for p in qk0)
    shifted = mimetic_mlp(variables, mean=0.5)
    w0 = variables["params"]["block_0"]["mlp_in"]["kernel"]
    w1 = shifted["params"]["block_0"]["mlp_in"]["kernel"]
    assert float((w1 - w0).mean() / w0.std()) == pytest.approx(0.5, rel=1e-4)


def test_bad_sizes_are_value_errors_naming_the_attribute():
    with pytest.raises(ValueError, match="num_heads"):
        DecoderLM(vocab_size=5, width=10, num_heads=3).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="max_len"):
        MODEL.init(jax.random.key(0), jnp.zeros((1, 13), jnp.int32))
