r"""Mimetic initialization of self-attention (Trockman & Kolter, ICML 2023).

Reference: A. Trockman and J. Z. Kolter, "Mimetic Initialization of Self-Attention
Layers", ICML 2023, arXiv:2305.09828.

Which ``method``: ``"exact"``, the default, is the published recipe: a ``d × d`` target
and its SVD per head, about ``H d³`` flops per layer. ``"fast"`` (ours) builds factors with
the same expected spectrum, diagonal and norm from about one random number per weight.
Under ``jit`` on a quiet 2-core CPU, ViT-B/16 (d 768): ``fast`` 1.20 to 1.21× the default
``model.init``; GPT-2-medium (d 1024): ``fast`` 0.91× (``benchmarks/results/``
``init_cost_quiet_cpu_batch.md``, ``init_cost_ab_cpu_batch_vit30.md``). ``exact``, on a busy
box: 44× on ViT-B/16, and on GPT-2-medium its first call had not finished after 14 minutes
(``init_cost_exact.md``). Pick ``fast`` from widths of a few hundred
up, and for sharded models (``docs/sharding.md``); keep ``exact`` to reproduce the paper
and for small models, where its SVDs take milliseconds.

In pretrained Vision Transformers the per-head product ``W_q^h W_k^hᵀ`` has a
positive diagonal and the layer's ``W_v W_o`` a negative one. Mimetic
initialization starts the weights there:

.. math::

    W_q^h W_k^{h\top} \approx \alpha_1 Z_h + \beta_1 I \quad\text{(one } Z_h \text{ per head)},\qquad
    W_v W_o \approx \alpha_2 Z + \sigma \beta_2 I \quad\text{(one } Z \text{ per layer)}

with ``Z`` iid of variance ``1/d``, ``σ = -1`` for vision (the published sign;
language models tend to ``+1``), and published defaults
``α1 = β1 = 0.7``, ``α2 = β2 = 0.4``. The factors are read off an SVD
``A = U S Vᵀ`` of each target: ``W_q^h = U_k √S_k``, ``W_k^h = V_k √S_k``,
so ``W_q^h W_k^hᵀ`` is the best rank-``k`` approximation of ``A`` (Eckart–Young).
For ``d = 192, H = 3, k = 64`` the per-head diagonal mean is about 0.40 (0.70
before the rank-64 truncation) and the off-diagonal std about 0.05.

Layout (Flax, ``y = x @ W``): query/key/value kernels ``(d_in, H, k)``, out
kernel ``(H, k, d_out)``, the layout of ``nn.MultiHeadDotProductAttention`` and
``nnx.MultiHeadAttention``.

What is ours (not in the paper or its public code), each derived below and tested:

* **Grouped/multi-query attention** (``num_kv_heads < num_heads``, query head
  ``h`` uses key/value head ``h // g``, ``g = H / H_kv``, as in
  ``nnx.MultiHeadAttention``); our construction. The ``g`` query heads of a group
  share one key factor, so each head's product can only be ``A_h P`` with ``P`` the
  projection onto the shared key space ``V`` (rank ``k``) and ``W_q^h`` the
  least-squares fit ``A_h W_k (W_kᵀW_k)⁻¹``. The ``V`` that minimizes the group's
  total error ``Σ_h ‖A_h − A_h P_V‖² = Σ_h ‖A_h‖² − tr(Vᵀ (Σ_h A_hᵀA_h) V)`` is the
  top-``k`` eigenspace of ``Σ_h A_hᵀA_h``, i.e. the top-``k`` right singular space of
  the stacked targets ``[A_1; …; A_g] = U S Vᵀ`` (Eckart–Young on the stack). We take
  ``W_k = V_k √S_k g^{-1/4}`` and ``W_q^h = A_h V_k S_k^{-1/2} g^{1/4} = U_k^{(h)} √S_k
  g^{1/4}`` (``U_k^{(h)}`` the rows of head ``h``), so a query factor has on average the
  key factor's norm. The heads of a group are exchangeable: every one gets the same
  expected diagonal (0.271 each at ``d = 192``, 4 heads of 48, 2 key heads, where
  taking ``V`` from the group's first head alone gave 0.314 to that head and 0.175 to
  the other, with a larger total error: 0.532 against 0.591 of ``Σ_h ‖A_h‖²``;
  ``benchmarks/results/attention_regimes.md``). With ``g = 1`` this is the published
  per-head SVD, bit for bit. ``method="fast"`` builds the same structure without
  drawing the targets (:mod:`mimetic_jax._linalg`, ``blocks``). Value/out:
  the effective product is ``W_v R`` with ``R_j = Σ_{h∈group j} W_o^h``; we take
  the best rank-``H_kv k`` factorization and give each query head of a group an
  equal share ``R_j / g``.
* **Cross-attention** (``d_kv ≠ d_in``, or ``d_out ≠ d_in``): the rectangular
  identity ``I_{d_in×d_kv}``, and ``Var Z = 1/max(d_in, d_kv)`` so that
  ``‖Z‖ ≲ 2`` as in the square case.
* **``H·k ≠ d``**: the value/out product is the best rank-``H_kv k``
  approximation of its target. When ``H_kv k > d`` the factors are zero-padded
  and then rotated (below) so that no value channel starts dead.
* **Head rotation** (``rotate_heads=True``): the recipe as written hands head 0
  the top singular directions of the value/out target. For any orthogonal ``R``,
  ``(W_v R)(Rᵀ W_o)`` is the same product; a Haar ``R`` spreads the singular
  directions evenly over the heads.
* **``method="fast"``**: see :mod:`mimetic_jax._linalg`. No ``d×d`` target is
  drawn when the rank ``r`` (``k`` for query/key, ``H_kv k`` for value/out) is at
  most ``d/2`` (the product has the exact recipe's expected spectrum, diagonal mean
  and norm) or equal to ``d`` (exactly the target's law). For ``d/2 < r < d`` no
  cheap construction matches the recipe (a random subspace keeps a diagonal of
  ``β r/d``, 25 % low at ``r = 2d/3``), and the factors hold more numbers than the
  target anyway: there ``fast`` returns the exact recipe's arrays, as it does for
  grouped query heads narrower than the keys (``d_in < d_kv``). The rule is
  :func:`mimetic_jax._linalg.fast_regime`. The published construction
  ``method="exact"`` stays the default.
* **Sin-cos position embeddings** are the standard ones (Vaswani et al. 2017;
  the 2-D form of MoCo v3 / big_vision), shipped because the benefit of the
  scheme comes through smooth additive position embeddings.

Whole-model transform
---------------------

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
``GPT2_CROSS``  ``q_attn``, ``c_attn`` (key/value), ``c_proj``, ``(out, in)``  GPT-2 cross-attention
``GPT2``        ``c_attn``, ``c_proj``, stored ``(out, in)``                    transformers GPT-2 ``Conv1D``
``BLOOM``       ``query_key_value`` (per-head packing), ``dense``               BLOOM
``EQUINOX``     ``{query,key,value,output}_proj``, ``weight`` ``(out, in)``     ``eqx.nn.MultiheadAttention``
``HAIKU``       ``query``, ``key``, ``value``, ``linear``, ``w``                dm-haiku ``hk.MultiHeadAttention``
==============  ==============================================================  =============================

Kernel shapes, in Flax's ``(in, out)`` orientation (a layout with ``transposed=True``
stores them ``(out, in)``, as PyTorch-style code, Equinox and GPT-2's ``Conv1D`` do):
query/key/value ``(d, H, k)`` and out ``(H, k, d)``, or flat ``(d, H k)`` and
``(H k, d)``; fused ``(d, 3, H, k)`` or flat ``(d, (H + 2 H_kv) k)`` packed
``[q | k | v]`` (``packing="qkv"``) or per head ``[q_h k_h v_h]`` (``packing="heads"``);
a fused key/value kernel (``kv=``) ``(d_kv, 2, H_kv, k)`` or flat ``(d_kv, 2 H_kv k)``
packed ``[k | v]`` (or ``[k_h v_h]`` per key head). A ``kv`` block is cross-attention
when ``d_kv ≠ d``: query/key and value/out then use the rectangular construction above.

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
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from mimetic_jax import _checks, _linalg
from mimetic_jax._linalg import NO_WORK
from mimetic_jax._sharding import Work, constrain, context_work, run_auto, target_of, work_for
from mimetic_jax._tree import (
    Path,
    common_stack,
    config_get,
    config_int,
    flatten,
    flatten_shardings,
    match_parts,
    module_at,
    path_name,
    put_like,
    rebuild,
)

__all__ = [
    "METHODS",
    "qkv_init",
    "query_key",
    "sincos_1d",
    "sincos_2d",
    "value_output",
    "ALBERT",
    "BLOOM",
    "DEFAULT_LAYOUTS",
    "DISTILBERT",
    "EQUINOX",
    "HAIKU",
    "FLAX",
    "FUSED",
    "GPT2",
    "GPT2_CROSS",
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

Array = jax.Array
Initializer = Callable[..., Array]
Distribution = Literal["normal", "uniform"]
Method = Literal["exact", "fast"]

DISTRIBUTIONS = ("normal", "uniform")
METHODS = ("exact", "fast")
#: Elements of ``d×d`` targets the exact method keeps alive at once (bounds peak memory).
EXACT_CHUNK_ELEMENTS = 1 << 24


def _map(fn: Callable, xs: Any, chunk: int | None) -> Any:
    """``vmap`` when ``chunk`` is None, else ``lax.map`` in chunks (bounded memory)."""
    if chunk is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=chunk)


def _exact_chunk(rows: int, cols: int, count: int) -> int:
    return max(1, min(count, EXACT_CHUNK_ELEMENTS // (rows * cols)))


def _check_sizes(
    d_in: Any, num_heads: Any, num_kv_heads: Any, head_dim: Any, other: str, d_other: Any
) -> tuple[int, int, int, int, int]:
    """``(d_in, heads, kv_heads, head_dim, d_other)`` checked; ``d_other`` (``d_kv``/``d_out``) defaults to ``d_in``."""
    d_in = _checks.size("d_in", d_in)
    heads, kv_heads = _checks.head_counts(num_heads, num_kv_heads)
    k = _checks.size("head_dim", head_dim)
    d_other = d_in if d_other is None else _checks.size(other, d_other)
    _checks.not_wider("head_dim", k, "d_in", d_in)
    _checks.not_wider("head_dim", k, other, d_other)
    _checks.elements(
        f"d_in × num_heads × head_dim, d_in × {other}", d_in * heads * k, d_other * heads * k, d_in * d_other
    )
    return d_in, heads, kv_heads, k, d_other


def _common(distribution: Any, method: Any, dtype: Any) -> jnp.dtype:
    _checks.choice("distribution", distribution, DISTRIBUTIONS)
    _checks.choice("method", method, METHODS)
    return _checks.float_dtype("dtype", dtype)


# --------------------------------------------------------------------------- query/key


def query_key(
    key: Array,
    d_in: int,
    num_heads: int,
    head_dim: int,
    *,
    alpha: float = 0.7,
    beta: float = 0.7,
    num_kv_heads: int | None = None,
    d_kv: int | None = None,
    distribution: Distribution = "normal",
    method: Method = "exact",
    dtype: Any = jnp.float32,
) -> tuple[Array, Array]:
    r"""Mimetic query and key kernels: ``W_q^h W_k^hᵀ ≈ α Z_h + β I`` for every head.

    Args:
      key: a PRNG key.
      d_in: width of the query input (rows of ``W_q``).
      num_heads: number of query heads ``H``.
      head_dim: head size ``k`` (at most ``min(d_in, d_kv)``).
      alpha, beta: noise and identity weights (published 0.7, 0.7).
      num_kv_heads: key heads ``H_kv`` for grouped/multi-query attention (default ``H``). The
        query heads of a group share the key space that fits their targets best together
        (the top right singular space of the stacked targets; module docstring).
      d_kv: width of the key input for cross-attention (default ``d_in``).
      distribution: ``"normal"`` (the default) or ``"uniform"`` on ``±√(3/d)``.
      method: ``"exact"`` (published, SVD per head) or ``"fast"`` (no ``d×d`` target).
      dtype: output dtype; the math runs in float32 (float64 if asked for).

    Returns:
      ``(w_q, w_k)`` of shapes ``(d_in, H, k)`` and ``(d_kv, H_kv, k)``.
      Head ``h``'s target is drawn from ``jax.random.split(key, H)[h]``.

    Example:
      >>> import jax
      >>> w_q, w_k = query_key(jax.random.key(0), 192, 3, 64)
      >>> w_q.shape, w_k.shape
      ((192, 3, 64), (192, 3, 64))
      >>> p = jax.numpy.einsum("ik,jk->ij", w_q[:, 0], w_k[:, 0])
      >>> bool(0.3 < jax.numpy.diagonal(p).mean() < 0.5)
      True
    """
    return _query_key_checked(
        key,
        d_in,
        num_heads,
        head_dim,
        alpha=alpha,
        beta=beta,
        num_kv_heads=num_kv_heads,
        d_kv=d_kv,
        distribution=distribution,
        method=method,
        dtype=dtype,
    )


def _query_key_checked(
    key, d_in, num_heads, head_dim, *, alpha, beta, num_kv_heads, d_kv, distribution, method, dtype, work=NO_WORK
):
    """:func:`query_key` (the same arguments, by keyword after ``head_dim``) with its rows split over ``work``
    (:class:`mimetic_jax._sharding.Work`): the entry point of the transforms and the fused initializer."""
    d_in, heads, kv_heads, k, d_kv = _check_sizes(d_in, num_heads, num_kv_heads, head_dim, "d_kv", d_kv)
    dtype = _common(distribution, method, dtype)
    alpha, beta = _checks.finite_float("alpha", alpha), _checks.finite_float("beta", beta)
    _checks.target_fits("alpha", alpha, "beta", beta, dtype)
    return _query_key(
        _checks.prng_key("key", key),
        d_in=d_in,
        d_kv=d_kv,
        heads=heads,
        kv_heads=kv_heads,
        k=k,
        alpha=alpha,
        beta=beta,
        distribution=distribution,
        method=method,
        dtype=dtype,
        work=work,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "d_in",
        "d_kv",
        "heads",
        "kv_heads",
        "k",
        "alpha",
        "beta",
        "distribution",
        "method",
        "dtype",
        "work",
    ),
)
def _query_key(key, *, d_in, d_kv, heads, kv_heads, k, alpha, beta, distribution, method, dtype, work):
    ct = _checks.compute_dtype(dtype)
    group = heads // kv_heads
    keys = jax.random.split(key, heads).reshape(kv_heads, group)
    # One problem per key head: the group's `group` targets share the key factor (see _linalg's
    # `blocks`); the query factors come back stacked, (group·d_in, k).
    if method == "fast" and _linalg.fast_regime(d_in, d_kv, k, group) != "exact":
        wq, wk = _map(
            lambda gk: _linalg.fast_factors(gk[0], d_in, d_kv, k, alpha, beta, distribution, ct, group, work),
            keys,
            None,
        )
    else:  # also fast's exact regime: the same arrays as method="exact", with its bounded memory

        def exact_group(gkeys):
            targets = _linalg.stacked_targets(gkeys, d_in, d_kv, alpha, beta, distribution, ct)
            return _linalg.exact_factors(targets, k, group)

        wq, wk = _map(exact_group, keys, _exact_chunk(d_in, d_kv * group, kv_heads))
    wq = wq.reshape(heads, d_in, k).transpose(1, 0, 2)
    wk = wk.transpose(1, 0, 2)
    return wq.astype(dtype), wk.astype(dtype)


# --------------------------------------------------------------------------- value/out


def value_output(
    key: Array,
    d_in: int,
    num_heads: int,
    head_dim: int,
    *,
    alpha: float = 0.4,
    beta: float = 0.4,
    sign: int = -1,
    num_kv_heads: int | None = None,
    d_out: int | None = None,
    distribution: Distribution = "normal",
    method: Method = "exact",
    rotate_heads: bool = False,
    dtype: Any = jnp.float32,
) -> tuple[Array, Array]:
    r"""Mimetic value and out kernels: ``Σ_h W_v^{h//g} W_o^h ≈ α Z + sign·β I``.

    One target per layer, factorized by SVD: ``W_v = U_r √S_r`` reshaped to
    ``(d_in, H_kv, k)`` and ``W_o = √S_r V_rᵀ`` reshaped to ``(H, k, d_out)``
    (shared equally by the query heads of a group), ``r = H_kv·k``. The product
    is exactly the target when ``H_kv k = d``, its best rank-``r`` approximation
    when ``H_kv k < d``.

    Args:
      key: a PRNG key; the target is drawn from ``jax.random.split(key)[0]``.
      d_in: width of the value input (rows of ``W_v``).
      num_heads, head_dim: ``H`` and ``k``.
      alpha, beta: noise and identity weights (published 0.4, 0.4).
      sign: ``-1`` (published, vision) or ``+1`` (seen in language models).
      num_kv_heads: value heads ``H_kv`` for grouped/multi-query attention.
      d_out: width of the output (default ``d_in``).
      distribution, method, dtype: as in :func:`query_key`.
      rotate_heads: rotate both factors by one Haar orthogonal matrix so that every
        head gets an even share of the singular directions; the product is unchanged.

    Returns:
      ``(w_v, w_o)`` of shapes ``(d_in, H_kv, k)`` and ``(H, k, d_out)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w_v, w_o = value_output(jax.random.key(0), 192, 3, 64)
      >>> p = jnp.einsum("ihk,hkj->ij", w_v, w_o)
      >>> bool(-0.45 < jnp.diagonal(p).mean() < -0.35)
      True
    """
    return _value_output_checked(
        key,
        d_in,
        num_heads,
        head_dim,
        alpha=alpha,
        beta=beta,
        sign=sign,
        num_kv_heads=num_kv_heads,
        d_out=d_out,
        distribution=distribution,
        method=method,
        rotate_heads=rotate_heads,
        dtype=dtype,
    )


def _value_output_checked(
    key,
    d_in,
    num_heads,
    head_dim,
    *,
    alpha,
    beta,
    sign,
    num_kv_heads,
    d_out,
    distribution,
    method,
    rotate_heads,
    dtype,
    work=NO_WORK,
):
    """:func:`value_output` (the same arguments, by keyword after ``head_dim``) with its rows split over ``work``."""
    d_in, heads, kv_heads, k, d_out = _check_sizes(d_in, num_heads, num_kv_heads, head_dim, "d_out", d_out)
    _checks.choice("sign", sign, (-1, 1))
    if not isinstance(rotate_heads, bool):
        raise TypeError(f"rotate_heads must be a bool, got {rotate_heads!r}")
    dtype = _common(distribution, method, dtype)
    alpha, beta = _checks.finite_float("alpha", alpha), _checks.finite_float("beta", beta)
    _checks.target_fits("alpha", alpha, "beta", beta, dtype)
    return _value_output(
        _checks.prng_key("key", key),
        d_in=d_in,
        d_out=d_out,
        heads=heads,
        kv_heads=kv_heads,
        k=k,
        alpha=alpha,
        beta=float(sign) * beta,
        distribution=distribution,
        method=method,
        rotate_heads=rotate_heads,
        dtype=dtype,
        work=work,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "d_in",
        "d_out",
        "heads",
        "kv_heads",
        "k",
        "alpha",
        "beta",
        "distribution",
        "method",
        "rotate_heads",
        "dtype",
        "work",
    ),
)
def _value_output(
    key, *, d_in, d_out, heads, kv_heads, k, alpha, beta, distribution, method, rotate_heads, dtype, work
):
    ct = _checks.compute_dtype(dtype)
    width = kv_heads * k
    rank = min(width, d_in, d_out)
    k_target, k_rot = jax.random.split(key)
    if method == "exact":
        target = _linalg.identity_target(k_target, d_in, d_out, alpha, beta, distribution, ct)
        left, right = _linalg.exact_factors(target, rank)
    else:
        left, right = _linalg.fast_factors(k_target, d_in, d_out, rank, alpha, beta, distribution, ct, work=work)
    if rank < width:
        pad = ((0, 0), (0, width - rank))
        left, right = jnp.pad(left, pad), jnp.pad(right, pad)
    if rotate_heads or rank < width:
        rot = work.replicated(_linalg.haar_columns(k_rot, width, width, ct))
        left, right = work.rows(left @ rot), work.rows(right @ rot)
    group = heads // kv_heads
    w_v = left.reshape(d_in, kv_heads, k)
    w_o = jnp.repeat(right.T.reshape(kv_heads, k, d_out) / group, group, axis=0)
    return w_v.astype(dtype), w_o.astype(dtype)


# --------------------------------------------------------------------------- fused kernels


def qkv_init(
    num_heads: int,
    head_dim: int,
    *,
    num_kv_heads: int | None = None,
    alpha: float = 0.7,
    beta: float = 0.7,
    value_alpha: float = 0.4,
    value_beta: float = 0.4,
    sign: int = -1,
    distribution: Distribution = "normal",
    method: Method = "exact",
    rotate_heads: bool = False,
) -> Initializer:
    """Initializer for a fused query/key/value kernel, as in GPT-style code.

    Shapes: ``(d, 3, H, k)`` (query, key, value stacked on axis 1; needs
    ``num_kv_heads == num_heads``) or flat ``(d, (H + 2 H_kv)·k)`` (query columns,
    then key, then value). Query/key come from :func:`query_key`; value is the
    value factor ``U √S`` of :func:`value_output`. The value·out structure needs
    the out kernel too, which lives in another tensor: :func:`mimetic_attention`
    re-initializes both together; with this initializer alone the out kernel keeps
    its own init.

    Example:
      >>> import jax, flax.linen as nn
      >>> layer = nn.Dense(3 * 4 * 16, kernel_init=qkv_init(4, 16))
      >>> params = layer.init(jax.random.key(0), jax.numpy.ones((1, 64)))
      >>> params["params"]["kernel"].shape
      (64, 192)
    """
    heads, kv_heads = _checks.head_counts(num_heads, num_kv_heads)
    k = _checks.size("head_dim", head_dim)
    _common(distribution, method, jnp.float32)
    for name, value in (("alpha", alpha), ("beta", beta), ("value_alpha", value_alpha), ("value_beta", value_beta)):
        _checks.finite_float(name, value)
    _checks.choice("sign", sign, (-1, 1))
    if not isinstance(rotate_heads, bool):
        raise TypeError(f"rotate_heads must be a bool, got {rotate_heads!r}")
    qk_opts: dict[str, Any] = dict(
        alpha=alpha, beta=beta, num_kv_heads=kv_heads, distribution=distribution, method=method
    )
    vo_opts: dict[str, Any] = dict(
        alpha=value_alpha,
        beta=value_beta,
        sign=sign,
        num_kv_heads=kv_heads,
        distribution=distribution,
        method=method,
        rotate_heads=rotate_heads,
    )

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        dims = _checks.shape_of("shape", shape, (2, 4))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        d = dims[0]
        if len(dims) == 4:
            if dims[1:] != (3, heads, k) or kv_heads != heads:
                raise ValueError(
                    f"shape {dims} does not fit a fused (d, 3, num_heads={heads}, head_dim={k}) kernel"
                    + ("" if kv_heads == heads else f" (num_kv_heads={kv_heads} needs the flat layout)")
                )
        elif dims[1] != (heads + 2 * kv_heads) * k:
            raise ValueError(
                f"shape {dims} does not fit a flat fused kernel: expected (d, {(heads + 2 * kv_heads) * k}) = "
                f"(d, (num_heads + 2*num_kv_heads) * head_dim) with num_heads={heads}, "
                f"num_kv_heads={kv_heads}, head_dim={k}"
            )
        _checks.target_fits("alpha", alpha, "beta", beta, dtype)
        _checks.target_fits("value_alpha", value_alpha, "value_beta", value_beta, dtype)
        key = _checks.prng_key("key", key)
        target = target_of(None, out_sharding)
        work = work_for([target], [d])  # rows split over the mesh axes of out_sharding (bit-identical)

        def compute(key: Array) -> dict[str, Array]:
            k_qk, k_vo = jax.random.split(key)
            common: dict[str, Any] = dict(
                num_kv_heads=kv_heads, distribution=distribution, method=method, dtype=dtype, work=work
            )
            w_q, w_k = _query_key_checked(
                k_qk, d, heads, k, alpha=qk_opts["alpha"], beta=qk_opts["beta"], d_kv=None, **common
            )
            w_v, _ = _value_output_checked(
                k_vo,
                d,
                heads,
                k,
                alpha=vo_opts["alpha"],
                beta=vo_opts["beta"],
                sign=sign,
                d_out=None,
                rotate_heads=rotate_heads,
                **common,
            )
            if len(dims) == 4:
                return {"w": jnp.stack([w_q, w_k, w_v], axis=1)}
            return {"w": jnp.concatenate([w.reshape(d, -1) for w in (w_q, w_k, w_v)], axis=1)}

        if target is None:
            return constrain(compute(key)["w"], out_sharding)
        return run_auto(compute, {"w": target}, key)["w"]

    return init


# --------------------------------------------------------------------------- position embeddings


#: ``temperature`` must be a positive normal float32 (0 or a negative value gives NaN frequencies).
_TEMPERATURE_MIN, _TEMPERATURE_MAX = float(jnp.finfo(jnp.float32).tiny), float(jnp.finfo(jnp.float32).max)


def _frequencies(n: int, temperature: float) -> Array:
    return 1.0 / (temperature ** (jnp.arange(n, dtype=jnp.float32) / max(n - 1, 1)))


def sincos_1d(*, temperature: float = 10000.0) -> Initializer:
    """Fixed 1-D sin-cos position embedding ``[sin(p ω_i), cos(p ω_i)]`` (Vaswani et al. 2017).

    Initializer for shape ``(..., length, dim)`` with ``dim`` even;
    ``ω_i = temperature^{-i/(dim/2 - 1)}``. The key is ignored (deterministic),
    leading axes broadcast. ``temperature`` must be positive (a normal float32 number).

    Example:
      >>> sincos_1d()(None, (16, 32)).shape
      (16, 32)
    """
    temperature = _checks.real_range("temperature", temperature, _TEMPERATURE_MIN, _TEMPERATURE_MAX)

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        del key
        dims = _checks.shape_of("shape", shape, (2, 3, 4))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        length, dim = dims[-2:]
        if dim % 2:
            raise ValueError(f"sincos_1d needs an even embedding size, got shape {dims}")
        angle = jnp.arange(length, dtype=jnp.float32)[:, None] * _frequencies(dim // 2, temperature)[None]
        emb = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=1)
        return constrain(jnp.broadcast_to(emb, dims).astype(dtype), out_sharding)

    return init


def sincos_2d(grid: tuple[int, int] | None = None, *, temperature: float = 10000.0) -> Initializer:
    """Fixed 2-D sin-cos position embedding for a ``h × w`` grid of patches (row-major).

    ``[sin(x ω), cos(x ω), sin(y ω), cos(y ω)]`` with ``ω_i = temperature^{-i/(dim/4 - 1)}``,
    as in MoCo v3 and big_vision's ``posemb_sincos_2d``, used by the published
    mimetic ViT runs. Initializer for shape ``(..., h*w, dim)``, ``dim`` divisible
    by 4; ``grid=None`` means a square grid. The key is ignored. ``temperature`` must be
    positive (a normal float32 number).

    Example:
      >>> sincos_2d((4, 4))(None, (1, 16, 64)).shape
      (1, 16, 64)
    """
    temperature = _checks.real_range("temperature", temperature, _TEMPERATURE_MIN, _TEMPERATURE_MAX)
    if grid is not None:
        if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") or len(grid) != 2:
            raise TypeError(f"grid must be None or a pair (h, w) of positive ints, got {grid!r}")
        grid = (_checks.size("grid[0]", grid[0]), _checks.size("grid[1]", grid[1]))

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        del key
        dims = _checks.shape_of("shape", shape, (2, 3, 4))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        tokens, dim = dims[-2:]
        h, w = grid if grid is not None else (math.isqrt(tokens),) * 2
        if h * w != tokens:
            raise ValueError(f"sincos_2d grid {(h, w)} has {h * w} positions, shape {dims} has {tokens} tokens")
        if dim % 4:
            raise ValueError(f"sincos_2d needs an embedding size divisible by 4, got shape {dims}")
        y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
        omega = _frequencies(dim // 4, temperature)
        ax = x.reshape(-1, 1) * omega[None]
        ay = y.reshape(-1, 1) * omega[None]
        emb = jnp.concatenate([jnp.sin(ax), jnp.cos(ax), jnp.sin(ay), jnp.cos(ay)], axis=1)
        return constrain(jnp.broadcast_to(emb, dims).astype(dtype), out_sharding)

    return init


# --------------------------------------------------------------------------- whole-model transform


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
    projection sets ``qkv`` and ``out`` (leave the others ``None``); a query projection
    with a fused key/value projection (GPT-2's cross-attention: ``q_attn`` and a
    ``c_attn`` packed ``[k | v]``) sets ``query``, ``kv`` and ``out``. Each part is a
    name or a ``/``-separated path below the block (``"self/query"``,
    ``"output/dense"``), so the parts may sit in different subtrees.

    Attributes:
      out, query, key, value, qkv, kv: the parts' paths relative to the block.
      kernel: the name of the weight leaf in each part (``"kernel"`` in Flax,
        ``"weight"`` in Equinox).
      transposed: the kernels are stored ``(out, in)`` (PyTorch-style code, Equinox,
        GPT-2's ``Conv1D``) rather than Flax's ``(in, out)``.
      packing: how a flat fused kernel packs its columns: ``"qkv"`` (``[q | k | v]``,
        each ``H k`` wide; ``[k | v]`` for ``kv``) or ``"heads"`` (``[q_h k_h v_h]`` per
        head, GPT-NeoX style; ``[k_h v_h]`` per key head for ``kv``).
      name: a label for messages.
      kv: a fused key/value part (with ``query`` and ``out``), packed ``[k | v]``.

    Example:
      >>> import jax.numpy as jnp
      >>> cross = AttentionLayout(query="q", kv="kv", out="o", name="CROSS")
      >>> cross.names
      ('q', 'kv', 'o')
      >>> tree = {"x": {"q": {"kernel": jnp.zeros((32, 32))}, "kv": {"kernel": jnp.zeros((48, 64))},
      ...               "o": {"kernel": jnp.zeros((32, 32))}}}
      >>> [(b.d_in, b.d_kv, b.num_heads, b.head_dim) for b in find_attention_blocks(tree, layouts=[cross], num_heads=2)]
      [(32, 48, 2, 16)]
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
    kv: str | None = None

    def __post_init__(self) -> None:
        for f in ("out", "query", "key", "value", "qkv", "kv"):
            object.__setattr__(self, f, _part(f, getattr(self, f)))
        if self.out is None:
            raise TypeError("AttentionLayout out must be a name, got None")
        separate = (self.query, self.key, self.value)
        if self.kv is not None:
            if self.query is None or self.key is not None or self.value is not None or self.qkv is not None:
                raise ValueError(
                    "AttentionLayout with a fused key/value kv= takes query= and out= only (no key, value, qkv): "
                    f"{self}"
                )
        elif self.qkv is None and None in separate:
            raise ValueError(
                f"AttentionLayout needs query, key and value names, a fused qkv name, or query and a fused kv name: "
                f"{self}"
            )
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
        """The parts in order: ``(query, key, value, out)``, ``(qkv, out)`` or ``(query, kv, out)``."""
        if self.qkv is not None:
            return (self.qkv, self.out)
        if self.kv is not None:
            return (self.query, self.kv, self.out)  # type: ignore[return-value]
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
#: GPT-2's cross-attention (``add_cross_attention=True``, encoder-decoders with a GPT-2 decoder): a query
#: ``q_attn`` and a fused key/value ``c_attn`` packed ``[k | v]``, all ``Conv1D`` (stored ``(out, in)``).
GPT2_CROSS = AttentionLayout(query="q_attn", kv="c_attn", out="c_proj", transposed=True, name="GPT2_CROSS")
EQUINOX = AttentionLayout(
    query="query_proj",
    key="key_proj",
    value="value_proj",
    out="output_proj",
    kernel="weight",
    transposed=True,
    name="EQUINOX",
)
HAIKU = AttentionLayout(query="query", key="key", value="value", out="linear", kernel="w", name="HAIKU")
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
    GPT2_CROSS,
    GPT2,
    BLOOM,
    EQUINOX,
    HAIKU,
)

_CONFIG_HEADS = ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")
_CONFIG_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
#: Sub-configs of composite models (CLIP, encoder-decoder wrappers, ...) and the path components
#: that lead to the part each describes (``text_model/...`` -> ``text_config``).
_SUB_CONFIGS = (
    ("text_config", "text"),
    ("vision_config", "vision"),
    ("audio_config", "audio"),
    ("speech_config", "speech"),
    ("qformer_config", "qformer"),
    ("encoder", "encoder"),
    ("decoder", "decoder"),
)
#: Encoder-decoder configs with a head count per side (BART, Marian, Pegasus, Whisper, ...).
_SIDE_HEADS = (("encoder", "encoder_attention_heads"), ("decoder", "decoder_attention_heads"))


def _sub_configs(config: Any) -> list[tuple[str, str, Any]]:
    """The ``(attribute, path prefix, sub-config)`` of a composite config that hold head counts."""
    subs = []
    for attr, prefix in _SUB_CONFIGS:
        sub = config_get(config, attr)
        if sub is not None and not isinstance(sub, (int, float, str, bool)) and _has_heads(sub):
            subs.append((attr, prefix, sub))
    return subs


def _has_heads(config: Any) -> bool:
    return config_int(config, _CONFIG_HEADS) is not None or bool(_sub_configs(config))


def _side_heads(config: Any) -> dict[str, int]:
    sides = {side: config_int(config, (name,)) for side, name in _SIDE_HEADS}
    return {side: h for side, h in sides.items() if h is not None}


def heads_from_config(config: Any, path: Any = None) -> tuple[int | None, int | None]:
    """``(num_heads, num_kv_heads)`` read off a model config (an object or a mapping).

    Looks for ``num_attention_heads``, ``n_head``, ``num_heads``, ``encoder_attention_heads``
    or ``n_heads``, and ``num_key_value_heads``, ``num_kv_heads`` or ``n_kv_heads``
    (``None`` where none is set), the names transformers' configs use.

    With ``path`` (a block's path, a ``"/"``-joined string or a tuple of keys) the count is
    the one of the part of the model the block sits in:

    - a composite config (CLIP's ``text_config``/``vision_config``, an encoder-decoder
      wrapper's ``encoder``/``decoder``, ...) is read in the sub-config whose name the path
      leads through (``text_model/...`` reads ``text_config``, ``decoder/...`` reads
      ``decoder``);
    - an encoder-decoder config with ``encoder_attention_heads`` and
      ``decoder_attention_heads`` (BART, Marian, Pegasus, Whisper) gives the decoder's count
      to every block under ``decoder`` (its cross-attention included) and the encoder's to
      blocks under ``encoder``; a block under neither, while the two differ, is a
      ``ValueError`` (the count would be a guess).

    Raises:
      ValueError: the config has no head count (nor a sub-config with one), or the block's
        part of the model cannot be told from ``path``.

    Example:
      >>> heads_from_config({"num_attention_heads": 32, "num_key_value_heads": 8})
      (32, 8)
      >>> bart = {"encoder_attention_heads": 4, "decoder_attention_heads": 2}
      >>> heads_from_config(bart, "decoder/layers/0/encoder_attn")
      (2, None)
      >>> clip = {"text_config": {"num_attention_heads": 8}, "vision_config": {"num_attention_heads": 12}}
      >>> heads_from_config(clip, "vision_model/encoder/layers/0/self_attn")
      (12, None)
    """
    if config is None:
        return None, None
    if not _has_heads(config):
        raise ValueError(
            f"config has no head count (looked for {', '.join(_CONFIG_HEADS)}, and for sub-configs "
            f"{', '.join(a for a, _ in _SUB_CONFIGS)}); got {type(config).__name__}"
        )
    if path is None:
        heads = config_int(config, _CONFIG_HEADS)
        if heads is None:
            listed = ", ".join(a for a, _, _ in _sub_configs(config))
            raise ValueError(
                f"config {type(config).__name__} is composite (head counts in {listed}): the count depends on the "
                "block; pass the block's path"
            )
        return heads, config_int(config, _CONFIG_KV_HEADS)
    parts = [str(p) for p in (path.split("/") if isinstance(path, str) else path)]
    subs = _sub_configs(config)
    for i, part in enumerate(parts):
        for _, prefix, sub in subs:
            if part.lower().startswith(prefix):
                return heads_from_config(sub, parts[i + 1 :])
    sides = _side_heads(config)
    if len(set(sides.values())) > 1:
        for part in parts:
            for side, heads in sides.items():
                if part.lower().startswith(side):
                    return heads, config_int(config, _CONFIG_KV_HEADS)
        raise ValueError(
            f"config {type(config).__name__} gives encoder_attention_heads={sides['encoder']} and "
            f"decoder_attention_heads={sides['decoder']}, and the block {'/'.join(parts)!r} is under neither "
            "'encoder' nor 'decoder': pass num_heads="
        )
    return heads_from_config(config)


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

    def carried(h: int, h_kv: int) -> None:
        """Kernels that carry their head counts: a given count must agree (it used to be ignored)."""
        for name, given, have in (("num_heads", num_heads, h), ("num_kv_heads", num_kv_heads, h_kv)):
            if given is not None and given != have:
                raise bad(f"{name}={given}: the kernels carry {have} heads")

    if layout.kv is not None:
        return _kv_sizes(shapes, num_heads, num_kv_heads, need_heads, bad, carried)
    if layout.qkv is None:
        q, k, v, o = shapes
        if len(q) == 3:
            if not (len(k) == len(v) == 3 and len(o) == 3 and k == v and q[2] == k[2] and o[:2] == q[1:]):
                raise bad("query (d, H, k), key/value (d_kv, H_kv, k), out (H, k, d_out)")
            h, h_kv, hd = q[1], k[1], q[2]
            carried(h, h_kv)
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
        carried(fused[2], fused[2])
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


def _kv_sizes(
    shapes: Sequence[tuple[int, ...]],
    num_heads: int | None,
    num_kv_heads: int | None,
    need_heads: Callable[[], int],
    bad: Callable[[str], ValueError],
    carried: Callable[[int, int], None],
) -> tuple[int, int, int, int, int, int]:
    """:func:`_sizes` of a query + fused key/value layout: query ``(d, H, k)`` or ``(d, H k)``, key/value
    ``(d_kv, 2, H_kv, k)`` or ``(d_kv, 2 H_kv k)``, out ``(H, k, d_out)`` or ``(H k, d_out)``."""
    q, kv, o = shapes
    if len(q) == 3:
        if not (len(kv) == 4 and kv[1] == 2 and kv[3] == q[2] and len(o) == 3 and o[:2] == q[1:]):
            raise bad("query (d, H, k), key/value (d_kv, 2, H_kv, k), out (H, k, d_out)")
        h, h_kv, hd = q[1], kv[2], q[2]
        carried(h, h_kv)
    else:
        if not (len(q) == len(kv) == len(o) == 2 and o[0] == q[1]):
            raise bad("query (d, H k), key/value (d_kv, 2 H_kv k), out (H k, d_out)")
        h = need_heads()
        if q[1] % h:
            raise bad(f"num_heads={h} does not divide the query width {q[1]}")
        hd = q[1] // h
        if kv[1] % (2 * hd):
            raise bad(f"2 * head_dim={2 * hd} does not divide the key/value width {kv[1]}")
        h_kv = kv[1] // (2 * hd)
        if num_kv_heads is not None and num_kv_heads != h_kv:
            raise bad(f"num_kv_heads={num_kv_heads} (the key/value width {kv[1]} gives {h_kv})")
    if h % h_kv:
        raise bad(f"grouped attention: {h} query heads are not a multiple of {h_kv} key heads")
    return q[0], kv[0], o[-1], h, h_kv, hd


def _hint(
    layout: AttentionLayout,
    shapes: list[tuple[int, ...]],
    stacked_axes: int,
    heads: tuple[int | None, int | None],
    where: str,
) -> str:
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
    config: Any,
) -> tuple[int | None, int | None]:
    """Head counts of one block: the options, else the module holding it, else the config (read at its path)."""
    if num_heads is not None:
        return num_heads, num_kv_heads
    module = module_at(tree, parent) if tree is not None else None
    if module is not None:
        h = config_int(module, ("num_heads",))
        if h is not None:
            return h, num_kv_heads if num_kv_heads is not None else config_int(module, ("num_kv_heads",))
    h, kv = heads_from_config(config, parent) if config is not None else (None, None)
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
        num_heads = _checks.size("num_heads", num_heads)
    if num_kv_heads is not None:
        num_kv_heads = _checks.size("num_kv_heads", num_kv_heads)
    matches, partial = _match(flat, layouts, include, exclude)
    blocks = []
    for parent, layout, paths in matches:
        name = path_name(parent)
        shapes = [tuple(jnp.shape(flat[p])) for p in paths]
        try:
            heads = _heads_for(tree, parent, num_heads, num_kv_heads, config)
        except ValueError as e:
            raise _checks.BlockError(str(e), name) from None
        try:
            stack = common_stack(f"attention block {name!r}", shapes, stacked_axes)
            sizes = _sizes(layout, [_flax_shape(layout, s[stacked_axes:]) for s in shapes], *heads, name)
        except ValueError as e:
            raise _checks.BlockError(f"{e}{_hint(layout, shapes, stacked_axes, heads, name)}", name) from None
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


def _draw(block: AttentionBlock, key: Array, opts: dict[str, Any], parts: tuple[bool, bool], work: Work):
    """``(w_q, w_k, w_v, w_o)`` for one unstacked block in Flax 3-D layout; ``None`` for parts not drawn."""
    k_qk, k_vo = jax.random.split(key)
    heads, kv, k = block.num_heads, block.num_kv_heads, block.head_dim
    w_q = w_k = w_v = w_o = None
    common: dict[str, Any] = dict(
        num_kv_heads=kv, distribution=opts["distribution"], method=opts["method"], dtype=jnp.float32, work=work
    )
    if parts[0]:
        w_q, w_k = _query_key_checked(
            k_qk, block.d_in, heads, k, alpha=opts["alpha"], beta=opts["beta"], d_kv=block.d_kv, **common
        )
    if parts[1]:
        w_v, w_o = _value_output_checked(
            k_vo,
            block.d_kv,
            heads,
            k,
            alpha=opts["value_alpha"],
            beta=opts["value_beta"],
            sign=opts["sign"],
            d_out=block.d_out,
            rotate_heads=opts["rotate_heads"],
            **common,
        )
    return w_q, w_k, w_v, w_o


def _merge_fused(old: Any, parts: Sequence[Array | None], block: AttentionBlock) -> Array:
    """Write new query/key/value parts (Flax-oriented) into a fused kernel, keeping the parts not re-drawn.

    ``parts`` is ``(q, k, v)`` for a ``qkv`` kernel or ``(k, v)`` for a ``kv`` one. ``old`` is the old
    kernel (Flax-oriented), or only its shape (a ``ShapeDtypeStruct``) when every part is new.
    """
    shape = tuple(old.shape)
    n = len(parts)
    if len(shape) == 4:
        return jnp.stack([old[:, i] if w is None else w for i, w in enumerate(parts)], axis=1)
    d, k = shape[0], block.head_dim
    h = block.num_heads if n == 3 else block.num_kv_heads
    if block.layout.packing == "heads":
        pieces = [
            w.reshape(d, h, k) if w is not None else old.reshape(d, h, n, k)[:, :, i] for i, w in enumerate(parts)
        ]
        return jnp.stack(pieces, axis=2).reshape(shape)
    widths = [h * k, *((n - 1) * [block.num_kv_heads * k])]
    starts = [sum(widths[:i]) for i in range(n)]
    pieces = [
        old[:, s : s + wd] if w is None else w.reshape(-1, wd) for s, wd, w in zip(starts, widths, parts, strict=True)
    ]
    return jnp.concatenate(pieces, axis=1)


def _write(block: AttentionBlock, old: dict[str, Any], new: tuple, meta: dict[str, tuple]) -> dict[str, Array]:
    """The block's kernels in their own layout, orientation and dtype, old ones kept where nothing was drawn.

    ``meta[name]`` is the kernel's ``(shape, dtype)`` (one layer); ``old`` holds the old kernels
    where some part is kept, else nothing (the old values are not read).
    """
    lay = block.layout

    def put(w: Array | None, name: str) -> Array:
        if w is None:
            return old[name]
        shape, dtype = meta[name]
        return block.to_flax(w.reshape(_flax_shape(lay, shape))).astype(dtype)

    if lay.kv is not None:
        q_name, kv_name, _ = lay.names
        out = {q_name: put(new[0], q_name)}
        shape, dtype = meta[kv_name]
        if all(w is not None for w in new[1:3]):
            fused_kv: Any = jax.ShapeDtypeStruct(_flax_shape(lay, shape), dtype)
        else:
            fused_kv = block.to_flax(old[kv_name])
        out[kv_name] = block.to_flax(_merge_fused(fused_kv, new[1:3], block)).astype(dtype)
    elif lay.qkv is None:
        out = {n: put(w, n) for n, w in zip(lay.names[:3], new[:3], strict=True)}
    else:
        shape, dtype = meta[lay.qkv]
        if all(w is not None for w in new[:3]):
            fused: Any = jax.ShapeDtypeStruct(_flax_shape(lay, shape), dtype)
        else:
            fused = block.to_flax(old[lay.qkv])
        merged = _merge_fused(fused, new[:3], block)
        out = {lay.qkv: block.to_flax(merged).astype(dtype)}
    out[lay.out] = put(new[3], lay.out)
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


#: Elements of new kernels the ``fast`` method draws at once across layers of equal shape, on GPU and TPU.
FAST_GROUP_ELEMENTS = 1 << 26
#: The same on CPU: about one ViT-B layer, so a batch's random bits and products stay in cache. One
#: ``(48, 768, 768)`` normal draw costs 2.7× the CPU time of 48 draws of ``(768, 768)``; ViT-B's ``fast``
#: transform took 0.87 CPU-s in batches of ``2**26`` elements (all 12 layers) and 0.42 in batches of ``2**21``
#: (``benchmarks/results/init_cost_ab_cpu_batch.md``).
FAST_GROUP_ELEMENTS_CPU = 1 << 21
#: Sharded kernels: a batch holds at most this fraction (1/n) of the layers, so the per-device transient
#: stays a small part of the per-device weights (``benchmarks/results/sharded_memory.md``).
SHARDED_BATCH_FRACTION = 16


def _spec_key(sharding: Any) -> Any:
    return None if sharding is None else (sharding.mesh, tuple(sharding.spec))


def _signature(block: AttentionBlock, flat: Mapping[Path, Any], targets: Mapping[Path, Any]) -> tuple:
    """Blocks with equal signatures are drawn together (same sizes, kernel shapes, dtypes and target shardings)."""
    kernels = tuple(
        (
            tuple(jnp.shape(flat[block.kernel_path(n)])),
            jnp.result_type(flat[block.kernel_path(n)]),
            _spec_key(targets[block.kernel_path(n)]),
        )
        for n in block.layout.names
    )
    return dataclasses.replace(block, path=(), kernel_paths=()), kernels


def _layer_sharding(sharding: Any, skip: int) -> Any:
    """A stacked kernel's target sharding without its ``skip`` stacked axes (one layer's)."""
    if sharding is None:
        return None
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*tuple(sharding.spec)[skip:]))


def _reinit_group(
    flat: dict[Path, Any],
    blocks: Sequence[AttentionBlock],
    keys: Sequence[Array],
    opts: dict[str, Any],
    parts: tuple[bool, bool],
    targets: Mapping[Path, Any],
) -> None:
    """Re-draw blocks of one signature, block ``i`` from ``keys[i]``, as one computation over their layers.

    Every layer of every block (slice ``j`` of a stacked block draws from
    ``jax.random.split(keys[i], layers)[j]``) is a unit of work; ``lax.map`` runs the units in
    batches (``vmap`` inside a batch) holding at most about ``FAST_GROUP_ELEMENTS`` new
    kernel elements for ``fast`` (``FAST_GROUP_ELEMENTS_CPU`` when JAX's default backend is
    the CPU) and one unit for ``exact``, so a deep model costs one
    launch sequence and its transient memory stays that of a batch.

    Sharded kernels (``targets``: :func:`mimetic_jax._sharding.target_of`): the rows of each
    construction are split over the mesh axes that shard the kernels
    (:func:`mimetic_jax._sharding.work_for`), each layer is placed at its kernel's sharding
    as it is written, and the result carries the target sharding; on an Explicit mesh this
    runs under ``auto_axes``. The numbers do not depend on the sharding.
    """
    block, names = blocks[0], blocks[0].layout.names
    skip = len(block.stack)
    layers = math.prod(block.stack)
    first = [flat[block.kernel_path(n)] for n in names]
    meta = {n: (tuple(jnp.shape(a))[skip:], jnp.result_type(a)) for n, a in zip(names, first, strict=True)}
    layer_targets = {n: _layer_sharding(targets[block.kernel_path(n)], skip) for n in names}
    sizes = [block.d_in, block.d_kv, block.d_out]
    work = work_for(list(layer_targets.values()), sizes)
    if not work.axes and all(t is None for t in layer_targets.values()):
        work = context_work([flat[b.kernel_path(n)] for b in blocks for n in names], sizes)
    keep_old = not all(parts)

    def one(args: tuple[Array, dict[str, Array] | None]) -> dict[str, Array]:
        key, old = args
        out = _write(block, old or {}, _draw(block, key, opts, parts, work), meta)
        return {n: _place(out[n], layer_targets[n], work) for n in names}

    def compute(unit_keys: Array, olds: dict[str, Array] | None) -> dict[Any, Array]:
        size = sum(math.prod(meta[n][0]) for n in names)
        budget = FAST_GROUP_ELEMENTS_CPU if jax.default_backend() == "cpu" else FAST_GROUP_ELEMENTS
        batch = max(1, budget // size) if opts["method"] == "fast" else 1
        if work.axes:  # sharded: a batch's transient at most 1/SHARDED_BATCH_FRACTION of the layers' weights
            batch = max(1, min(batch, unit_keys.shape[0] // SHARDED_BATCH_FRACTION))
        units = unit_keys.shape[0]
        batch = -(-units // -(-units // batch))  # as many batches, of equal sizes: no remainder body to compile
        new = jax.lax.map(one, (unit_keys, olds), batch_size=min(batch, units))
        out = {}
        for i, b in enumerate(blocks):
            for n in names:
                out[b.kernel_path(n)] = new[n].reshape(len(blocks), *block.stack, *meta[n][0])[i]
        return out

    unit_keys = jnp.concatenate([jax.random.split(k, layers) if skip else k[None] for k in keys])
    olds = None
    if keep_old:
        olds = {
            n: jnp.concatenate([jnp.reshape(flat[b.kernel_path(n)], (layers, *meta[n][0])) for b in blocks])
            for n in names
        }
    out_targets = {b.kernel_path(n): targets[b.kernel_path(n)] for b in blocks for n in names}
    new = run_auto(compute, out_targets, unit_keys, olds)
    for path, value in new.items():
        flat[path] = put_like(value, flat[path])


def _place(x: Array, sharding: Any, work: Work) -> Array:
    """One layer's new kernel at its target sharding (inside the construction: an Auto-mode constraint)."""
    if sharding is None or not work.axes:
        return x
    return work.place(x, sharding.spec)


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
    query_key: bool = True,  # option name mirrors the sampler it switches
    value_output: bool = True,
    layouts: Sequence[AttentionLayout] = DEFAULT_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    stacked_axes: int = 0,
    config: Any = None,
    allow_empty: bool = False,
    shardings: Any = None,
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
      shardings: where the kernels will live, for a tree created inside ``jax.jit`` on an
        Auto mesh (whose leaves do not carry the ``out_shardings``): a pytree with the
        tree's structure holding a ``Sharding``, a ``PartitionSpec`` or ``None`` per leaf,
        typically the ``out_shardings`` given to ``jax.jit``. Not needed for concrete
        sharded arrays or on an Explicit mesh, whose leaves carry their sharding.

    Returns:
      For a dict, an ``nnx.State`` or an Equinox module: a new tree with the same
      structure, shapes, dtypes and shardings (the input is not changed). For an
      ``nnx.Module``: the module itself, updated **in place** (like ``nnx.update``).

    Works under ``jax.jit``, so a sharded model is created directly sharded::

      init = jax.jit(lambda k: mimetic_attention(model.init(k, x), k, shardings=shardings), out_shardings=shardings)

    Sharded kernels are computed where their shards live (``docs/sharding.md``): the rows of
    every ``fast`` construction are split over the mesh axes that shard the kernels (read
    from the leaves, ``shardings``, or else the context mesh of ``jax.set_mesh``), layers
    are drawn a batch at a time, and the per-device memory stays near the default init's
    (LLaMA-7B attention on 8 devices: 1.01×). The numbers equal the unsharded ones bit for
    bit (``exact`` computes each layer's SVD on every device of the batch: same numbers,
    memory of one layer's targets).

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
    _checks.choice("distribution", distribution, DISTRIBUTIONS)
    if not isinstance(rotate_heads, bool):
        raise TypeError(f"rotate_heads must be a bool, got {rotate_heads!r}")
    # the float32 computation must hold the factors before the tree is read (the kernels'
    # own dtypes are checked once they are found)
    _checks.target_fits("alpha", alpha, "beta", beta, jnp.float32)
    _checks.target_fits("value_alpha", value_alpha, "value_beta", value_beta, jnp.float32)
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
            dt = _checks.float_dtype(
                f"kernel {path_name(block.kernel_path(n))!r} dtype", jnp.result_type(flat[block.kernel_path(n)])
            )
            # drawn in float32, written in the kernel's dtype: both must hold the factors
            for dtype in (jnp.float32, dt):
                _checks.target_fits("alpha", alpha, "beta", beta, dtype)
                _checks.target_fits("value_alpha", value_alpha, "value_beta", value_beta, dtype)
    given = flatten_shardings(shardings, flat)
    targets = {
        block.kernel_path(n): target_of(flat[block.kernel_path(n)], given.get(block.kernel_path(n)))
        for block in blocks
        for n in block.layout.names
    }
    groups: dict[tuple, list[int]] = {}
    for i, block in enumerate(blocks):
        groups.setdefault(_signature(block, flat, targets), []).append(i)
    for members in groups.values():
        _reinit_group(
            flat,
            [blocks[i] for i in members],
            [jax.random.fold_in(key, i) for i in members],
            opts,
            (bool(query_key), bool(value_output)),
            targets,
        )
    return rebuild(tree, flat)
