r"""Mimetic mean shift of an MLP's first layer (Trockman & Kolter, "Mimetic Initialization of MLPs").

Reference: A. Trockman and J. Z. Kolter, "Mimetic Initialization of MLPs",
arXiv:2602.07156.

Known (Trockman & Kolter, arXiv 2602.07156): giving the first MLP layer ``W1`` a nonzero mean gives a small but real
speed-up (CIFAR-10, ImageNet-1k), strongest early in training, additive with the
attention and conv schemes. **Ours**: the value of the mean, its sign and whether it is
relative to the std are not available to us. Here the mean is an absolute value added
to every entry of the base draw,

.. math::  W_1 = W_{base} + m\,\mathbf{1}\mathbf{1}^\top,

and its default (in :func:`mimetic_jax.mimetic_mlp`) comes from our benchmark
(``benchmarks/conv_training.py``).

**LayerNorm versus BatchNorm.** After a LayerNorm with unit scale and zero shift the
normalized input ``x̂`` sums to zero along the features, so ``x̂ W_1 = x̂ W_{base} +
m (Σ_i x̂_i) 1ᵀ = x̂ W_{base}``: the mean shift has *no effect on the forward pass at
init* (a pre-LN transformer's MLP, a ConvNeXt block); it acts only through training
(the gradients and the learned LayerNorm scale/shift). After a BatchNorm (ConvMixer's
pointwise convs read a residual sum of BatchNorm outputs) the features of one example
do not sum to zero, and the mean shift changes the output at once. Both are tested in
``tests/test_mlp.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax.attention import constrain

Array = jax.Array
Initializer = Callable[..., Array]


def mean_shift_init(mean: float, base: Initializer = jax.nn.initializers.lecun_normal()) -> Initializer:
    r"""Initializer ``base(key, shape) + mean`` for an MLP's first layer (Trockman & Kolter, arXiv 2602.07156).

    Any kernel shape ``base`` accepts (``(d_in, d_hidden)`` for ``nn.Dense``,
    ``(1, 1, C_in, C_out)`` for a pointwise conv). The draw is made in float32, the mean
    added, then cast to ``dtype``: the entries have mean ``mean`` and the std of
    ``base``. After a unit-scale LayerNorm this does not change the forward pass at init
    (see the module docstring); after BatchNorm it does.

    Checked (``ValueError``/``TypeError`` naming the argument): ``mean`` finite and
    ``base`` callable here; at ``init`` the key (a typed key or a raw ``uint32[2]``), the
    shape (rank 2 to 5, bounded size), the dtype, and ``mean`` finite in that dtype
    (``float16`` tops at 65504; ``base``'s own draw adds to it).

    Example:
      >>> import flax.linen as nn
      >>> dense = nn.Dense(256, kernel_init=mean_shift_init(0.05))
      >>> w = dense.init(jax.random.key(0), jnp.ones((1, 64)))["params"]["kernel"]
      >>> round(float(w.mean()), 2)
      0.05
    """
    mean = _checks.finite_float("mean", mean)
    if not callable(base):
        raise TypeError(f"base must be an initializer (key, shape, dtype) -> array, got {base!r}")

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        _checks.prng_key("key", key)
        dims = _checks.shape_of("shape", shape, (2, 3, 4, 5))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("mean", mean, dtype)
        w = base(key, dims, jnp.float32) + jnp.float32(mean)
        return constrain(w.astype(dtype), out_sharding)

    return init
