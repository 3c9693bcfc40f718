"""Kernel sites: the plumbing the conv and MLP transforms and :func:`~mimetic_jax.analyze` share.

A kernel is a leaf named ``kernel`` (Flax, ``(*spatial, in, out)``) or ``weight`` (Equinox and
PyTorch-style code, ``(out, in, *spatial)``); :func:`find_kernels` lists those whose one-layer
shape, in Flax order, passes a predicate and whose path passes the name patterns, in layer
order (numbers in paths compared as numbers: ``block_2`` before ``block_10``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax._tree import Path, check_pattern, module_at, natural_key, path_name, selected

Array = jax.Array

__all__ = ["KERNEL_LEAVES", "KernelSite", "declared_groups", "find_kernels", "nothing_found"]

#: The leaf names of kernels and how each orders its axes: Flax ``(*spatial, in, out)`` (and
#: dm-haiku's ``w``, in the same order);
#: PyTorch-style code and Equinox ``(out, in, *spatial)`` (``eqx.nn.Linear``/``Conv``'s ``weight``).
KERNEL_LEAVES = {"kernel": "flax", "w": "flax", "weight": "channels_first"}


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


def declared_groups(tree: Any, path: Path) -> int | None:
    """The group count the module holding a kernel declares (Equinox ``groups``, NNX ``feature_group_count``)."""
    if tree is None or isinstance(tree, Mapping):
        return None
    module = module_at(tree, path[:-1])
    for attr in ("groups", "feature_group_count"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def find_kernels(
    flat: dict[Path, Any],
    fits: Callable[[tuple[int, ...]], bool],
    include: str | None,
    exclude: str | None,
    stacked_axes: Any,
    tree: Any = None,
    depthwise_names: str | None = None,
) -> list[KernelSite]:
    """The kernels (sorted by path) whose unstacked Flax-order shape ``fits``, after ``stacked_axes`` is checked.

    With ``depthwise_names`` (the depthwise transform's default name pattern) a module that
    declares its group count (Equinox, NNX) decides: a kernel with ``groups == channels > 1``
    is a depthwise conv whatever its name when ``include`` is that default pattern, and one
    with another count never is.
    """
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    check_pattern("include", include)
    check_pattern("exclude", exclude)
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
        groups = declared_groups(tree, path) if depthwise_names is not None else None
        if groups is not None:
            if not (groups > 1 and groups == site.shape[-1]):
                continue
            if not selected(name, None if include == depthwise_names else include, exclude):
                continue
        elif not selected(name, include, exclude):
            continue
        sites.append(site)
    return sorted(sites, key=lambda s: natural_key(s.path))


def nothing_found(
    what: str, flat: dict[Path, Any], include: str | None, fits: Any = None, stacked_axes: int = 0
) -> ValueError:
    names = sorted({path_name(p[:-1]) for p in flat if p and str(p[-1]) in KERNEL_LEAVES})[:12]
    hint = ""
    if fits is not None and find_kernels(flat, fits, include, None, stacked_axes + 1):
        hint = (
            f" Kernels named like one fit once a leading axis is dropped: are the layers stacked "
            f"(nn.scan / nnx.vmap)? pass stacked_axes={stacked_axes + 1}."
        )
    if not hint and stacked_axes and fits is not None and find_kernels(flat, fits, include, None, 0):
        hint = f" Kernels named like one fit with stacked_axes=0: is stacked_axes={stacked_axes} right?"
    if not hint and include is not None and fits is not None:
        shaped = find_kernels(flat, fits, None, None, stacked_axes)
        if shaped:
            listed = [s.name for s in shaped[:8]]
            hint = (
                f" Kernels of the right shape but other names: {listed}{' …' if len(shaped) > 8 else ''}; "
                "include=None takes every one of them, or pass include= a pattern that matches yours."
            )
    return ValueError(
        f"no {what} found (include={include!r}, stacked_axes={stacked_axes}; the tree's kernels include "
        f"{names}).{hint} "
        "Pass include= for other names, or allow_empty=True."
    )
