r"""Mimetic mean shift of an MLP's first layer (Trockman & Kolter, "Mimetic Initialization of MLPs").

Reference: A. Trockman and J. Z. Kolter, "Mimetic Initialization of MLPs",
arXiv:2602.07156.

Known (Trockman & Kolter, arXiv 2602.07156): giving the first MLP layer ``W1`` a nonzero mean gives a small but real
speed-up (CIFAR-10, ImageNet-1k), strongest early in training, additive with the
attention and conv schemes. **Ours**: the value of the mean, its sign and whether it is
relative to the std are not available to us. Here the mean is relative to the std of the
base draw (``relative=True``, the default),

.. math::  W_1 = W_{base} + m\,\mathrm{std}(W_{base})\,\mathbf{1}\mathbf{1}^\top,

so that ``m`` is the same amount of structure at every width (an absolute shift of 0.02 is
0.11 of ``lecun_normal``'s std at width 32 and 1.28 at width 4096); ``relative=False`` adds
``m`` itself. The default ``m = 0.1`` (:data:`DEFAULT_MEAN`) is about what the absolute 0.02
of our width-32 sweep was. **No benchmark of ours found a gain from the shift**
(``benchmarks/conv_training.py``, 10 paired seeds, 400 steps on digits: ConvMixer
+0.36 ± 1.23 pp, ViT +0.16 ± 0.54 pp, ViT with mimetic attention +0.56 pp over attention
alone, none significant), so the presets of :func:`mimetic_jax.mimetic` do not apply it:
add ``Rule("mlp")`` to use it. In a SwiGLU MLP (LLaMA) both ``gate_proj`` and ``up_proj``
match :data:`MLP_NAMES` and both are shifted: which of them the paper would shift is
not known to us.

**LayerNorm versus BatchNorm.** After a LayerNorm with unit scale and zero shift the
normalized input ``x̂`` sums to zero along the features, so ``x̂ W_1 = x̂ W_{base} +
m (Σ_i x̂_i) 1ᵀ = x̂ W_{base}``: the mean shift has *no effect on the forward pass at
init* (a pre-LN transformer's MLP, a ConvNeXt block); it acts only through training
(the gradients and the learned LayerNorm scale/shift). After a BatchNorm (ConvMixer's
pointwise convs read a residual sum of BatchNorm outputs) the features of one example
do not sum to zero, and the mean shift changes the output at once. **RMSNorm** (LLaMA,
T5) scales without subtracting the mean, so, as after BatchNorm, the shift acts at init:
``x̂ W_1 = x̂ W_{base} + m\,σ\,(Σ_i x̂_i) 1ᵀ`` with ``Σ_i x̂_i ≠ 0``. All three are tested in
``tests/test_mlp.py``.

Whole-model transform
---------------------

:func:`find_mlp_layers` / :func:`mimetic_mlp` find the first layer of each MLP by its path
(:data:`MLP_NAMES`: ``mlp_in``, ``fc1``, ``c_fc``, ``pwconv1``, ``up_proj``/``gate_proj``,
``wi``, ...), a ``Dense`` kernel ``(d_in, d_hidden)`` or a pointwise conv ``(1, 1, C, C')``,
in a linen params dict, an ``nnx.State``, an NNX module or an Equinox module, and add the
mean to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax._kernels import KernelSite, find_kernels, nothing_found
from mimetic_jax._sharding import constrain
from mimetic_jax._tree import flatten, put_like, rebuild

Array = jax.Array
Initializer = Callable[..., Array]

__all__ = ["DEFAULT_MEAN", "MLP_NAMES", "find_mlp_layers", "mean_shift_init", "mimetic_mlp"]


def mean_shift_init(
    mean: float, base: Initializer = jax.nn.initializers.lecun_normal(), *, relative: bool = True
) -> Initializer:
    r"""Initializer ``W + mean·std(W)``, ``W = base(key, shape)``, for an MLP's first layer (arXiv 2602.07156).

    Any kernel shape ``base`` accepts (``(d_in, d_hidden)`` for ``nn.Dense``,
    ``(1, 1, C_in, C_out)`` for a pointwise conv). The draw is made in float32, the shift
    added, then cast to ``dtype``: the entries have the std of ``base`` and mean
    ``mean·std(W)`` (``relative=True``, the default; ``std(W)`` is the draw's own std) or
    ``mean`` (``relative=False``). After a unit-scale LayerNorm this does not change the forward pass at init
    (see the module docstring); after BatchNorm it does.

    Checked (``ValueError``/``TypeError`` naming the argument): ``mean`` finite and
    ``base`` callable here; at ``init`` the key (a typed key or a raw ``uint32[2]``), the
    shape (rank 2 to 5, bounded size), the dtype, and ``mean`` finite in that dtype
    (``float16`` tops at 65504; ``base``'s own draw adds to it), ``relative`` a bool.

    Example:
      >>> import flax.linen as nn
      >>> dense = nn.Dense(256, kernel_init=mean_shift_init(0.5))  # as a Flax kernel_init
      >>> w = mean_shift_init(0.5)(jax.random.key(0), (64, 256))
      >>> base = jax.nn.initializers.lecun_normal()(jax.random.key(0), (64, 256))  # the same draw
      >>> round(float((w - base).mean() / base.std()), 3)
      0.5
    """
    mean = _checks.finite_float("mean", mean)
    relative = _checks.boolean("relative", relative)
    if not callable(base):
        raise TypeError(f"base must be an initializer (key, shape, dtype) -> array, got {base!r}")

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        _checks.prng_key("key", key)
        dims = _checks.shape_of("shape", shape, (2, 3, 4, 5))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("mean", mean, dtype)
        w = base(key, dims, jnp.float32)
        if tuple(jnp.shape(w)) != dims:  # it used to broadcast silently
            raise ValueError(f"base must return an array of the requested shape {dims}, got shape {jnp.shape(w)}")
        w = w + jnp.float32(mean) * (jnp.std(w) if relative else jnp.float32(1))
        return constrain(w.astype(dtype), out_sharding)

    return init


# --------------------------------------------------------------------------- whole-model transform


#: Default path pattern of the first layer of an MLP (ViT ``mlp_in``, timm ``fc1``, GPT-2 ``c_fc``,
#: ConvNeXt ``pwconv1``, ConvMixer ``pointwise``, LLaMA ``up_proj``/``gate_proj``, T5 ``wi``,
#: Flax examples ``MlpBlock_*/Dense_0``, BLOOM ``dense_h_to_4h``, GPT-J ``fc_in``, DistilBERT ``lin1``,
#: ``eqx.nn.MLP``'s ``layers/0``, dm-haiku ``hk.nets.MLP``'s ``mlp/~/linear_0``).
MLP_NAMES = (
    r"(^|/)(mlp_in|fc1|c_fc|pwconv1|pointwise|up_proj|gate_proj|wi|wi_0|wi_1|"
    r"intermediate/dense|MlpBlock_\d+/Dense_0|mlp/Dense_0|mlp/layers/0|mlp/~/linear_0|dense_h_to_4h|fc_in|lin1)(_\d+)?(/|$)"
)

#: Package default of the mean shift, in units of the kernel's std (``relative=True``): 0.1 is
#: about what the absolute 0.02 picked by our width-32 sweep was; no mean we tried beat the
#: unshifted init (``benchmarks/conv_training.py``), and the presets do not apply the shift.
DEFAULT_MEAN = 0.1


def _is_first_mlp(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) in (3, 4) and all(d == 1 for d in shape[:-2]))


def find_mlp_layers(
    tree: Any, *, include: str | None = MLP_NAMES, exclude: str | None = None, stacked_axes: int = 0
) -> list[KernelSite]:
    """The first-MLP-layer kernels :func:`mimetic_mlp` would change, in layer order.

    Example:
      >>> from mimetic_jax.experiments.models import ViT
      >>> v = ViT(10, width=16, depth=2, num_heads=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> [s.name for s in find_mlp_layers(v)]
      ['params/block_0/mlp_in/kernel', 'params/block_1/mlp_in/kernel']
    """
    return find_kernels(flatten(tree), _is_first_mlp, include, exclude, stacked_axes)


def mimetic_mlp(
    tree: Any,
    *,
    mean: float = DEFAULT_MEAN,
    relative: bool = True,
    include: str | None = MLP_NAMES,
    exclude: str | None = None,
    stacked_axes: int = 0,
    allow_empty: bool = False,
) -> Any:
    """Shift every first-MLP-layer kernel of a model by ``mean`` of its std (the mimetic mean shift, arXiv 2602.07156).

    The model's own draw ``W`` is the base: each layer (each slice of a stacked kernel)
    becomes ``W + mean·std(W)`` (``relative=True``, the default; for Flax's
    ``lecun_normal`` this is :func:`mimetic_jax.mean_shift_init` ``(mean)`` on the same
    draw), or ``W + mean`` (``relative=False``), so a model and its shifted copy differ by
    the shift alone. After a unit-scale LayerNorm this leaves the forward pass at init
    unchanged (the normalized features sum to zero); after BatchNorm or RMSNorm it does
    not (see :mod:`mimetic_jax.mlp`). The other arguments and the return value are as in
    :func:`mimetic_jax.mimetic_conv`.

    Example:
      >>> from mimetic_jax.experiments.models import ViT
      >>> v = ViT(10, width=16, depth=1, num_heads=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> w0 = v["params"]["block_0"]["mlp_in"]["kernel"]
      >>> w1 = mimetic_mlp(v, mean=0.5)["params"]["block_0"]["mlp_in"]["kernel"]
      >>> round(float((w1 - w0).mean() / w0.std()), 3)
      0.5
    """
    mean = _checks.finite_float("mean", mean)
    relative = _checks.boolean("relative", relative)
    flat = flatten(tree)
    sites = find_kernels(flat, _is_first_mlp, include, exclude, stacked_axes)
    if not sites:
        if allow_empty:
            return tree
        raise nothing_found(
            "first MLP layer (a Dense kernel or a 1x1 conv)", flat, include, _is_first_mlp, stacked_axes
        )
    for site in sites:
        old = flat[site.path]
        _checks.float_dtype(f"kernel {site.name} dtype", old.dtype)
        _checks.fits_dtype("mean", mean, old.dtype, f"the shift of kernel {site.name}")
        w = old.astype(jnp.float32)
        if relative:  # one std per layer: the axes after the stacked ones
            w = w + jnp.float32(mean) * jnp.std(w, axis=tuple(range(len(site.stack), w.ndim)), keepdims=True)
        else:
            w = w + jnp.float32(mean)
        new = w.astype(old.dtype)
        flat[site.path] = put_like(new, old)
    return rebuild(tree, flat)
