"""Whole-model transforms: find attention blocks in a model and re-initialize them.

:func:`mimetic_attention` walks a model's parameters — a Flax linen variable dict, an
``nnx.State`` or ``nnx.Module``, an Equinox module, or a plain nested dict such as
the ``params`` of a transformers Flax model — finds every attention block by its
parameter names, and replaces the query/key/value/out kernels by mimetic ones
(:mod:`mimetic_jax.attention`), with the same shapes, dtypes and (for concrete arrays)
shardings. Everything else, biases included, is left as it is.

A block is a parent path under which every part of an :class:`AttentionLayout` is
found; a part may sit several levels down (``"self/query"``), so query/key/value and
the out projection may live in sibling subtrees (BERT, ViT). Known model families
are data — :data:`DEFAULT_LAYOUTS`, tried in order:

==============  ==============================================================  =============================
layout          parts (each holding a ``kernel``; Equinox: ``weight``)          model code
==============  ==============================================================  =============================
``FLAX``        ``query``, ``key``, ``value``, ``out``                          ``nn.MultiHeadDotProductAttention``,
                                                                                ``nnx.MultiHeadAttention``
``HF``          ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``                  LLaMA, Mistral, Gemma (grouped-query)
``HF_OUT_PROJ`` ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``                CLIP, BART, Whisper, OPT
``HF_VIT``      ``attention/{query,key,value}``, ``output/dense``               transformers ViT, DeiT
``HF_BERT``     ``self/{query,key,value}``, ``output/dense``                    BERT, RoBERTa, ELECTRA
``T5``          ``q``, ``k``, ``v``, ``o``                                      T5, mT5 (self- and cross-attention)
``DISTILBERT``  ``q_lin``, ``k_lin``, ``v_lin``, ``out_lin``                    DistilBERT
``ALBERT``      ``query``, ``key``, ``value``, ``dense``                        ALBERT
``FUSED``       ``qkv``, ``out``                                                fused ``(d, 3, H, k)`` or flat
``TIMM``        ``qkv``, ``proj``                                               timm / big_vision-style ports
``GPT2``        ``c_attn``, ``c_proj``, stored ``(out, in)``                    transformers GPT-2 ``Conv1D``
``BLOOM``       ``query_key_value`` (per-head packing), ``dense``               BLOOM
``EQUINOX``     ``{query,key,value,output}_proj``, ``weight`` ``(out, in)``     ``eqx.nn.MultiheadAttention``
==============  ==============================================================  =============================

Kernel shapes, in Flax's ``(in, out)`` orientation (a layout with ``transposed=True``
stores them ``(out, in)``, as PyTorch-style code, Equinox and GPT-2's ``Conv1D`` do):
query/key/value ``(d, H, k)`` and out ``(H, k, d)``, or flat ``(d, H k)`` and
``(H k, d)``; fused ``(d, 3, H, k)`` or flat ``(d, (H + 2 H_kv) k)`` packed
``[q | k | v]`` (``packing="qkv"``) or per head ``[q_h k_h v_h]`` (``packing="heads"``).

Flat kernels do not carry the head count. It comes, first found first, from
``num_heads``/``num_kv_heads``, from the module that holds the block (an Equinox or
NNX attention module's ``num_heads``), or from ``config`` — a model config such as
``model.config`` of a transformers model (``num_attention_heads``, ``n_head`` or
``num_heads``; ``num_key_value_heads`` for grouped-query attention). Layers stacked by
``nn.scan``/``nnx.vmap`` carry leading axes: pass ``stacked_axes`` (each stacked layer
gets its own draw).

Another layout is a few lines of data::

    MY_LAYOUT = AttentionLayout(query="attn/wq", key="attn/wk", value="attn/wv", out="attn/wo")
    mimetic_attention(params, key, layouts=[MY_LAYOUT, *DEFAULT_LAYOUTS])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from mimetic_jax import _checks
from mimetic_jax._tree import (
    Path,
    common_stack,
    flatten,
    map_stacked,
    match_parts,
    module_at,
    path_name,
    put_like,
    rebuild,
)
from mimetic_jax.attention import METHODS, query_key, value_output

Array = jax.Array

__all__ = [
    "ALBERT",
    "BLOOM",
    "DEFAULT_LAYOUTS",
    "DISTILBERT",
    "EQUINOX",
    "FLAX",
    "FUSED",
    "GPT2",
    "HF",
    "HF_BERT",
    "HF_OUT_PROJ",
    "HF_VIT",
    "T5",
    "TIMM",
    "AttentionBlock",
    "AttentionLayout",
    "find_attention_blocks",
    "heads_from_config",
    "mimetic_attention",
]


def _part(field: str, value: Any) -> str | None:
    """A layout part as a ``"a/b"`` path string (a tuple of names is accepted too)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, str) and v for v in value):
        value = "/".join(value)
    if not isinstance(value, str) or not value or any(not seg for seg in value.split("/")):
        raise TypeError(
            f"AttentionLayout {field} must be a name or a '/'-separated path such as 'self/query', got {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class AttentionLayout:
    """Where one attention layout keeps its kernels, relative to the block.

    Separate projections set ``query``, ``key``, ``value`` and ``out``; a fused
    projection sets ``qkv`` and ``out`` (leave the others ``None``). Each part is a
    name or a ``/``-separated path below the block (``"self/query"``,
    ``"output/dense"``), so the parts may sit in different subtrees.

    Attributes:
      out, query, key, value, qkv: the parts' paths relative to the block.
      kernel: the name of the weight leaf in each part (``"kernel"`` in Flax,
        ``"weight"`` in Equinox).
      transposed: the kernels are stored ``(out, in)`` (PyTorch-style code, Equinox,
        GPT-2's ``Conv1D``) rather than Flax's ``(in, out)``.
      packing: how a flat fused kernel packs its columns: ``"qkv"`` (``[q | k | v]``,
        each ``H k`` wide) or ``"heads"`` (``[q_h k_h v_h]`` per head, GPT-NeoX style).
      name: a label for messages.
    """

    out: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    qkv: str | None = None
    kernel: str = "kernel"
    transposed: bool = False
    packing: Literal["qkv", "heads"] = "qkv"
    name: str = ""

    def __post_init__(self) -> None:
        for f in ("out", "query", "key", "value", "qkv"):
            object.__setattr__(self, f, _part(f, getattr(self, f)))
        if self.out is None:
            raise TypeError("AttentionLayout out must be a name, got None")
        separate = (self.query, self.key, self.value)
        if self.qkv is None and None in separate:
            raise ValueError(f"AttentionLayout needs query, key and value names, or a fused qkv name: {self}")
        if self.qkv is not None and any(n is not None for n in separate):
            raise ValueError(f"AttentionLayout takes either qkv or query/key/value, not both: {self}")
        if not isinstance(self.kernel, str) or not self.kernel:
            raise TypeError(f"AttentionLayout kernel must be a leaf name such as 'kernel', got {self.kernel!r}")
        if not isinstance(self.transposed, bool):
            raise TypeError(f"AttentionLayout transposed must be a bool, got {self.transposed!r}")
        if self.packing not in ("qkv", "heads"):
            raise ValueError(f"AttentionLayout packing must be 'qkv' or 'heads', got {self.packing!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The parts in order: ``(query, key, value, out)`` or ``(qkv, out)``."""
        if self.qkv is not None:
            return (self.qkv, self.out)
        return (self.query, self.key, self.value, self.out)  # type: ignore[return-value]

    @property
    def label(self) -> str:
        return self.name or "/".join(self.names)

    def relative(self, name: str) -> tuple[str, ...]:
        """The path of part ``name`` below the block, ending in the kernel leaf."""
        return (*name.split("/"), self.kernel)


FLAX = AttentionLayout(query="query", key="key", value="value", out="out", name="FLAX")
HF = AttentionLayout(query="q_proj", key="k_proj", value="v_proj", out="o_proj", name="HF")
HF_OUT_PROJ = AttentionLayout(query="q_proj", key="k_proj", value="v_proj", out="out_proj", name="HF_OUT_PROJ")
HF_VIT = AttentionLayout(
    query="attention/query", key="attention/key", value="attention/value", out="output/dense", name="HF_VIT"
)
HF_BERT = AttentionLayout(query="self/query", key="self/key", value="self/value", out="output/dense", name="HF_BERT")
T5 = AttentionLayout(query="q", key="k", value="v", out="o", name="T5")
DISTILBERT = AttentionLayout(query="q_lin", key="k_lin", value="v_lin", out="out_lin", name="DISTILBERT")
ALBERT = AttentionLayout(query="query", key="key", value="value", out="dense", name="ALBERT")
BLOOM = AttentionLayout(qkv="query_key_value", out="dense", packing="heads", name="BLOOM")
FUSED = AttentionLayout(qkv="qkv", out="out", name="FUSED")
TIMM = AttentionLayout(qkv="qkv", out="proj", name="TIMM")
GPT2 = AttentionLayout(qkv="c_attn", out="c_proj", transposed=True, name="GPT2")
EQUINOX = AttentionLayout(
    query="query_proj",
    key="key_proj",
    value="value_proj",
    out="output_proj",
    kernel="weight",
    transposed=True,
    name="EQUINOX",
)
#: The known model families, tried in this order at every candidate block.
DEFAULT_LAYOUTS: tuple[AttentionLayout, ...] = (
    FLAX,
    HF,
    HF_OUT_PROJ,
    HF_VIT,
    HF_BERT,
    T5,
    DISTILBERT,
    ALBERT,
    FUSED,
    TIMM,
    GPT2,
    BLOOM,
    EQUINOX,
)

_CONFIG_HEADS = ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")
_CONFIG_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")


def _config_value(config: Any, names: Sequence[str]) -> int | None:
    for n in names:
        v = config.get(n) if isinstance(config, Mapping) else getattr(config, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def heads_from_config(config: Any) -> tuple[int | None, int | None]:
    """``(num_heads, num_kv_heads)`` read off a model config (an object or a mapping).

    Looks for ``num_attention_heads``, ``n_head``, ``num_heads``, ``encoder_attention_heads``
    or ``n_heads``, and ``num_key_value_heads``, ``num_kv_heads`` or ``n_kv_heads``
    (``None`` where none is set), the names transformers' configs use.

    Example:
      >>> heads_from_config({"num_attention_heads": 32, "num_key_value_heads": 8})
      (32, 8)
    """
    if config is None:
        return None, None
    heads = _config_value(config, _CONFIG_HEADS)
    if heads is None:
        raise ValueError(
            f"config has no head count (looked for {', '.join(_CONFIG_HEADS)}); got {type(config).__name__}"
        )
    return heads, _config_value(config, _CONFIG_KV_HEADS)


@dataclasses.dataclass(frozen=True)
class AttentionBlock:
    """One attention block found in a tree: where it is, where its kernels are, and its sizes.

    ``kernel_paths`` are the full paths of the layout's parts (:attr:`AttentionLayout.names`
    order); sizes are those of one (unstacked) layer.
    """

    path: Path
    layout: AttentionLayout
    d_in: int
    d_kv: int
    d_out: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    stack: tuple[int, ...]
    kernel_paths: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return path_name(self.path)

    def kernel_path(self, name: str) -> Path:
        """The full path of the kernel of part ``name`` (one of ``layout.names``)."""
        if self.kernel_paths:
            return self.kernel_paths[self.layout.names.index(name)]
        return (*self.path, *self.layout.relative(name))

    def to_flax(self, kernel: Array) -> Array:
        """A kernel of this block (stacked or not) in Flax's ``(in, out)`` orientation."""
        return jnp.swapaxes(kernel, -1, -2) if self.layout.transposed else kernel


# --------------------------------------------------------------------------- finding blocks


def _flax_shape(layout: AttentionLayout, shape: tuple[int, ...]) -> tuple[int, ...]:
    if layout.transposed and len(shape) >= 2:
        return (*shape[:-2], shape[-1], shape[-2])
    return shape


def _sizes(
    layout: AttentionLayout,
    shapes: Sequence[tuple[int, ...]],
    num_heads: int | None,
    num_kv_heads: int | None,
    where: str,
) -> tuple[int, int, int, int, int, int]:
    """Return ``(d_in, d_kv, d_out, H, H_kv, k)`` from the kernels' Flax-oriented shapes (no leading axes)."""

    def need_heads() -> int:
        if num_heads is None:
            raise ValueError(
                f"attention block {where!r} has flat kernels {list(shapes)} that do not carry the "
                "head count: pass num_heads= (and num_kv_heads= for grouped-query attention), or "
                "config=model.config to read it from the model's config"
            )
        return num_heads

    def bad(expected: str) -> ValueError:
        return ValueError(
            f"attention block {where!r} (layout {layout.label}): kernel shapes {list(shapes)} do not fit {expected}"
        )

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
    if layout.packing == "heads" and h_kv != h:
        raise bad(
            f"packing='heads' with num_kv_heads={h_kv} != num_heads={h} (per-head packing has one key "
            "head per query head)"
        )
    if h % h_kv or fused[1] % (h + 2 * h_kv) or o[0] * (h + 2 * h_kv) != fused[1] * h:
        raise bad(f"a flat fused kernel with num_heads={h}, num_kv_heads={h_kv}")
    return fused[0], fused[0], o[1], h, h_kv, fused[1] // (h + 2 * h_kv)


def _hint(layout: AttentionLayout, shapes: list[tuple[int, ...]], stacked_axes: int, heads: tuple, where: str) -> str:
    """The likely fix when a block's shapes do not fit its layout: ``stacked_axes`` or the orientation."""
    unstacked = [s[stacked_axes:] for s in shapes]
    lead = {s[stacked_axes] for s in shapes if len(s) > stacked_axes + 1}
    if len(lead) == 1 and all(len(s) > stacked_axes + 1 for s in shapes):
        try:
            _sizes(layout, [_flax_shape(layout, s[1:]) for s in unstacked], *heads, where)
            return (
                f" — every kernel has a leading axis of {lead.pop()}: are the layers stacked "
                f"(nn.scan / nnx.vmap)? pass stacked_axes={stacked_axes + 1}"
            )
        except ValueError:
            pass
    flipped = dataclasses.replace(layout, transposed=not layout.transposed)
    try:
        _sizes(flipped, [_flax_shape(flipped, s) for s in unstacked], *heads, where)
        orient = "(out, in)" if flipped.transposed else "(in, out)"
        return (
            f" — the shapes fit if the kernels are stored {orient}: use "
            f"AttentionLayout(..., transposed={flipped.transposed})"
        )
    except ValueError:
        return ""


def _heads_for(
    tree: Any,
    parent: Path,
    num_heads: int | None,
    num_kv_heads: int | None,
    config_heads: tuple[int | None, int | None],
) -> tuple[int | None, int | None]:
    """Head counts of one block: the options, else the module holding it, else the config."""
    if num_heads is not None:
        return num_heads, num_kv_heads
    module = module_at(tree, parent) if tree is not None else None
    if module is not None:
        h = _config_value(module, ("num_heads",))
        if h is not None:
            return h, num_kv_heads if num_kv_heads is not None else _config_value(module, ("num_kv_heads",))
    h, kv = config_heads
    return h, num_kv_heads if num_kv_heads is not None else kv


def _check_layouts(layouts: Any) -> tuple[AttentionLayout, ...]:
    if isinstance(layouts, AttentionLayout):
        raise TypeError(
            "layouts must be a sequence of AttentionLayout, got one AttentionLayout; wrap it in a list: "
            "layouts=[layout]"
        )
    if isinstance(layouts, (str, bytes, Mapping)) or not isinstance(layouts, Sequence) or not layouts:
        raise TypeError(f"layouts must be a non-empty sequence of AttentionLayout, got {layouts!r}")
    for i, lay in enumerate(layouts):
        if not isinstance(lay, AttentionLayout):
            raise TypeError(f"layouts[{i}] must be an AttentionLayout, got {type(lay).__name__}")
    return tuple(layouts)


@dataclasses.dataclass(frozen=True)
class _Partial:
    """A layout of which some parts were found at a parent, for the nothing-found message."""

    parent: Path
    layout: AttentionLayout
    missing: tuple[str, ...]


def _match(
    flat: Mapping[Path, Any], layouts: Sequence[AttentionLayout], include: str | None, exclude: str | None
) -> tuple[list[tuple[Path, AttentionLayout, tuple[Path, ...]]], list[_Partial]]:
    """Every ``(parent, layout, kernel paths)`` whose parts all exist (first layout wins), and the partial matches."""
    claimed: set[Path] = set()
    found: dict[Path, tuple[Path, AttentionLayout, tuple[Path, ...]]] = {}
    partial: list[_Partial] = []
    for layout in layouts:
        matches, partly = match_parts(flat, [layout.relative(n) for n in layout.names], include, exclude, root=True)
        partial += [_Partial(parent, layout, tuple(layout.names[i] for i in missing)) for parent, missing in partly]
        for parent, paths in matches:
            if parent in found or any(p in claimed for p in paths):
                continue
            claimed.update(paths)
            found[parent] = (parent, layout, paths)
    return [found[p] for p in sorted(found, key=lambda p: tuple(str(x) for x in p))], partial


def _find(
    flat: Mapping[Path, Any],
    layouts: Sequence[AttentionLayout],
    include: str | None,
    exclude: str | None,
    num_heads: int | None,
    num_kv_heads: int | None,
    stacked_axes: Any,
    *,
    tree: Any = None,
    config: Any = None,
) -> list[AttentionBlock]:
    return _find_with_partials(
        flat, layouts, include, exclude, num_heads, num_kv_heads, stacked_axes, tree=tree, config=config
    )[0]


def _find_with_partials(
    flat: Mapping[Path, Any],
    layouts: Sequence[AttentionLayout],
    include: str | None,
    exclude: str | None,
    num_heads: int | None,
    num_kv_heads: int | None,
    stacked_axes: Any,
    *,
    tree: Any = None,
    config: Any = None,
) -> tuple[list[AttentionBlock], list[_Partial]]:
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    layouts = _check_layouts(layouts)
    if num_heads is not None:
        num_heads = _checks.positive_int("num_heads", num_heads)
    if num_kv_heads is not None:
        num_kv_heads = _checks.positive_int("num_kv_heads", num_kv_heads)
    config_heads = heads_from_config(config)
    matches, partial = _match(flat, layouts, include, exclude)
    blocks = []
    for parent, layout, paths in matches:
        name = path_name(parent)
        shapes = [tuple(jnp.shape(flat[p])) for p in paths]
        heads = _heads_for(tree, parent, num_heads, num_kv_heads, config_heads)
        try:
            stack = common_stack(f"attention block {name!r}", shapes, stacked_axes)
            sizes = _sizes(layout, [_flax_shape(layout, s[stacked_axes:]) for s in shapes], *heads, name)
        except ValueError as e:
            raise ValueError(f"{e}{_hint(layout, shapes, stacked_axes, heads, name)}") from None
        blocks.append(AttentionBlock(parent, layout, *sizes, stack=stack, kernel_paths=paths))
    return blocks, partial


def find_attention_blocks(
    tree: Any,
    *,
    layouts: Sequence[AttentionLayout] = DEFAULT_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    stacked_axes: int = 0,
    config: Any = None,
) -> list[AttentionBlock]:
    """List the attention blocks :func:`mimetic_attention` would change, with their sizes.

    ``include``/``exclude`` are regular expressions searched in the block's path
    (``"encoder/layers_0/attn"``); the other arguments are those of :func:`mimetic_attention`.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> v = nn.MultiHeadDotProductAttention(num_heads=4).init(jax.random.key(0), jnp.ones((1, 8, 32)))
      >>> [(b.name, b.layout.name, b.num_heads, b.head_dim) for b in find_attention_blocks(v)]
      [('params', 'FLAX', 4, 8)]
    """
    return _find(
        flatten(tree), layouts, include, exclude, num_heads, num_kv_heads, stacked_axes, tree=tree, config=config
    )


# --------------------------------------------------------------------------- re-initializing


def _draw(block: AttentionBlock, key: Array, opts: dict[str, Any], parts: tuple[bool, bool]):
    """``(w_q, w_k, w_v, w_o)`` for one unstacked block in Flax 3-D layout; ``None`` for parts not drawn."""
    k_qk, k_vo = jax.random.split(key)
    heads, kv, k = block.num_heads, block.num_kv_heads, block.head_dim
    w_q = w_k = w_v = w_o = None
    if parts[0]:
        w_q, w_k = query_key(
            k_qk,
            block.d_in,
            heads,
            k,
            num_kv_heads=kv,
            d_kv=block.d_kv,
            alpha=opts["alpha"],
            beta=opts["beta"],
            distribution=opts["distribution"],
            method=opts["method"],
        )
    if parts[1]:
        w_v, w_o = value_output(
            k_vo,
            block.d_kv,
            heads,
            k,
            num_kv_heads=kv,
            d_out=block.d_out,
            alpha=opts["value_alpha"],
            beta=opts["value_beta"],
            sign=opts["sign"],
            distribution=opts["distribution"],
            method=opts["method"],
            rotate_heads=opts["rotate_heads"],
        )
    return w_q, w_k, w_v, w_o


def _merge_fused(old: Array, parts: Sequence[Array | None], block: AttentionBlock) -> Array:
    """Write new query/key/value parts (Flax-oriented) into a fused kernel, keeping the parts not re-drawn."""
    if old.ndim == 4:
        return jnp.stack([old[:, i] if w is None else w for i, w in enumerate(parts)], axis=1)
    d, h, k = old.shape[0], block.num_heads, block.head_dim
    if block.layout.packing == "heads":
        per_head = old.reshape(d, h, 3, k)
        merged = jnp.stack(
            [per_head[:, :, i] if w is None else w.reshape(d, h, k) for i, w in enumerate(parts)], axis=2
        )
        return merged.reshape(old.shape)
    widths = [h * k, *(2 * [block.num_kv_heads * k])]
    starts = [0, widths[0], widths[0] + widths[1]]
    pieces = [old[:, s : s + n] if w is None else w.reshape(-1, n) for s, n, w in zip(starts, widths, parts)]
    return jnp.concatenate(pieces, axis=1)


def _write(block: AttentionBlock, old: dict[str, Array], new: tuple) -> dict[str, Array]:
    """The block's kernels in their own layout, orientation and dtype, old ones kept where nothing was drawn."""
    lay = block.layout

    def put(w: Array | None, o: Array) -> Array:
        if w is None:
            return o
        flax_shape = _flax_shape(lay, o.shape)
        return block.to_flax(w.reshape(flax_shape)).astype(o.dtype)

    if lay.qkv is None:
        out = {n: put(w, old[n]) for n, w in zip((lay.query, lay.key, lay.value), new[:3])}
    else:
        fused = old[lay.qkv]
        merged = _merge_fused(block.to_flax(fused), new[:3], block)
        out = {lay.qkv: block.to_flax(merged).astype(fused.dtype)}
    out[lay.out] = put(new[3], old[lay.out])
    return out


def _nothing_found(
    flat: Mapping[Path, Any],
    layouts: Sequence[AttentionLayout],
    partial: Sequence[_Partial],
    include: str | None,
    exclude: str | None,
) -> ValueError:
    """What was looked for, what was found in part (and which part is missing), and the fix."""
    msg = "no attention block found"
    if include is not None or exclude is not None:
        msg += f" with include={include!r}, exclude={exclude!r}"
    if partial:
        best = sorted(partial, key=lambda p: len(p.missing))[:3]
        found = "; ".join(
            f"at {path_name(p.parent)!r} layout {p.layout.label} has "
            f"{', '.join(n for n in p.layout.names if n not in p.missing)} but no "
            f"{' / '.join(p.missing)}"
            for p in best
        )
        msg += (
            f": {found}. Describe the missing part's path relative to the block, e.g. "
            "AttentionLayout(query='self/query', key='self/key', value='self/value', out='output/dense'), "
            "and pass layouts=[...]"
        )
    else:
        names = sorted({path_name(p[:-2]) for p in flat if len(p) >= 2})[:8]
        msg += (
            f" (looked for {', '.join(lay.label for lay in layouts)}; the tree's layers include {names}). "
            "Pass layouts=[AttentionLayout(...)] for other names"
        )
    return ValueError(msg + ", or allow_empty=True.")


#: Elements of new kernels the ``fast`` method draws at once across blocks of equal shape.
FAST_GROUP_ELEMENTS = 1 << 26


def _signature(block: AttentionBlock, flat: Mapping[Path, Any]) -> tuple:
    """Blocks with equal signatures are drawn together (same sizes, kernel shapes and dtypes)."""
    kernels = tuple(
        (tuple(jnp.shape(flat[block.kernel_path(n)])), jnp.result_type(flat[block.kernel_path(n)]))
        for n in block.layout.names
    )
    return dataclasses.replace(block, path=(), kernel_paths=()), kernels


def _reinit_group(
    flat: dict[Path, Any],
    blocks: Sequence[AttentionBlock],
    keys: Sequence[Array],
    opts: dict[str, Any],
    parts: tuple[bool, bool],
) -> None:
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
    config: Any = None,
    allow_empty: bool = False,
) -> Any:
    """Re-initialize every attention block of a model mimetically.

    Query/key get ``W_q^h W_k^hᵀ ≈ α Z_h + β I`` per head, value/out get
    ``W_v W_o ≈ value_alpha Z + sign·value_beta I`` per layer (Trockman &
    Kolter 2023); see :func:`mimetic_jax.query_key` and
    :func:`mimetic_jax.value_output` for the math and the options. Block ``i``
    (in sorted path order) draws from ``jax.random.fold_in(key, i)``; blocks of equal
    shapes are drawn together in one batched computation (the same numbers as one by one).

    Args:
      tree: a linen params dict (with or without the ``"params"`` level), an
        ``nnx.State``, an ``nnx.Module``, an Equinox module (any pytree of arrays), or a
        plain nested dict such as a transformers Flax model's ``params``.
      key: a PRNG key.
      query_key, value_output: which of the two structures to write (both by default).
      layouts: the :class:`AttentionLayout` s to look for (default :data:`DEFAULT_LAYOUTS`,
        the known model families).
      include, exclude: regular expressions on the block path.
      num_heads, num_kv_heads: head counts for flat (``Dense``) kernels.
      stacked_axes: leading axes of stacked layers (``nn.scan``); each slice gets its own draw.
      config: a model config to read head counts from when neither ``num_heads`` nor
        the module gives them (:func:`heads_from_config`), e.g. ``model.config`` of a
        transformers model.
      allow_empty: return the tree unchanged when it has no attention block
        (otherwise that is a ``ValueError``).

    Returns:
      For a dict, an ``nnx.State`` or an Equinox module: a new tree with the same
      structure, shapes and dtypes (the input is not changed). For an ``nnx.Module``:
      the module itself, updated **in place** (like ``nnx.update``).

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
    alpha, beta = _checks.finite_float("alpha", alpha), _checks.finite_float("beta", beta)
    value_alpha = _checks.finite_float("value_alpha", value_alpha)
    value_beta = _checks.finite_float("value_beta", value_beta)
    _checks.choice("sign", sign, (-1, 1))
    if not (query_key or value_output):
        raise ValueError("nothing to do: query_key and value_output are both False")
    opts = dict(
        alpha=alpha,
        beta=beta,
        value_alpha=value_alpha,
        value_beta=value_beta,
        sign=sign,
        distribution=distribution,
        method=method,
        rotate_heads=rotate_heads,
    )
    key = _checks.prng_key("key", key)
    flat = flatten(tree)
    blocks, partial = _find_with_partials(
        flat, layouts, include, exclude, num_heads, num_kv_heads, stacked_axes, tree=tree, config=config
    )
    if not blocks:
        if allow_empty:
            return tree
        raise _nothing_found(flat, layouts, partial, include, exclude)
    for block in blocks:
        for n in block.layout.names:
            _checks.float_dtype(
                f"kernel {path_name(block.kernel_path(n))!r} dtype", jnp.result_type(flat[block.kernel_path(n)])
            )
    groups: dict[tuple, list[int]] = {}
    for i, block in enumerate(blocks):
        groups.setdefault(_signature(block, flat), []).append(i)
    for members in groups.values():
        _reinit_group(
            flat,
            [blocks[i] for i in members],
            [jax.random.fold_in(key, i) for i in members],
            opts,
            (bool(query_key), bool(value_output)),
        )
    return rebuild(tree, flat)
