"""A small decoder-only transformer language model (GPT-style, pre-LayerNorm) in Flax linen.

Architecture: token embedding ``embedding`` ``N(0, 0.02²)`` plus a *learned* absolute
position embedding ``pos_embedding`` ``(max_len, d)``, ``N(0, 0.02²)`` (GPT-2's choices);
``depth`` causal pre-LayerNorm blocks ``block_{i}``, the ViT's
:class:`~mimetic_jax.experiments.models.EncoderBlock` with ``causal=True`` (so the attention
kernels sit at ``block_{i}/attn/{query,key,value,out}/kernel`` and the MLP at
``mlp_in``/``mlp_out``, where :func:`mimetic_jax.mimetic_attention` and
:func:`mimetic_jax.mimetic_mlp` find them); final LayerNorm ``ln_final``; an untied linear
``head`` to the vocabulary. Flax's default inits elsewhere (``lecun_normal`` kernels, zero
biases). Tokens ``(N, T)`` int → logits ``(N, T, vocab_size)``, ``T <= max_len``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = DecoderLM(vocab_size=20, width=32, depth=2, num_heads=4, max_len=16)
    >>> tokens = jnp.zeros((3, 16), jnp.int32)
    >>> variables = model.init(jax.random.key(0), tokens)
    >>> model.apply(variables, tokens).shape
    (3, 16, 20)
    >>> t2 = tokens.at[:, 10].set(5)  # causal: positions before 10 do not see the change
    >>> bool(jnp.allclose(model.apply(variables, t2)[:, :10], model.apply(variables, tokens)[:, :10]))
    True
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mimetic_jax.experiments.models.vit import EncoderBlock

__all__ = ["DecoderLM"]


class DecoderLM(nn.Module):
    """Decoder-only transformer LM: embeddings → ``depth`` causal pre-LN blocks → LayerNorm → head.

    Attributes:
        vocab_size: number of tokens.
        width: token width ``d`` (a multiple of ``num_heads``).
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width = ``mlp_ratio * width``.
        max_len: the longest sequence (rows of the position embedding).
        dtype: computation dtype (parameters stay float32).
    """

    vocab_size: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4
    max_len: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits ``(N, T, vocab_size)`` of tokens ``(N, T)``."""
        if self.num_heads <= 0 or self.width <= 0 or self.width % self.num_heads:
            raise ValueError(f"num_heads must be positive and divide width={self.width}, got {self.num_heads}")
        if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must be (N, T) with T <= max_len={self.max_len}, got shape {tokens.shape}")
        init = nn.initializers.normal(0.02)
        x = nn.Embed(self.vocab_size, self.width, embedding_init=init, name="embedding")(tokens)
        pos = self.param("pos_embedding", init, (self.max_len, self.width))
        x = (x + pos[: tokens.shape[1]]).astype(self.dtype)
        mlp_dim = int(round(self.mlp_ratio * self.width))
        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, mlp_dim, dtype=self.dtype, causal=True, name=f"block_{i}")(x)
        x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
        return nn.Dense(self.vocab_size, dtype=self.dtype, name="head")(x).astype(jnp.float32)
