r"""Mimetic initialization of self-attention (Trockman & Kolter, ICML 2023).

Reference: A. Trockman and J. Z. Kolter, "Mimetic Initialization of Self-Attention
Layers", ICML 2023, arXiv:2305.09828.

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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from mimetic_jax import _checks, _linalg

Array = jax.Array
Initializer = Callable[..., Array]
Distribution = Literal["normal", "uniform"]
Method = Literal["exact", "fast"]

DISTRIBUTIONS = ("normal", "uniform")
METHODS = ("exact", "fast")
#: Elements of ``d×d`` targets the exact method keeps alive at once (bounds peak memory).
EXACT_CHUNK_ELEMENTS = 1 << 24


def _typed_key(key: Any) -> Array:
    """Accept a new-style typed key or a legacy ``uint32[2]`` key (checked by ``_checks.prng_key``)."""
    return _checks.prng_key("key", key)


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
    d_in, heads, kv_heads, k, d_kv = _check_sizes(d_in, num_heads, num_kv_heads, head_dim, "d_kv", d_kv)
    dtype = _common(distribution, method, dtype)
    return _query_key(
        _typed_key(key),
        d_in=d_in,
        d_kv=d_kv,
        heads=heads,
        kv_heads=kv_heads,
        k=k,
        alpha=_checks.finite_float("alpha", alpha),
        beta=_checks.finite_float("beta", beta),
        distribution=distribution,
        method=method,
        dtype=dtype,
    )


@functools.partial(
    jax.jit,
    static_argnames=("d_in", "d_kv", "heads", "kv_heads", "k", "alpha", "beta", "distribution", "method", "dtype"),
)
def _query_key(key, *, d_in, d_kv, heads, kv_heads, k, alpha, beta, distribution, method, dtype):
    ct = _checks.compute_dtype(dtype)
    group = heads // kv_heads
    keys = jax.random.split(key, heads).reshape(kv_heads, group)
    # One problem per key head: the group's `group` targets share the key factor (see _linalg's
    # `blocks`); the query factors come back stacked, (group·d_in, k).
    if method == "fast" and _linalg.fast_regime(d_in, d_kv, k, group) != "exact":
        wq, wk = _map(
            lambda gk: _linalg.fast_factors(gk[0], d_in, d_kv, k, alpha, beta, distribution, ct, group), keys, None
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
    d_in, heads, kv_heads, k, d_out = _check_sizes(d_in, num_heads, num_kv_heads, head_dim, "d_out", d_out)
    _checks.choice("sign", sign, (-1, 1))
    if not isinstance(rotate_heads, bool):
        raise TypeError(f"rotate_heads must be a bool, got {rotate_heads!r}")
    dtype = _common(distribution, method, dtype)
    return _value_output(
        _typed_key(key),
        d_in=d_in,
        d_out=d_out,
        heads=heads,
        kv_heads=kv_heads,
        k=k,
        alpha=_checks.finite_float("alpha", alpha),
        beta=float(sign) * _checks.finite_float("beta", beta),
        distribution=distribution,
        method=method,
        rotate_heads=rotate_heads,
        dtype=dtype,
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
    ),
)
def _value_output(key, *, d_in, d_out, heads, kv_heads, k, alpha, beta, distribution, method, rotate_heads, dtype):
    ct = _checks.compute_dtype(dtype)
    width = kv_heads * k
    rank = min(width, d_in, d_out)
    k_target, k_rot = jax.random.split(key)
    if method == "exact":
        target = _linalg.identity_target(k_target, d_in, d_out, alpha, beta, distribution, ct)
        left, right = _linalg.exact_factors(target, rank)
    else:
        left, right = _linalg.fast_factors(k_target, d_in, d_out, rank, alpha, beta, distribution, ct)
    if rank < width:
        pad = ((0, 0), (0, width - rank))
        left, right = jnp.pad(left, pad), jnp.pad(right, pad)
    if rotate_heads or rank < width:
        rot = _linalg.haar_columns(k_rot, width, width, ct)
        left, right = left @ rot, right @ rot
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
    qk_opts = dict(alpha=alpha, beta=beta, num_kv_heads=kv_heads, distribution=distribution, method=method)
    vo_opts = dict(
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
        k_qk, k_vo = jax.random.split(_typed_key(key))
        w_q, w_k = query_key(k_qk, d, heads, k, dtype=dtype, **qk_opts)
        w_v, _ = value_output(k_vo, d, heads, k, dtype=dtype, **vo_opts)
        if len(dims) == 4:
            out = jnp.stack([w_q, w_k, w_v], axis=1)
        else:
            out = jnp.concatenate([w.reshape(d, -1) for w in (w_q, w_k, w_v)], axis=1)
        return constrain(out, out_sharding)

    return init


def constrain(x: Array, out_sharding: Any) -> Array:
    """Apply an initializer's ``out_sharding`` (``None`` leaves ``x`` as it is)."""
    if out_sharding is None:
        return x
    mesh = getattr(out_sharding, "mesh", None)
    explicit = mesh is None or any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))
    if explicit:  # explicit-axis meshes (the default of jax.make_mesh) and bare PartitionSpecs
        return jax.sharding.reshard(x, out_sharding)
    return jax.lax.with_sharding_constraint(x, out_sharding)


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
