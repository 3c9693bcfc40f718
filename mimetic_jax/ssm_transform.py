"""Whole-model transform for state space models: find Mamba blocks and re-initialize them mimetically.

:func:`mimetic_ssm` walks a Flax linen params dict, an ``nnx.State`` or an NNX module
(the same plumbing as :func:`mimetic_jax.mimetic_attention`, :mod:`mimetic_jax._tree`),
finds every Mamba block by its parameter names and writes the mimetic parts of
:mod:`mimetic_jax.ssm` into it, with the same shapes, dtypes and (for concrete arrays)
shardings. Everything else is left as it is.

=============  ==========================================================  ===================================
layout         children the block must have                                what is re-initialized
=============  ==========================================================  ===================================
``MAMBA1``     ``A_log (d_inner, N)``, ``x_proj/kernel (d_inner, R+2N)``,    ``A_log``; ``dt_proj/bias``;
               ``dt_proj/kernel (R, d_inner)``, ``dt_proj/bias``            ``x_proj`` columns ``R:R+N`` (B),
                                                                           ``R+N:R+2N`` (C); ``conv1d``
``MAMBA2``     ``A_log (H,)``, ``dt_bias (H,)``, ``in_proj/kernel``          ``A_log``; ``dt_bias``; ``in_proj``
               ``(d_model, 2 d_inner + 2GN + H)``, ``conv1d/kernel``         columns of B and C; ``conv1d``
               ``(d_conv, 1, d_inner + 2GN)``, ``out_proj/kernel``
               ``(d_inner, d_model)``
=============  ==========================================================  ===================================

These are the names of the official implementation and of Hugging Face ``transformers``
(``mixer.in_proj`` ...); other names go through ``layouts=[SSMLayout(...)]``, and
``include``/``exclude`` regular expressions select blocks by path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax._tree import Path, common_stack, flatten, map_stacked, match_parts, path_name, put_like, rebuild
from mimetic_jax.attention import METHODS, _typed_key
from mimetic_jax.ssm import A_LOG_RANGE, DELTA, a_log_init, bc_kernels, dt_bias_init, identity_conv_init

Array = jax.Array

__all__ = ["MAMBA1", "MAMBA2", "SSMBlock", "SSMLayout", "find_ssm_blocks", "mimetic_ssm"]


@dataclasses.dataclass(frozen=True)
class SSMLayout:
    """Parameter names of one Mamba layout (``version`` 1 or 2).

    Mamba-1 needs ``x_proj`` and ``dt_proj``; Mamba-2 needs ``dt_bias`` and ``out_proj``
    (its width gives ``d_inner``). ``in_proj`` and ``conv1d`` are kernels' parents;
    ``a_log`` and ``dt_bias`` are leaves of the block.
    """

    version: int
    a_log: str = "A_log"
    in_proj: str = "in_proj"
    conv1d: str = "conv1d"
    out_proj: str = "out_proj"
    x_proj: str | None = None
    dt_proj: str | None = None
    dt_bias: str | None = None
    kernel: str = "kernel"
    bias: str = "bias"

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"SSMLayout version must be 1 or 2, got {self.version!r}")
        if self.version == 1 and (self.x_proj is None or self.dt_proj is None):
            raise ValueError(f"a Mamba-1 SSMLayout needs x_proj and dt_proj names: {self}")
        if self.version == 2 and self.dt_bias is None:
            raise ValueError(f"a Mamba-2 SSMLayout needs a dt_bias name: {self}")

    def required(self) -> tuple[Path, ...]:
        """Paths (relative to the block) that must exist for a match."""
        if self.version == 1:
            return ((self.a_log,), (self.x_proj, self.kernel), (self.dt_proj, self.kernel), (self.dt_proj, self.bias))
        return (
            (self.a_log,),
            (self.dt_bias,),
            (self.in_proj, self.kernel),
            (self.conv1d, self.kernel),
            (self.out_proj, self.kernel),
        )


MAMBA1 = SSMLayout(version=1, x_proj="x_proj", dt_proj="dt_proj")
MAMBA2 = SSMLayout(version=2, dt_bias="dt_bias")
DEFAULT_SSM_LAYOUTS: tuple[SSMLayout, ...] = (MAMBA1, MAMBA2)


@dataclasses.dataclass(frozen=True)
class SSMBlock:
    """One Mamba block found in a tree.

    ``d_in`` is the width the B/C projections read (Mamba-1 ``d_inner``, Mamba-2
    ``d_model``); ``bc_offset`` the first B column of the projection kernel (B: ``G·N``
    columns, then C: ``G·N``); ``stack`` the leading stacked axes.
    """

    path: Path
    layout: SSMLayout
    d_in: int
    d_state: int
    ngroups: int
    bc_offset: int
    stack: tuple[int, ...]

    @property
    def name(self) -> str:
        return path_name(self.path)

    @property
    def bc_kernel(self) -> Path:
        lay = self.layout
        return (lay.x_proj, lay.kernel) if lay.version == 1 else (lay.in_proj, lay.kernel)

    @property
    def dt(self) -> Path:
        lay = self.layout
        return (lay.dt_proj, lay.bias) if lay.version == 1 else (lay.dt_bias,)


def _sizes(layout: SSMLayout, shapes: dict[Path, tuple[int, ...]], ngroups: int, where: str) -> tuple[int, int, int]:
    """``(d_in, d_state, bc_offset)`` from the block's shapes (stacked axes removed)."""

    def bad(msg: str) -> ValueError:
        listed = ", ".join(f"{'/'.join(p)} {s}" for p, s in shapes.items())
        return ValueError(f"SSM block {where!r}: inconsistent shapes ({listed}): {msg}")

    a_log = shapes[(layout.a_log,)]
    if layout.version == 1:
        x_proj, dt_kernel = shapes[(layout.x_proj, layout.kernel)], shapes[(layout.dt_proj, layout.kernel)]
        if len(a_log) != 2 or len(x_proj) != 2 or len(dt_kernel) != 2:
            raise bad("expected A_log (d_inner, N), x_proj (d_inner, R + 2N), dt_proj (R, d_inner)")
        d_inner, n = a_log
        rank = dt_kernel[0]
        if x_proj != (d_inner, rank + 2 * n) or dt_kernel[1] != d_inner:
            raise bad(
                f"x_proj must be (d_inner={d_inner}, dt_rank + 2 d_state = {rank + 2 * n}) and "
                f"dt_proj (dt_rank, {d_inner})"
            )
        return d_inner, n, rank
    in_proj, conv, out = (
        shapes[(layout.in_proj, layout.kernel)],
        shapes[(layout.conv1d, layout.kernel)],
        shapes[(layout.out_proj, layout.kernel)],
    )
    if len(a_log) != 1 or len(in_proj) != 2 or len(conv) != 3 or len(out) != 2:
        raise bad("expected A_log (H,), in_proj (d_model, W), conv1d (d_conv, 1, C), out_proj (d_inner, d_model)")
    heads, d_inner, d_model = a_log[0], out[0], in_proj[0]
    two_gn = conv[2] - d_inner
    if two_gn <= 0 or two_gn % (2 * ngroups):
        raise bad(f"conv1d channels {conv[2]} - d_inner {d_inner} must be 2 * ngroups({ngroups}) * d_state")
    if in_proj[1] != 2 * d_inner + two_gn + heads or shapes[(layout.dt_bias,)] != (heads,):
        raise bad(
            f"in_proj width must be 2 d_inner + 2 G N + H = {2 * d_inner + two_gn + heads} and dt_bias ({heads},)"
        )
    return d_model, two_gn // (2 * ngroups), 2 * d_inner


def _find(
    flat: Mapping[Path, Any],
    layouts: Sequence[SSMLayout],
    include: str | None,
    exclude: str | None,
    ngroups: Any,
    stacked_axes: Any,
) -> list[SSMBlock]:
    ngroups = _checks.positive_int("ngroups", ngroups)
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    for lay in layouts:
        if not isinstance(lay, SSMLayout):
            raise TypeError(f"layouts must hold SSMLayout objects, got {lay!r} of type {type(lay).__name__}")
    matched: dict[Path, tuple[SSMLayout, tuple[Path, ...]]] = {}
    for layout in layouts:
        for parent, paths in match_parts(flat, layout.required(), include, exclude, root=False)[0]:
            matched.setdefault(parent, (layout, paths))
    blocks = []
    for parent in sorted(matched, key=lambda p: tuple(str(x) for x in p)):
        layout, paths = matched[parent]
        name = path_name(parent)
        rel = layout.required()
        full = {r: tuple(jnp.shape(flat[p])) for r, p in zip(rel, paths)}
        stack = common_stack(f"SSM block {name!r}", list(full.values()), stacked_axes)
        d_in, n, offset = _sizes(layout, {r: s[stacked_axes:] for r, s in full.items()}, ngroups, name)
        if n > d_in:
            raise ValueError(
                f"SSM block {name!r}: state size d_state={n} is larger than the B/C projection "
                f"allows (its input width is {d_in}); the rank-N product W_C W_Bᵀ needs N <= {d_in}"
            )
        groups = 1 if layout.version == 1 else ngroups
        blocks.append(SSMBlock(parent, layout, d_in, n, groups, offset, stack))
    return blocks


def find_ssm_blocks(
    tree: Any,
    *,
    layouts: Sequence[SSMLayout] = DEFAULT_SSM_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    ngroups: int = 1,
    stacked_axes: int = 0,
) -> list[SSMBlock]:
    """List the Mamba blocks :func:`mimetic_ssm` would change, with their sizes."""
    return _find(flatten(tree), layouts, include, exclude, ngroups, stacked_axes)


def _new_leaves(block: SSMBlock, key: Array, old: dict[Path, Array], opts: dict[str, Any]) -> dict[Path, Array]:
    """The block's re-initialized leaves (unstacked), in their own dtypes."""
    lay = block.layout
    k_a, k_bc = jax.random.split(key)
    new: dict[Path, Array] = {}
    if opts["transition"]:
        a = old[(lay.a_log,)]
        new[(lay.a_log,)] = a_log_init(*opts["a_log_range"])(k_a, a.shape, a.dtype)
        dt = old[block.dt]
        new[block.dt] = dt_bias_init(opts["delta"])(None, dt.shape, dt.dtype)
    if opts["bc"]:
        w = old[block.bc_kernel]
        w_b, w_c = bc_kernels(
            k_bc,
            block.d_in,
            block.d_state,
            num_groups=block.ngroups,
            alpha=opts["alpha"],
            beta=opts["beta"],
            distribution=opts["distribution"],
            method=opts["method"],
        )
        width = block.ngroups * block.d_state
        cols = jnp.concatenate([w_b.reshape(block.d_in, width), w_c.reshape(block.d_in, width)], axis=1)
        new[block.bc_kernel] = jax.lax.dynamic_update_slice_in_dim(w, cols.astype(w.dtype), block.bc_offset, axis=1)
    if opts["conv"]:
        kernel = old[(lay.conv1d, lay.kernel)]
        new[(lay.conv1d, lay.kernel)] = identity_conv_init()(None, kernel.shape, kernel.dtype)
        if (lay.conv1d, lay.bias) in old:
            new[(lay.conv1d, lay.bias)] = jnp.zeros_like(old[(lay.conv1d, lay.bias)])
    return new


def _reinit_block(flat: dict[Path, Any], block: SSMBlock, key: Array, opts: dict[str, Any]) -> None:
    lay = block.layout
    rel = [(lay.a_log,), block.dt, block.bc_kernel]
    if opts["conv"]:
        if (*block.path, lay.conv1d, lay.kernel) not in flat:
            raise ValueError(f"SSM block {block.name!r} has no {lay.conv1d}/{lay.kernel}: conv=True needs one")
        rel += [(lay.conv1d, lay.kernel)] + (
            [(lay.conv1d, lay.bias)] if (*block.path, lay.conv1d, lay.bias) in flat else []
        )
    old = {r: flat[(*block.path, *r)] for r in rel}

    new = map_stacked(lambda k, o: _new_leaves(block, k, o, opts), key, block.stack, old)
    for r, w in new.items():
        flat[(*block.path, *r)] = put_like(w, flat[(*block.path, *r)])


def mimetic_ssm(
    tree: Any,
    key: Array,
    *,
    transition: bool = True,
    bc: bool = True,
    conv: bool = False,
    a_log_range: tuple[float, float] = A_LOG_RANGE,
    delta: float = DELTA,
    alpha: float = 0.7,
    beta: float = 0.7,
    distribution: str = "normal",
    method: str = "exact",
    layouts: Sequence[SSMLayout] = DEFAULT_SSM_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    ngroups: int = 1,
    stacked_axes: int = 0,
    allow_empty: bool = False,
) -> Any:
    """Re-initialize every Mamba block of a model mimetically (Trockman et al. 2024).

    Parts (each can be switched off; see :mod:`mimetic_jax.ssm` for the math):

    * ``transition``: ``A_log ~ U[a_log_range]`` and the Δ bias ``softplus⁻¹(delta)``
      (:func:`~mimetic_jax.ssm.a_log_init`, :func:`~mimetic_jax.ssm.dt_bias_init`);
    * ``bc``: the B and C columns of the projection with ``W_C W_Bᵀ ≈ αZ + βI`` at
      rank ``N`` per group (:func:`~mimetic_jax.ssm.bc_kernels`);
    * ``conv``: identity short convolution, bias zero (:func:`~mimetic_jax.ssm.identity_conv_init`).

    Block ``i`` (in sorted path order) draws from ``jax.random.fold_in(key, i)``.

    Args:
      tree: a linen params dict, an ``nnx.State`` or an ``nnx.Module``.
      key: a PRNG key.
      transition, bc, conv: which parts to write.
      a_log_range, delta, alpha, beta, distribution, method: the parts' options.
      layouts: the :class:`SSMLayout` s to look for (default Mamba-1 and Mamba-2 names).
      include, exclude: regular expressions on the block path.
      ngroups: Mamba-2 ``G`` (the kernels' shapes give ``G·N``, not ``G``).
      stacked_axes: leading axes of stacked layers; each slice gets its own draw.
      allow_empty: return the tree unchanged when no block is found (else ``ValueError``).

    Returns:
      A new dict / ``nnx.State``, or the ``nnx.Module`` updated in place.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from mimetic_jax.experiments.models import MambaLM
      >>> model = MambaLM(vocab_size=16, d_model=32, n_layer=2, d_state=8)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
      >>> params = mimetic_ssm(params, jax.random.key(1))
      >>> bool(params["params"]["layers_0"]["mixer"]["A_log"].max() <= -4.0)
      True
    """
    _checks.choice("method", method, METHODS)
    if not (transition or bc or conv):
        raise ValueError("nothing to do: transition, bc and conv are all False")
    opts = dict(
        transition=bool(transition),
        bc=bool(bc),
        conv=bool(conv),
        a_log_range=tuple(a_log_range),
        delta=delta,
        alpha=alpha,
        beta=beta,
        distribution=distribution,
        method=method,
    )
    a_log_init(*opts["a_log_range"])  # validate eagerly, with the argument's name
    dt_bias_init(delta)
    flat = flatten(tree)
    blocks = _find(flat, layouts, include, exclude, ngroups, stacked_axes)
    if not blocks:
        if allow_empty:
            return tree
        names = sorted({str(p[-2]) for p in flat if len(p) >= 2})[:12]
        raise ValueError(
            "no SSM block found (looked for "
            + "; ".join(f"Mamba-{lay.version}: " + ", ".join("/".join(r) for r in lay.required()) for lay in layouts)
            + f"; the tree's layer names include {names}). Pass layouts=[SSMLayout(...)] for other names, "
            "or allow_empty=True."
        )
    key = _typed_key(key)
    for i, block in enumerate(blocks):
        _reinit_block(flat, block, jax.random.fold_in(key, i), opts)
    return rebuild(tree, flat)
