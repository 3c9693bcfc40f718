r"""Drop-in attention modules that start mimetic: change one line of a Flax model.

* :class:`MultiHeadDotProductAttention` — Flax linen's ``nn.MultiHeadDotProductAttention``
  with the same fields, parameters and call signature; at ``init`` its query/key/value/out
  kernels are re-drawn by :func:`~mimetic_jax.mimetic_attention` from the module's own
  ``params`` stream, so it works as a model's submodule, under ``nn.scan`` and inside
  ``jax.jit``.
* :class:`MultiHeadAttention` — the same for ``nnx.MultiHeadAttention``: built as Flax
  builds it, then re-drawn in place from ``rngs.params()``.

Both add the options of :func:`~mimetic_jax.mimetic_attention` as keyword fields
(``alpha``, ``beta``, ``value_alpha``, ``value_beta``, ``sign``, ``method``,
``rotate_heads``), with its defaults: the published recipe
(Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers", ICML 2023),

.. math::

    W_q^h W_k^{h\top} \approx \alpha Z_h + \beta I,\qquad
    W_v W_o \approx \alpha_v Z + \sigma \beta_v I .

A model that swaps ``nn.MultiHeadDotProductAttention`` for
``mimetic_jax.nn.MultiHeadDotProductAttention`` has the same parameter tree (same paths,
shapes and dtypes) and the same forward function; only the initial values differ.
Biases keep Flax's initialization.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from mimetic_jax import nn as mnn
  >>> attn = mnn.MultiHeadDotProductAttention(num_heads=4)
  >>> x = jnp.ones((1, 16, 64))
  >>> params = attn.init(jax.random.key(0), x)
  >>> w_q, w_k = params["params"]["query"]["kernel"], params["params"]["key"]["kernel"]
  >>> float(jnp.einsum("ik,ik->", w_q[:, 0], w_k[:, 0]) / 64) > 0.3
  True
  >>> attn.apply(params, x).shape
  (1, 16, 64)
"""

from __future__ import annotations

from typing import Any

import flax.linen as linen
from flax import nnx

from mimetic_jax.attention import FLAX, mimetic_attention

__all__ = ["MultiHeadAttention", "MultiHeadDotProductAttention"]

_PARTS = ("query", "key", "value", "out")


class MultiHeadDotProductAttention(linen.MultiHeadDotProductAttention):
    """``flax.linen.MultiHeadDotProductAttention`` whose kernels start mimetic.

    Fields: those of Flax's module, plus the options of
    :func:`~mimetic_jax.mimetic_attention` (``alpha`` … ``rotate_heads``). At ``init``
    the four kernels are drawn from ``self.make_rng("params")``; ``apply`` is Flax's.
    """

    alpha: float = 0.7
    beta: float = 0.7
    value_alpha: float = 0.4
    value_beta: float = 0.4
    sign: int = -1
    method: str = "exact"
    rotate_heads: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(*args, **kwargs)
        if self.is_initializing() and self.is_mutable_collection("params"):
            params = self.variables["params"]
            own = {n: dict(params[n]) for n in _PARTS}
            new = mimetic_attention(
                own,
                self.make_rng("params"),
                layouts=[FLAX],
                alpha=self.alpha,
                beta=self.beta,
                value_alpha=self.value_alpha,
                value_beta=self.value_beta,
                sign=self.sign,
                method=self.method,
                rotate_heads=self.rotate_heads,
            )
            for n in _PARTS:
                self.put_variable("params", n, new[n])
        return out


class MultiHeadAttention(nnx.MultiHeadAttention):
    """``flax.nnx.MultiHeadAttention`` whose kernels start mimetic.

    Takes the arguments of Flax's module, plus the keyword options of
    :func:`~mimetic_jax.mimetic_attention` (``alpha`` … ``rotate_heads``). The module is
    built by Flax, then its four kernels are re-drawn in place from ``rngs.params()``.
    """

    def __init__(
        self,
        *args: Any,
        rngs: nnx.Rngs,
        alpha: float = 0.7,
        beta: float = 0.7,
        value_alpha: float = 0.4,
        value_beta: float = 0.4,
        sign: int = -1,
        method: str = "exact",
        rotate_heads: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, rngs=rngs, **kwargs)
        mimetic_attention(
            self,
            rngs.params(),
            layouts=[FLAX],
            alpha=alpha,
            beta=beta,
            value_alpha=value_alpha,
            value_beta=value_beta,
            sign=sign,
            method=method,
            rotate_heads=rotate_heads,
        )
