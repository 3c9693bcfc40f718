"""A small Vision Transformer in Flax linen, the reference model for mimetic init.

Architecture (the one the mimetic-init paper tests, scaled down):

- patch embedding: ``nn.Conv`` with kernel size = stride = ``patch_size``;
- a *fixed* 2-D sin-cos position embedding added to the patch tokens: a constant
  computed in the forward pass from :func:`mimetic_jax.attention.sincos_2d`, not a
  parameter (Trockman & Kolter 2023: the benefit of mimetic init comes through smooth additive
  position embeddings);
- ``depth`` pre-LayerNorm blocks ``block_{i}``: ``ln_attn`` → ``attn``
  (``nn.MultiHeadDotProductAttention``, whose kernels are ``query``/``key``/``value``
  ``(d, H, k)`` and ``out`` ``(H, k, d)``) → residual, ``ln_mlp`` → ``mlp_in`` → gelu →
  ``mlp_out`` → residual;
- final LayerNorm ``ln_final``, global average pooling over tokens (no class token),
  linear ``head``.

The parameter names are part of the interface: :mod:`mimetic_jax.attention` finds the
attention blocks by the ``attn/{query,key,value,out}/kernel`` paths.

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = ViT(num_classes=10, width=32, depth=2, num_heads=2)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    >>> model.apply(variables, jnp.zeros((5, 8, 8, 1))).shape
    (5, 10)
    >>> [p.shape for p in query_key_products(variables)]
    [(2, 32, 32), (2, 32, 32)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from mimetic_jax.attention import sincos_2d

__all__ = ["EncoderBlock", "ViT", "query_key_products", "value_output_products"]

Dtype = Any


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``.

    Attributes:
        num_heads: number of attention heads ``H``; the head size is ``width / H``.
        mlp_dim: hidden width of the MLP.
        dtype: computation dtype (parameters stay float32).
        causal: token ``t`` attends to tokens ``<= t`` only (a decoder block, as in
            :class:`~mimetic_jax.experiments.models.DecoderLM`).
    """

    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32
    causal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Map tokens ``(N, T, d)`` to tokens ``(N, T, d)``."""
        y = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(x)
        mask = nn.make_causal_mask(x[..., 0]) if self.causal else None
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype, name="attn")(y, mask=mask)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(y)
        y = nn.gelu(y)
        y = nn.Dense(x.shape[-1], dtype=self.dtype, name="mlp_out")(y)
        return x + y


def _check_config(width: int, num_heads: int, depth: int, patch_size: tuple[int, ...], mlp_ratio: float) -> None:
    """Raise a ValueError naming the first bad ViT attribute."""
    if width <= 0 or width % 4:
        raise ValueError(f"width must be a positive multiple of 4 (2-D sin-cos embedding), got {width}")
    if num_heads <= 0 or width % num_heads:
        raise ValueError(f"num_heads must be positive and divide width={width}, got {num_heads}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if len(patch_size) != 2 or min(patch_size) <= 0:
        raise ValueError(f"patch_size must be two positive integers, got {patch_size!r}")
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")


class ViT(nn.Module):
    """Vision Transformer with fixed 2-D sin-cos position embedding and average pooling.

    Attributes:
        num_classes: number of output logits.
        width: token width ``d`` (a multiple of 4 and of ``num_heads``).
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width = ``mlp_ratio * width``.
        patch_size: ``(ph, pw)``; image height and width must be multiples of it.
        dtype: computation dtype (parameters stay float32).

    Call with images ``(N, H, W, C)``; returns logits ``(N, num_classes)``.
    """

    num_classes: int
    width: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2
    patch_size: tuple[int, int] = (2, 2)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(N, num_classes)`` of images ``x`` of shape ``(N, H, W, C)``."""
        patch = tuple(int(p) for p in self.patch_size)
        _check_config(self.width, self.num_heads, self.depth, patch, self.mlp_ratio)
        if x.ndim != 4:
            raise ValueError(f"x must be images (N, H, W, C), got shape {x.shape}")
        if x.shape[1] % patch[0] or x.shape[2] % patch[1]:
            raise ValueError(f"patch_size={patch} must divide the image size {x.shape[1:3]}")
        x = x.astype(self.dtype)
        x = nn.Conv(
            self.width, kernel_size=patch, strides=patch, padding="VALID", dtype=self.dtype, name="patch_embed"
        )(x)
        n, gh, gw, d = x.shape
        pos = sincos_2d((gh, gw))(jax.random.key(0), (gh * gw, d), self.dtype)
        x = x.reshape(n, gh * gw, d) + pos.astype(self.dtype)
        mlp_dim = int(round(self.mlp_ratio * self.width))
        for i in range(self.depth):
            x = EncoderBlock(self.num_heads, mlp_dim, dtype=self.dtype, name=f"block_{i}")(x)
        x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
        x = x.mean(axis=1)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)


def _natural_key(path: tuple[str, ...]) -> tuple:
    """Sort key that orders ``block_2`` before ``block_10``."""
    return tuple(int(t) if t.isdigit() else t for part in path for t in re.split(r"(\d+)", str(part)))


def _attention_kernels(params: Mapping[str, Any]) -> list[dict[str, jax.Array]]:
    """The ``{query, key, value, out}`` kernels of every attention block, in block order.

    Accepts a linen variables dict (``{"params": ...}``) or the ``params`` collection.
    """
    tree = params["params"] if "params" in params else params
    flat: dict[tuple[str, ...], Any] = traverse_util.flatten_dict(tree)
    prefixes = sorted((path[:-2] for path in flat if path[-2:] == ("query", "kernel")), key=_natural_key)
    return [{name: flat[prefix + (name, "kernel")] for name in ("query", "key", "value", "out")} for prefix in prefixes]


def query_key_products(params: Mapping[str, Any]) -> list[jax.Array]:
    """Per layer, the per-head products ``W_q^h W_k^hT`` as an array ``(H, d, d)``.

    With Flax's ``(d, H, k)`` query and key kernels, head ``h`` computes the attention
    logits ``x W_q^h (y W_k^h)ᵀ / sqrt(k)``, so ``W_q^h W_k^hT`` is the bilinear form the
    mimetic init makes close to ``α Z + β I`` (Trockman & Kolter 2023). Computed in float32.

    Args:
        params: variables dict or ``params`` collection of a model whose attention
            blocks are named like the ones of :class:`ViT`.

    Returns:
        one ``(H, d, d)`` array per attention block, in block order.
    """
    return [
        jnp.einsum("dhk,ehk->hde", k["query"].astype(jnp.float32), k["key"].astype(jnp.float32))
        for k in _attention_kernels(params)
    ]


def value_output_products(params: Mapping[str, Any]) -> list[jax.Array]:
    """Per layer, the summed value/out product ``W_v W_o`` as an array ``(d, d)``.

    ``W_v`` ``(d, H, k)`` and ``W_o`` ``(H, k, d)`` contract over heads and head size, which
    is the map the attention output applies to the values (Trockman & Kolter 2023: mimetic init makes it
    close to ``α Z − β I``). Computed in float32.
    """
    return [
        jnp.einsum("dhk,hke->de", k["value"].astype(jnp.float32), k["out"].astype(jnp.float32))
        for k in _attention_kernels(params)
    ]
