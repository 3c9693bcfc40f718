"""Whole-model transforms: find attention blocks in a parameter tree and re-initialize them.

:func:`mimetic_attention` walks a Flax linen params dict, an ``nnx.State`` or an
NNX module, finds every attention block by its parameter names, and replaces the
query/key/value/out kernels by mimetic ones (:mod:`mimetic_jax.attention`), with
the same shapes, dtypes and (for concrete arrays) shardings. Everything else,
biases included, is left as it is.

A block is a parent path whose children match an :class:`AttentionLayout`:

=================  ===============================================  ======================================
layout             children (each with a ``kernel``)                 kernel shapes
=================  ===============================================  ======================================
``FLAX``           ``query``, ``key``, ``value``, ``out``           ``(d, H, k)`` ×3, ``(H, k, d)``
``HF``             ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``   ``(d, H k)`` ×3, ``(H k, d)``
``FUSED``          ``qkv``, ``out``                                 ``(d, 3, H, k)`` or ``(d, (H+2H_kv) k)``
``GPT2``           ``c_attn``, ``c_proj``                           flat fused, ``(H k, d)``
=================  ===============================================  ======================================

Flat kernels do not carry the head count: pass ``num_heads`` (and
``num_kv_heads``). Layers stacked by ``nn.scan``/``nnx.vmap`` carry leading axes:
pass ``stacked_axes`` (each stacked layer gets its own draw).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax._tree import Path, candidate_parents, common_stack, flatten, map_stacked, path_name, put_like, rebuild
from mimetic_jax.attention import METHODS, query_key, value_output

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AttentionLayout:
    """Parameter names of one attention layout.

    Separate projections set ``query``, ``key``, ``value`` and ``out``; a fused
    projection sets ``qkv`` and ``out`` (leave the others ``None``).
    """

    out: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    qkv: str | None = None
    kernel: str = "kernel"

    def __post_init__(self) -> None:
        separate = (self.query, self.key, self.value)
        if self.qkv is None and None in separate:
            raise ValueError(f"AttentionLayout needs query, key and value names, or a fused qkv name: {self}")
        if self.qkv is not None and any(n is not None for n in separate):
            raise ValueError(f"AttentionLayout takes either qkv or query/key/value, not both: {self}")

    @property
    def names(self) -> tuple[str, ...]:
        if self.qkv is not None:
            return (self.qkv, self.out)
        return (self.query, self.key, self.value, self.out)  # type: ignore[return-value]


FLAX = AttentionLayout(query="query", key="key", value="value", out="out")
HF = AttentionLayout(query="q_proj", key="k_proj", value="v_proj", out="o_proj")
FUSED = AttentionLayout(qkv="qkv", out="out")
GPT2 = AttentionLayout(qkv="c_attn", out="c_proj")
DEFAULT_LAYOUTS: tuple[AttentionLayout, ...] = (FLAX, HF, FUSED, GPT2)


@dataclasses.dataclass(frozen=True)
class AttentionBlock:
    """One attention block found in a tree: where it is and its sizes."""

    path: Path
    layout: AttentionLayout
    d_in: int
    d_kv: int
    d_out: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    stack: tuple[int, ...]

    @property
    def name(self) -> str:
        return path_name(self.path)

    def kernel_path(self, name: str) -> Path:
        return (*self.path, name, self.layout.kernel)


# --------------------------------------------------------------------------- finding blocks


def _sizes(layout: AttentionLayout, shapes: Sequence[tuple[int, ...]], num_heads: int | None,
           num_kv_heads: int | None, where: str) -> tuple[int, int, int, int, int, int]:
    """Return ``(d_in, d_kv, d_out, H, H_kv, k)`` from the kernels' shapes (no leading axes)."""

    def need_heads() -> int:
        if num_heads is None:
            raise ValueError(f"attention block {where!r} has flat kernels {list(shapes)}: pass num_heads=")
        return num_heads

    def bad(expected: str) -> ValueError:
        return ValueError(f"attention block {where!r}: kernel shapes {list(shapes)} do not fit {expected}")

    if layout.qkv is None:
        q, k, v, o = shapes
        if len(q) == 3:
            if not (len(k) == len(v) == 3 and len(o) == 3 and k == v and q[2] == k[2] and o[:2] == q[1:]):
                raise bad("query (d, H, k), key/value (d_kv, H_kv, k), out (H, k, d_out)")
            h, h_kv, hd = q[1], k[1], q[2]
            if h % h_kv:
                raise bad(f"grouped attention: {h} query heads are not a multiple of {h_kv} key heads")
            return q[0], k[0], o[2], h, h_kv, hd
        if not (len(q) == len(k) == len(v) == len(o) == 2 and k == v and o[0] == q[1]):
            raise bad("query (d, H k), key/value (d_kv, H_kv k), out (H k, d_out)")
        h = need_heads()
        if q[1] % h:
            raise bad(f"num_heads={h} does not divide the query width {q[1]}")
        hd = q[1] // h
        if k[1] % hd:
            raise bad(f"head_dim={hd} does not divide the key width {k[1]}")
        h_kv = k[1] // hd
        if num_kv_heads is not None and num_kv_heads != h_kv:
            raise bad(f"num_kv_heads={num_kv_heads} (the key width {k[1]} gives {h_kv})")
        if h % h_kv:
            raise bad(f"grouped attention: {h} query heads are not a multiple of {h_kv} key heads")
        return q[0], k[0], o[1], h, h_kv, hd
    fused, o = shapes
    if len(fused) == 4:
        if not (fused[1] == 3 and len(o) == 3 and o[:2] == fused[2:]):
            raise bad("qkv (d, 3, H, k), out (H, k, d_out)")
        return fused[0], fused[0], o[2], fused[2], fused[2], fused[3]
    if not (len(fused) == 2 and len(o) == 2):
        raise bad("qkv (d, 3, H, k) or (d, (H + 2 H_kv) k), out (H k, d_out)")
    h = need_heads()
    h_kv = h if num_kv_heads is None else num_kv_heads
    if h % h_kv or fused[1] % (h + 2 * h_kv) or o[0] * (h + 2 * h_kv) != fused[1] * h:
        raise bad(f"a flat fused kernel with num_heads={h}, num_kv_heads={h_kv}")
    return fused[0], fused[0], o[1], h, h_kv, fused[1] // (h + 2 * h_kv)




def _find(flat: Mapping[Path, Any], layouts: Sequence[AttentionLayout], include: str | None, exclude: str | None,
          num_heads: int | None, num_kv_heads: int | None, stacked_axes: Any) -> list[AttentionBlock]:
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    blocks = []
    for parent, name in candidate_parents(flat, (2,), include, exclude, root=True):
        for layout in layouts:
            paths = [(*parent, n, layout.kernel) for n in layout.names]
            if not all(p in flat for p in paths):
                continue
            shapes = [tuple(jnp.shape(flat[p])) for p in paths]
            stack = common_stack(f"attention block {name!r}", shapes, stacked_axes)
            sizes = _sizes(layout, [s[stacked_axes:] for s in shapes], num_heads, num_kv_heads, name)
            blocks.append(AttentionBlock(parent, layout, *sizes, stack=stack))
            break
    return blocks


def find_attention_blocks(
    tree: Any,
    *,
    layouts: Sequence[AttentionLayout] = DEFAULT_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    stacked_axes: int = 0,
) -> list[AttentionBlock]:
    """List the attention blocks :func:`mimetic_attention` would change, with their sizes.

    ``include``/``exclude`` are regular expressions searched in the block's path
    (``"encoder/layers_0/attn"``).
    """
    return _find(flatten(tree), layouts, include, exclude, num_heads, num_kv_heads, stacked_axes)


# --------------------------------------------------------------------------- re-initializing


def _draw(block: AttentionBlock, key: Array, opts: dict[str, Any], parts: tuple[bool, bool]):
    """``(w_q, w_k, w_v, w_o)`` for one unstacked block in Flax 3-D layout; ``None`` for parts not drawn."""
    k_qk, k_vo = jax.random.split(key)
    heads, kv, k = block.num_heads, block.num_kv_heads, block.head_dim
    w_q = w_k = w_v = w_o = None
    if parts[0]:
        w_q, w_k = query_key(k_qk, block.d_in, heads, k, num_kv_heads=kv, d_kv=block.d_kv, alpha=opts["alpha"],
                             beta=opts["beta"], distribution=opts["distribution"], method=opts["method"])
    if parts[1]:
        w_v, w_o = value_output(k_vo, block.d_kv, heads, k, num_kv_heads=kv, d_out=block.d_out,
                                alpha=opts["value_alpha"], beta=opts["value_beta"], sign=opts["sign"],
                                distribution=opts["distribution"], method=opts["method"],
                                rotate_heads=opts["rotate_heads"])
    return w_q, w_k, w_v, w_o


def _merge_fused(old: Array, parts: Sequence[Array | None], block: AttentionBlock) -> Array:
    """Write new query/key/value parts into a fused kernel, keeping the parts not re-drawn."""
    if old.ndim == 4:
        return jnp.stack([old[:, i] if w is None else w for i, w in enumerate(parts)], axis=1)
    widths = [block.num_heads * block.head_dim, *(2 * [block.num_kv_heads * block.head_dim])]
    starts = [0, widths[0], widths[0] + widths[1]]
    pieces = [old[:, s:s + n] if w is None else w.reshape(-1, n) for s, n, w in zip(starts, widths, parts)]
    return jnp.concatenate(pieces, axis=1)


def _write(block: AttentionBlock, old: dict[str, Array], new: tuple) -> dict[str, Array]:
    """The block's kernels in their own layout and dtype, old ones kept where nothing was drawn."""
    lay = block.layout

    def cast(w: Array | None, o: Array) -> Array:
        return o if w is None else w.reshape(o.shape).astype(o.dtype)

    if lay.qkv is None:
        out = {n: cast(w, old[n]) for n, w in zip((lay.query, lay.key, lay.value), new[:3])}
    else:
        out = {lay.qkv: _merge_fused(old[lay.qkv], new[:3], block).astype(old[lay.qkv].dtype)}
    out[lay.out] = cast(new[3], old[lay.out])
    return out


#: Elements of new kernels the ``fast`` method draws at once across blocks of equal shape.
FAST_GROUP_ELEMENTS = 1 << 26


def _signature(block: AttentionBlock, flat: Mapping[Path, Any]) -> tuple:
    """Blocks with equal signatures are drawn together (same sizes, kernel shapes and dtypes)."""
    kernels = tuple((tuple(jnp.shape(flat[block.kernel_path(n)])), jnp.result_type(flat[block.kernel_path(n)]))
                    for n in block.layout.names)
    return dataclasses.replace(block, path=()), kernels


def _reinit_group(flat: dict[Path, Any], blocks: Sequence[AttentionBlock], keys: Sequence[Array],
                  opts: dict[str, Any], parts: tuple[bool, bool]) -> None:
    """Re-draw blocks of one signature, block ``i`` from ``keys[i]``, as one batched computation.

    ``fast``: ``lax.map`` in batches of blocks (``vmap`` inside a batch) holding at most
    about ``FAST_GROUP_ELEMENTS`` new kernel elements, so a deep model costs one
    launch sequence instead of one per block and memory stays bounded. ``exact``:
    one block at a time (each one already bounds its ``d×d`` targets).
    """
    block, names = blocks[0], blocks[0].layout.names

    def one(k: Array, old: dict[str, Array]) -> dict[str, Array]:
        return _write(block, old, _draw(block, k, opts, parts))

    def per_block(args: tuple[Array, dict[str, Array]]) -> dict[str, Array]:
        key, old = args
        return map_stacked(one, key, block.stack, old)

    olds = {n: jnp.stack([flat[b.kernel_path(n)] for b in blocks]) for n in names}
    size = sum(math.prod(jnp.shape(flat[block.kernel_path(n)])) for n in names)
    batch = max(1, FAST_GROUP_ELEMENTS // size) if opts["method"] == "fast" else 1
    new = jax.lax.map(per_block, (jnp.stack(keys), olds), batch_size=min(batch, len(blocks)))
    for i, b in enumerate(blocks):
        for n in names:
            flat[b.kernel_path(n)] = put_like(new[n][i], flat[b.kernel_path(n)])


def mimetic_attention(
    tree: Any,
    key: Array,
    *,
    alpha: float = 0.7,
    beta: float = 0.7,
    value_alpha: float = 0.4,
    value_beta: float = 0.4,
    sign: int = -1,
    distribution: str = "normal",
    method: str = "exact",
    rotate_heads: bool = False,
    query_key: bool = True,  # noqa: F811 - option name mirrors the sampler it switches
    value_output: bool = True,  # noqa: F811
    layouts: Sequence[AttentionLayout] = DEFAULT_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    stacked_axes: int = 0,
    allow_empty: bool = False,
) -> Any:
    """Re-initialize every attention block of a model mimetically.

    Query/key get ``W_q^h W_k^hᵀ ≈ α Z_h + β I`` per head, value/out get
    ``W_v W_o ≈ value_alpha Z + sign·value_beta I`` per layer (SPEC §1, Trockman &
    Kolter 2023); see :func:`mimetic_jax.query_key` and
    :func:`mimetic_jax.value_output` for the math and the options. Block ``i``
    (in sorted path order) draws from ``jax.random.fold_in(key, i)``; blocks of equal
    shapes are drawn together in one batched computation (the same numbers as one by one).

    Args:
      tree: a linen params dict (with or without the ``"params"`` level), an
        ``nnx.State``, or an ``nnx.Module``.
      key: a PRNG key.
      query_key, value_output: which of the two structures to write (both by default).
      layouts: the :class:`AttentionLayout` s to look for.
      include, exclude: regular expressions on the block path.
      num_heads, num_kv_heads: head counts for flat (``Dense``) kernels.
      stacked_axes: leading axes of stacked layers (``nn.scan``); each slice gets its own draw.
      allow_empty: return the tree unchanged when it has no attention block
        (otherwise that is a ``ValueError``).

    Returns:
      For a dict or an ``nnx.State``: a new tree with the same structure, shapes
      and dtypes (the input is not changed). For an ``nnx.Module``: the module
      itself, updated **in place** (like ``nnx.update``).

    Works under ``jax.jit``, so a sharded model is created directly sharded::

      init = jax.jit(lambda k: mimetic_attention(model.init(k, x), k), out_shardings=shardings)

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> attn = nn.MultiHeadDotProductAttention(num_heads=4)
      >>> x = jnp.ones((1, 16, 64))
      >>> params = attn.init(jax.random.key(0), x)
      >>> params = mimetic_attention(params, jax.random.key(1))
      >>> w_q = params["params"]["query"]["kernel"]; w_k = params["params"]["key"]["kernel"]
      >>> float(jnp.einsum("ik,ik->", w_q[:, 0], w_k[:, 0]) / 64) > 0.3
      True
    """
    _checks.choice("method", method, METHODS)
    if not (query_key or value_output):
        raise ValueError("nothing to do: query_key and value_output are both False")
    opts = dict(alpha=alpha, beta=beta, value_alpha=value_alpha, value_beta=value_beta, sign=sign,
                distribution=distribution, method=method, rotate_heads=rotate_heads)
    flat = flatten(tree)
    blocks = _find(flat, layouts, include, exclude, num_heads, num_kv_heads, stacked_axes)
    if not blocks:
        if allow_empty:
            return tree
        names = sorted({p[-2] for p in flat if len(p) >= 2})[:12]
        raise ValueError(
            "no attention block found (looked for "
            + "; ".join("/".join(lay.names) for lay in layouts)
            + f" each with a kernel; the tree's layer names include {names}). "
            "Pass layouts=[AttentionLayout(...)] for other names, or allow_empty=True."
        )
    key = jax.random.wrap_key_data(key) if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key) \
        else key
    groups: dict[tuple, list[int]] = {}
    for i, block in enumerate(blocks):
        groups.setdefault(_signature(block, flat), []).append(i)
    for members in groups.values():
        _reinit_group(flat, [blocks[i] for i in members], [jax.random.fold_in(key, i) for i in members], opts,
                      (bool(query_key), bool(value_output)))
    return rebuild(tree, flat)
