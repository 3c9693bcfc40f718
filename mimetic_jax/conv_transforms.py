"""Whole-model transforms for the conv and MLP schemes.

Papers: Trockman, Willmott & Kolter, ICLR 2023 (filters); Trockman & Kolter, arXiv 2602.07156 (MLP).

In the style of :func:`mimetic_jax.mimetic_attention`: walk a linen params dict, an
``nnx.State`` or an NNX module, find the layers by shape and by a path pattern, and
re-initialize them with the same shapes and dtypes (and, for concrete arrays, shardings).

* :func:`find_depthwise_convs` / :func:`mimetic_conv` — depthwise conv kernels
  ``(kh, kw, 1, C)`` or ``(k, 1, C)`` (``nn.Conv(feature_group_count=C)``) whose path
  matches ``include`` (default :data:`DEPTHWISE_NAMES`). The parameters do not record
  ``feature_group_count``: a plain conv on a 1-channel input (a stem on grayscale
  images) has the same kernel shape, hence the name pattern. ``include=None`` matches
  by shape alone.
* :func:`filter_covariances` — the empirical filter covariance of each depthwise layer
  of a (trained) model, in layer order, ready for
  :func:`~mimetic_jax.conv.transfer_covariances`.
* :func:`freeze_mask` — an optax mask, ``True`` at the depthwise kernels.
* :func:`find_mlp_layers` / :func:`mimetic_mlp` — the first layer of each MLP (path
  pattern :data:`MLP_NAMES`: ``mlp_in``, ``fc1``, ``c_fc``, ``pwconv1``, ``pointwise``,
  ...), a ``Dense`` kernel ``(d_in, d_hidden)`` or a pointwise conv ``(1, 1, C, C')``.

Layers are ordered by path with numbers compared as numbers (``block_2`` before
``block_10``); that order is the depth ``ℓ`` of the conv scheme.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax._tree import Path, flatten, module_at, natural_key, path_name, put_like, rebuild, selected
from mimetic_jax.attention import _typed_key
from mimetic_jax.conv import (
    Displacement,
    _root_for,
    filter_covariance,
    gaussian,
    layer_sigma,
    sample_filters,
)

Array = jax.Array

#: Default path pattern of depthwise convs: ConvMixer ``depthwise``, ConvNeXt ``dwconv`` / timm ``conv_dw``.
DEPTHWISE_NAMES = r"(?i)(depthwise|dw_?conv|conv_?dw)"
#: Default path pattern of the first layer of an MLP (ViT ``mlp_in``, timm ``fc1``, GPT-2 ``c_fc``,
#: ConvNeXt ``pwconv1``, ConvMixer ``pointwise``, LLaMA ``up_proj``/``gate_proj``, T5 ``wi``,
#: Flax examples ``MlpBlock_*/Dense_0``, BLOOM ``dense_h_to_4h``, GPT-J ``fc_in``, DistilBERT ``lin1``,
#: ``eqx.nn.MLP``'s ``layers/0``).
MLP_NAMES = (
    r"(^|/)(mlp_in|fc1|c_fc|pwconv1|pointwise|up_proj|gate_proj|wi|wi_0|wi_1|"
    r"intermediate/dense|MlpBlock_\d+/Dense_0|mlp/Dense_0|mlp/layers/0|dense_h_to_4h|fc_in|lin1)(_\d+)?(/|$)"
)
#: The leaf names of kernels and how each orders its axes: Flax ``(*spatial, in, out)``;
#: PyTorch-style code and Equinox ``(out, in, *spatial)`` (``eqx.nn.Linear``/``Conv``'s ``weight``).
KERNEL_LEAVES = {"kernel": "flax", "weight": "channels_first"}
#: Package defaults of the conv scheme: the best of the ``(σ_start, σ_end)`` sweep of
#: ``benchmarks/conv_training.py`` (ConvMixer on digits, 2 seeds, 120 steps; README). The
#: sweep is noisy (0.5→2 and 0.5→4 are within one std), so it neither confirms nor
#: rules out the published "σ grows with depth"; pass ``sigma_end > sigma_start`` for it.
DEFAULT_SIGMA_START = 0.5
DEFAULT_SIGMA_END = 0.5
#: Package default of the mean shift: the best of the sweep in ``benchmarks/conv_training.py``
#: (ConvMixer and ViT on digits). No mean we tried beat the unshifted init there (README).
DEFAULT_MEAN = 0.02


@dataclasses.dataclass(frozen=True)
class KernelSite:
    """One kernel found in a tree: its path, its shape in Flax order and its stacked axes.

    ``shape`` is one layer's shape in Flax's ``(*spatial, in, out)`` order; a kernel stored
    ``(out, in, *spatial)`` (leaf ``weight``: Equinox, PyTorch-style code) has
    ``channels_first=True`` and :meth:`to_flax`/:meth:`from_flax` convert the stored array.
    """

    path: Path
    shape: tuple[int, ...]
    stack: tuple[int, ...]
    channels_first: bool = False

    def _perm(self, ndim: int) -> tuple[int, ...]:
        lead = len(self.stack)
        n = ndim - lead
        return (*range(lead), *(lead + i for i in range(2, n)), lead + 1, lead)

    def to_flax(self, x: Array) -> Array:
        """The stored array (stacked or not) in Flax's ``(*spatial, in, out)`` order."""
        return jnp.transpose(x, self._perm(jnp.ndim(x))) if self.channels_first else x

    def from_flax(self, x: Array) -> Array:
        """Inverse of :meth:`to_flax`."""
        if not self.channels_first:
            return x
        perm = self._perm(jnp.ndim(x))
        return jnp.transpose(x, [perm.index(i) for i in range(len(perm))])

    @property
    def name(self) -> str:
        return path_name(self.path)

    @property
    def layers(self) -> int:
        """Number of layers the kernel holds (``prod(stack)``)."""
        return math.prod(self.stack)


def _declared_groups(tree: Any, path: Path) -> int | None:
    """The group count the module holding a kernel declares (Equinox ``groups``, NNX ``feature_group_count``)."""
    if tree is None or isinstance(tree, Mapping):
        return None
    module = module_at(tree, path[:-1])
    for attr in ("groups", "feature_group_count"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _find_kernels(
    flat: dict[Path, Any],
    fits,
    include: str | None,
    exclude: str | None,
    stacked_axes: Any,
    tree: Any = None,
    depthwise: bool = False,
) -> list[KernelSite]:
    """The kernels (sorted by path) whose unstacked Flax-order shape ``fits``, after ``stacked_axes`` is checked.

    With ``depthwise=True`` a module that declares its group count (Equinox, NNX) decides:
    a kernel with ``groups == channels > 1`` is a depthwise conv whatever its name when
    ``include`` is the default name pattern, and one with another count never is.
    """
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    sites = []
    for path, leaf in flat.items():
        order = KERNEL_LEAVES.get(str(path[-1])) if path else None
        if order is None:
            continue
        name = path_name(path)
        shape = tuple(jnp.shape(leaf))
        if len(shape) < stacked_axes + 2:  # a kernel has an in and an out axis (a 1-D 'weight' is a norm's scale)
            continue
        site = KernelSite(path, shape[stacked_axes:], shape[:stacked_axes], order == "channels_first")
        if site.channels_first:
            site = dataclasses.replace(site, shape=tuple(shape[i] for i in site._perm(len(shape)))[stacked_axes:])
        if not fits(site.shape):
            continue
        groups = _declared_groups(tree, path) if depthwise else None
        if groups is not None:
            if not (groups > 1 and groups == site.shape[-1]):
                continue
            if not selected(name, None if include == DEPTHWISE_NAMES else include, exclude):
                continue
        elif not selected(name, include, exclude):
            continue
        sites.append(site)
    return sorted(sites, key=lambda s: natural_key(s.path))


def _is_depthwise(shape: tuple[int, ...]) -> bool:
    return len(shape) in (3, 4) and shape[-2] == 1


def _is_first_mlp(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) in (3, 4) and all(d == 1 for d in shape[:-2]))


def find_depthwise_convs(
    tree: Any, *, include: str | None = DEPTHWISE_NAMES, exclude: str | None = None, stacked_axes: int = 0
) -> list[KernelSite]:
    """The depthwise conv kernels :func:`mimetic_conv` would change, in layer order.

    Example:
      >>> from mimetic_jax.experiments.models import ConvMixer
      >>> v = ConvMixer(10, width=16, depth=3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> [s.name for s in find_depthwise_convs(v)]
      ['params/block_0/depthwise/kernel', 'params/block_1/depthwise/kernel', 'params/block_2/depthwise/kernel']
    """
    return _find_kernels(flatten(tree), _is_depthwise, include, exclude, stacked_axes, tree, depthwise=True)


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
    return _find_kernels(flatten(tree), _is_first_mlp, include, exclude, stacked_axes)


def _nothing_found(
    what: str, flat: dict[Path, Any], include: str | None, fits: Any = None, stacked_axes: int = 0
) -> ValueError:
    names = sorted({path_name(p[:-1]) for p in flat if p and str(p[-1]) in KERNEL_LEAVES})[:12]
    hint = ""
    if fits is not None and _find_kernels(flat, fits, include, None, stacked_axes + 1):
        hint = (
            f" Kernels named like one fit once a leading axis is dropped: are the layers stacked "
            f"(nn.scan / nnx.vmap)? pass stacked_axes={stacked_axes + 1}."
        )
    return ValueError(
        f"no {what} found (include={include!r}; the tree's kernels include {names}).{hint} "
        "Pass include= for other names, or allow_empty=True."
    )


def mimetic_conv(
    tree: Any,
    key: Array,
    *,
    sigma_start: float = DEFAULT_SIGMA_START,
    sigma_end: float = DEFAULT_SIGMA_END,
    scale: float | None = None,
    covariances: Sequence[Any] | None = None,
    displacement: Displacement = gaussian,
    include: str | None = DEPTHWISE_NAMES,
    exclude: str | None = None,
    stacked_axes: int = 0,
    allow_empty: bool = False,
) -> Any:
    """Re-draw every depthwise conv kernel of a model with covariance-structured filters.

    Depthwise layer ``ℓ`` of ``L`` (layer order; the slices of a stacked kernel count as
    consecutive layers) gets :func:`mimetic_jax.depthwise_conv_init` ``(ℓ, L,
    sigma_start=, sigma_end=, scale=, covariance=covariances[ℓ])`` drawn from
    ``fold_in(key, ℓ)`` (our reconstruction of Trockman, Willmott & Kolter,
    ICLR 2023). Everything else, biases included, is unchanged.

    Args:
      tree: a linen params dict, an ``nnx.State`` or an ``nnx.Module``.
      key: a PRNG key.
      sigma_start, sigma_end: ``σ`` of the first and last depthwise layer (package
        defaults from our digits sweep, see the README).
      scale: per-weight std; ``None`` keeps Flax's default conv init variance ``1/(kh·kw)``.
      covariances: ``L`` transferred covariances (:func:`~mimetic_jax.conv.transfer_covariances`)
        used instead of the closed form.
      include, exclude: regular expressions on the kernel path.
      stacked_axes: leading axes of stacked layers (``nn.scan``).
      allow_empty: return the tree unchanged when no depthwise conv matches.

    Returns:
      a new dict/``nnx.State`` (the input is not changed), or the ``nnx.Module`` updated in place.

    Example:
      >>> from mimetic_jax.experiments.models import ConvMixer
      >>> v = ConvMixer(10, width=16, depth=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> v2 = mimetic_conv(v, jax.random.key(1))
      >>> v2["params"]["block_1"]["depthwise"]["kernel"].shape
      (5, 5, 1, 16)
    """
    flat = flatten(tree)
    sites = _find_kernels(flat, _is_depthwise, include, exclude, stacked_axes, tree, depthwise=True)
    if not sites:
        if allow_empty:
            return tree
        raise _nothing_found(
            "depthwise conv kernel (kh, kw, 1, C) or (k, 1, C)", flat, include, _is_depthwise, stacked_axes
        )
    total = sum(s.layers for s in sites)
    if covariances is not None and len(covariances) != total:
        raise ValueError(f"covariances must hold one matrix per depthwise layer ({total}), got {len(covariances)}")
    if scale is not None:
        scale = _checks.finite_float("scale", scale)
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
    key = _typed_key(key)
    for site in sites:
        _checks.float_dtype(f"kernel {site.name!r} dtype", jnp.result_type(flat[site.path]))
    layer = 0
    for site in sites:
        dims, channels = site.shape[:-2], site.shape[-1]
        roots = []
        for i in range(site.layers):
            sigma = layer_sigma(layer + i, total, sigma_start, sigma_end)
            cov = None if covariances is None else covariances[layer + i]
            roots.append(_root_for(dims, sigma, scale, cov, displacement))
        old = flat[site.path]
        draws = [
            sample_filters(jax.random.fold_in(key, layer + i), roots[i], dims, channels, old.dtype)
            for i in range(site.layers)
        ]
        new = jnp.stack(draws).reshape((*site.stack, *site.shape)) if site.stack else draws[0]
        flat[site.path] = put_like(site.from_flax(new), old)
        layer += site.layers
    return rebuild(tree, flat)


def filter_covariances(
    tree: Any,
    *,
    center: bool = True,
    include: str | None = DEPTHWISE_NAMES,
    exclude: str | None = None,
    stacked_axes: int = 0,
) -> list[Array]:
    """The filter covariance (:func:`~mimetic_jax.conv.filter_covariance`) of every depthwise layer, in layer order.

    Example:
      >>> from mimetic_jax.experiments.models import ConvMixer
      >>> v = ConvMixer(10, width=16, depth=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> [c.shape for c in filter_covariances(v)]
      [(25, 25), (25, 25)]
    """
    flat = flatten(tree)
    out = []
    for site in _find_kernels(flat, _is_depthwise, include, exclude, stacked_axes, tree, depthwise=True):
        kernels = jnp.reshape(site.to_flax(flat[site.path]), (site.layers, *site.shape))
        out += [filter_covariance(kernels[i], center=center) for i in range(site.layers)]
    return out


def freeze_mask(
    tree: Any, *, include: str | None = DEPTHWISE_NAMES, exclude: str | None = None, stacked_axes: int = 0
) -> Any:
    """An optax mask with the structure of ``tree``: ``True`` at depthwise conv kernels.

    Freeze them (no gradient step *and* no weight decay) by zeroing their final updates::

        optimizer = optax.chain(optax.adamw(1e-3), optax.masked(optax.set_to_zero(), freeze_mask(params)))

    (``mimetic_jax.experiments.training.train_models(..., frozen=freeze_mask(variables))`` does this.)
    For an ``nnx.Module`` the mask has the structure of ``nnx.state(module, nnx.Param)``.

    Example:
      >>> from mimetic_jax.experiments.models import ConvMixer
      >>> v = ConvMixer(10, width=16, depth=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> m = freeze_mask(v["params"])
      >>> m["block_0"]["depthwise"]["kernel"], m["block_0"]["depthwise"]["bias"], m["stem"]["kernel"]
      (True, False, False)
    """
    from flax import nnx

    source = tree
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    flat = flatten(tree)
    frozen = {
        s.path for s in _find_kernels(flat, _is_depthwise, include, exclude, stacked_axes, source, depthwise=True)
    }
    return rebuild(tree, {p: p in frozen for p in flat})


def mimetic_mlp(
    tree: Any,
    *,
    mean: float = DEFAULT_MEAN,
    include: str | None = MLP_NAMES,
    exclude: str | None = None,
    stacked_axes: int = 0,
    allow_empty: bool = False,
) -> Any:
    """Add ``mean`` to every first-MLP-layer kernel of a model (the mimetic mean shift, arXiv 2602.07156).

    The model's own draw is the base (for Flax's ``lecun_normal`` this is exactly
    :func:`mimetic_jax.mean_shift_init` ``(mean)``), so a model and its shifted copy
    differ by the mean alone. After a unit-scale LayerNorm this leaves the forward pass at
    init unchanged (the normalized features sum to zero); after BatchNorm it does not
    (see :mod:`mimetic_jax.mlp`). Arguments and return value as in :func:`mimetic_conv`.

    Example:
      >>> from mimetic_jax.experiments.models import ViT
      >>> v = ViT(10, width=16, depth=1, num_heads=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> w0 = v["params"]["block_0"]["mlp_in"]["kernel"]
      >>> w1 = mimetic_mlp(v, mean=0.1)["params"]["block_0"]["mlp_in"]["kernel"]
      >>> round(float((w1 - w0).mean()), 3)
      0.1
    """
    mean = _checks.finite_float("mean", mean)
    flat = flatten(tree)
    sites = _find_kernels(flat, _is_first_mlp, include, exclude, stacked_axes)
    if not sites:
        if allow_empty:
            return tree
        raise _nothing_found(
            "first MLP layer (a Dense kernel or a 1x1 conv)", flat, include, _is_first_mlp, stacked_axes
        )
    for site in sites:
        old = flat[site.path]
        _checks.float_dtype(f"kernel {site.name} dtype", old.dtype)
        _checks.fits_dtype("mean", mean, old.dtype, f"the shift of kernel {site.name}")
        new = (old.astype(jnp.float32) + jnp.float32(mean)).astype(old.dtype)
        flat[site.path] = put_like(new, old)
    return rebuild(tree, flat)
