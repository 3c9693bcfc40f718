r"""Reference Mamba-1 and Mamba-2 blocks in Flax linen, and a small language model on them.

The blocks follow the official implementation (``state-spaces/mamba``:
``mamba_simple.Mamba`` and ``mamba2_simple.Mamba2Simple``) in structure, parameter
names and default initialization, written in plain JAX (no fused kernels):

Mamba-1 (:class:`Mamba1`), ``d_inner = expand · d_model``, ``R = ceil(d_model / 16)``::

    in_proj   (d_model, 2 d_inner)  no bias      → x, z
    conv1d    (d_conv, 1, d_inner)  + bias       causal depthwise, then SiLU
    x_proj    (d_inner, R + 2N)     no bias      → δ (R), B (N), C (N)
    dt_proj   (R, d_inner)          + bias       Δ = softplus(dt_proj(δ))
    A_log     (d_inner, N)                       A = −exp(A_log)
    D         (d_inner,)
    out_proj  (d_inner, d_model)    no bias      out = out_proj(y · SiLU(z))

Mamba-2 (:class:`Mamba2`), ``H = d_inner / headdim`` heads, ``G`` groups::

    in_proj   (d_model, 2 d_inner + 2GN + H)     → z, x, B, C, dt (that order)
    conv1d    (d_conv, 1, d_inner + 2GN) + bias  over x, B, C; then SiLU
    dt_bias   (H,)                               Δ = softplus(dt + dt_bias)
    A_log     (H,)                               A = −exp(A_log), one scalar per head
    D         (H,)
    norm      scale (d_inner,)                   gated RMSNorm: rmsnorm(y · SiLU(z)) · scale
    out_proj  (d_inner, d_model)    no bias

The selective scan (per channel/head, state size ``N``)

.. math::

    h_t = \exp(\Delta_t A)\, h_{t-1} + \Delta_t B_t x_t, \qquad y_t = C_t^\top h_t + D x_t

is a first-order linear recurrence ``h_t = a_t h_{t-1} + b_t``, run in parallel with
``jax.lax.associative_scan`` over the pairs ``(a, b)`` with
``(a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂)`` (:func:`linear_recurrence`), and tested equal
to the plain sequential loop (``scan="sequential"``, :func:`linear_recurrence_sequential`).
Mamba-2 also has ``scan="quadratic"``: its decay is one scalar per head, so the whole scan
is one masked ``L × L`` product (the SSD "attention" form of Dao & Gu 2024, one chunk;
:func:`ssd_quadratic`), without the ``(B, L, H, P, N)`` states: on CPU, for short
sequences, several times faster than either scan, and tested equal to them.

Default initialization (Mamba's own, the baseline for mimetic init, Trockman et al. 2024): linear
kernels ``U(±1/√fan_in)`` (PyTorch's default), ``conv1d`` kernel and bias
``U(±1/√d_conv)``; ``dt_proj`` kernel ``U(±R^{-1/2})``; Δ bias the inverse softplus of
``Δ = exp(U[log 1e-3, log 1e-1])`` (floored at 1e-4); Mamba-1 ``A_log = log(1..N)``,
Mamba-2 ``A_log = log U[1, 16]``; ``D = 1``; ``out_proj`` divided by ``√n_layer`` in
:class:`MambaLM` (the official ``rescale_prenorm_residual``), embeddings ``N(0, 0.02²)``
tied with the output head.

The parameter names are part of the interface: :func:`mimetic_jax.mimetic_ssm` finds the
blocks by them (the same names as the official code and Hugging Face ``transformers``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = MambaLM(vocab_size=16, d_model=32, n_layer=2, d_state=8)
    >>> tokens = jnp.zeros((2, 10), jnp.int32)
    >>> variables = model.init(jax.random.key(0), tokens)
    >>> model.apply(variables, tokens).shape
    (2, 10, 16)
    >>> sorted(variables["params"]["layers_0"]["mixer"])
    ['A_log', 'D', 'conv1d', 'dt_proj', 'in_proj', 'out_proj', 'x_proj']
"""

from __future__ import annotations

import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "CausalConv",
    "Mamba1",
    "Mamba2",
    "MambaLM",
    "inverse_softplus",
    "linear_recurrence",
    "linear_recurrence_sequential",
    "ssd_quadratic",
]

Array = jax.Array
Scan = Literal["parallel", "sequential", "quadratic"]


# --------------------------------------------------------------------------- the scan


def linear_recurrence(a: Array, b: Array, axis: int = 1) -> Array:
    """All states of ``h_t = a_t h_{t-1} + b_t`` (``h_{-1} = 0``) along ``axis``, in parallel.

    ``jax.lax.associative_scan`` with ``(a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, a₂ b₁ + b₂)``:
    ``O(log L)`` depth. ``a`` broadcasts against ``b``.

    Example:
        >>> a = jnp.full((1, 4, 1), 0.5); b = jnp.ones((1, 4, 1))
        >>> linear_recurrence(a, b)[0, :, 0].tolist()
        [1.0, 1.5, 1.75, 1.875]
    """
    a = jnp.broadcast_to(a, jnp.broadcast_shapes(a.shape, b.shape))

    def combine(left, right):
        a1, b1 = left
        a2, b2 = right
        return a1 * a2, a2 * b1 + b2

    return jax.lax.associative_scan(combine, (a, b), axis=axis)[1]


def linear_recurrence_sequential(a: Array, b: Array, axis: int = 1) -> Array:
    """The same recurrence as :func:`linear_recurrence`, one step at a time (``lax.scan``)."""
    a = jnp.broadcast_to(a, jnp.broadcast_shapes(a.shape, b.shape))
    a_t, b_t = jnp.moveaxis(a, axis, 0), jnp.moveaxis(b, axis, 0)

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    _, hs = jax.lax.scan(step, jnp.zeros_like(b_t[0]), (a_t, b_t))
    return jnp.moveaxis(hs, 0, axis)


def ssd_quadratic(log_decay: Array, x: Array, b: Array, c: Array) -> Array:
    r"""Mamba-2's scan output ``y_t = C_tᵀ h_t`` as one masked ``L × L`` product (no states).

    For ``h_t = e^{ℓ_t} h_{t-1} + x_t B_tᵀ`` (one scalar ``ℓ_t = Δ_t A`` per head;
    ``x`` already multiplied by ``Δ``), unrolling gives

    .. math::

        y_t = \sum_{s \le t} e^{\,c_t - c_s}\,(C_t \cdot B_s)\, x_s, \qquad c_t = \sum_{r \le t} ℓ_r,

    the SSD "attention" form (Dao & Gu 2024) as a single chunk. ``c_t - c_s <= 0`` for
    ``s <= t`` (``ℓ <= 0``), and the entries above the diagonal are masked before the
    exponential, so nothing overflows. ``O(L²(N + P))`` work per head instead of
    ``O(L·P·N)`` states.

    Args:
      log_decay: ``ℓ``, shape ``(batch, L, H)``.
      x: ``(batch, L, H, P)``.
      b, c: ``(batch, L, G, N)``, ``G`` groups of heads (``H`` divisible by ``G``).

    Returns:
      ``y`` of shape ``(batch, L, H, P)``.

    Example:
        >>> y = ssd_quadratic(jnp.zeros((1, 3, 1)), jnp.ones((1, 3, 1, 1)), jnp.ones((1, 3, 1, 1)),
        ...                   jnp.ones((1, 3, 1, 1)))
        >>> y[0, :, 0, 0].tolist()
        [1.0, 2.0, 3.0]
    """
    bsz, length, heads, p = x.shape
    groups = b.shape[2]
    cum = jnp.cumsum(log_decay, axis=1)  # (B, L, H)
    seg = cum[:, :, None, :] - cum[:, None, :, :]  # (B, t, s, H)
    causal = jnp.tril(jnp.ones((length, length), bool))[None, :, :, None]
    decay = jnp.exp(jnp.where(causal, seg, -jnp.inf))
    scores = jnp.einsum("btgn,bsgn->btsg", c, b)  # (B, t, s, G)
    weights = decay.reshape(bsz, length, length, groups, heads // groups) * scores[..., None]
    y = jnp.einsum("btsgr,bsgrp->btgrp", weights, x.reshape(bsz, length, groups, heads // groups, p))
    return y.reshape(bsz, length, heads, p)


def _recurrence(scan: Scan):
    if scan == "parallel":
        return linear_recurrence
    if scan == "sequential":
        return linear_recurrence_sequential
    if scan == "quadratic":
        raise ValueError("scan='quadratic' needs Mamba-2's scalar decay per head (version=2), got a Mamba-1 block")
    raise ValueError(f"scan must be 'parallel', 'sequential' or 'quadratic', got {scan!r}")


# --------------------------------------------------------------------------- default inits


def inverse_softplus(x: Array) -> Array:
    """``softplus⁻¹(x) = x + log(−expm1(−x))`` for ``x > 0`` (the official Δ-bias formula)."""
    return x + jnp.log(-jnp.expm1(-x))


def torch_linear_init() -> nn.initializers.Initializer:
    """PyTorch's default ``nn.Linear``/``nn.Conv1d`` weight init: ``U(±1/√fan_in)``."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias init: ``U(±1/√fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dt_bias_default(dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4):
    """Mamba's Δ bias: inverse softplus of ``Δ = max(exp(U[log dt_min, log dt_max]), dt_floor)``."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), dt_floor)
        return inverse_softplus(dt).astype(dtype)

    return init


def _a_log_mamba1(key, shape, dtype=jnp.float32):
    del key
    return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[-1] + 1, dtype=jnp.float32)), shape).astype(dtype)


def _a_log_mamba2(key, shape, dtype=jnp.float32):
    return jnp.log(jax.random.uniform(key, shape, jnp.float32, 1.0, 16.0)).astype(dtype)


class CausalConv(nn.Module):
    """Causal depthwise convolution along the length axis, ``(…, L, channels)`` in and out.

    The parameters are those of ``nn.Conv(channels, (d_conv,), padding=((d_conv − 1, 0),),
    feature_group_count=channels)`` (``kernel (d_conv, 1, channels)``, ``bias (channels,)``, the
    same names and inits, so the same values from the same key), and so is the output:
    ``y_t = b + Σ_i w_i x_{t+i−(d_conv−1)}``. It is computed as ``d_conv`` shifted products:
    XLA:CPU's grouped convolution took 8-9× as long, forward and backward, for Mamba's
    shapes (``d_conv`` 4, a few hundred channels, vmapped over models).
    """

    channels: int
    d_conv: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", torch_linear_init(), (self.d_conv, 1, self.channels))
        bias = self.param("bias", torch_bias_init(self.d_conv), (self.channels,))
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        length = x.shape[-2]
        padded = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(self.d_conv - 1, 0), (0, 0)])
        return sum(padded[..., i : i + length, :] * kernel[i, 0] for i in range(self.d_conv)) + bias


# --------------------------------------------------------------------------- blocks


class Mamba1(nn.Module):
    """Mamba-1 mixer (selective SSM), input and output ``(batch, length, d_model)``.

    Attributes:
        d_model: model width.
        d_state: state size ``N`` per channel.
        d_conv: short convolution width.
        expand: ``d_inner = expand · d_model``.
        dt_rank: rank of the Δ projection (default ``ceil(d_model / 16)``).
        out_scale: multiplies the default ``out_proj`` init (``1/√n_layer`` in :class:`MambaLM`).
        scan: ``"parallel"`` (associative scan) or ``"sequential"`` (reference loop).
        dtype: computation dtype; the scan runs in float32.
    """

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    out_scale: float = 1.0
    scan: Scan = "parallel"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, u: Array) -> Array:
        d_inner = self.expand * self.d_model
        rank = self.dt_rank or math.ceil(self.d_model / 16)
        n = self.d_state
        dense = lambda width, name, **kw: nn.Dense(
            width,
            use_bias=False,
            kernel_init=torch_linear_init(),
            dtype=self.dtype,
            name=name,
            **kw,
        )
        xz = dense(2 * d_inner, "in_proj")(u)
        x, z = jnp.split(xz, 2, axis=-1)
        x = nn.silu(CausalConv(d_inner, self.d_conv, self.dtype, name="conv1d")(x))
        x_dbl = dense(rank + 2 * n, "x_proj")(x)
        dt, b, c = jnp.split(x_dbl, [rank, rank + n], axis=-1)
        std = rank**-0.5
        dt = nn.Dense(
            d_inner,
            use_bias=True,
            dtype=self.dtype,
            name="dt_proj",
            kernel_init=_uniform(std),
            bias_init=dt_bias_default(),
        )(dt)
        a_log = self.param("A_log", _a_log_mamba1, (d_inner, n))
        d = self.param("D", nn.initializers.ones, (d_inner,))
        f32 = jnp.float32
        delta = nn.softplus(dt.astype(f32))  # (B, L, D)
        a = -jnp.exp(a_log.astype(f32))  # (D, N)
        xf = x.astype(f32)
        decay = jnp.exp(delta[..., None] * a)  # (B, L, D, N)
        inputs = (delta * xf)[..., None] * b.astype(f32)[..., None, :]  # (B, L, D, N)
        h = _recurrence(self.scan)(decay, inputs, axis=1)
        y = jnp.einsum("bldn,bln->bld", h, c.astype(f32)) + xf * d.astype(f32)
        y = (y * nn.silu(z.astype(f32))).astype(self.dtype)
        out_init = nn.initializers.variance_scaling(self.out_scale**2 / 3.0, "fan_in", "uniform")
        return nn.Dense(self.d_model, use_bias=False, kernel_init=out_init, dtype=self.dtype, name="out_proj")(y)


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class GatedRMSNorm(nn.Module):
    """``rmsnorm(y · SiLU(z)) · scale`` (Mamba-2's ``RMSNormGated``, ``norm_before_gate=False``)."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, y: Array, z: Array) -> Array:
        scale = self.param("scale", nn.initializers.ones, (y.shape[-1],))
        y = y.astype(jnp.float32) * nn.silu(z.astype(jnp.float32))
        y = y * jax.lax.rsqrt(jnp.mean(y * y, axis=-1, keepdims=True) + self.eps)
        return y * scale


class Mamba2(nn.Module):
    """Mamba-2 mixer (scalar decay per head, SSD), input and output ``(batch, length, d_model)``.

    Attributes:
        d_model: model width.
        d_state: state size ``N``.
        d_conv: short convolution width.
        expand: ``d_inner = expand · d_model``.
        headdim: head size ``P``; ``H = d_inner / P`` heads.
        ngroups: groups ``G`` of heads sharing one ``B``/``C`` (``H`` divisible by ``G``).
        out_scale: multiplies the default ``out_proj`` init.
        scan: ``"parallel"``, ``"sequential"`` or ``"quadratic"`` (:func:`ssd_quadratic`).
        dtype: computation dtype; the scan runs in float32.
    """

    d_model: int
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    headdim: int = 16
    ngroups: int = 1
    out_scale: float = 1.0
    scan: Scan = "parallel"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, u: Array) -> Array:
        d_inner = self.expand * self.d_model
        if d_inner % self.headdim:
            raise ValueError(f"headdim ({self.headdim}) must divide d_inner = expand * d_model ({d_inner})")
        heads = d_inner // self.headdim
        if heads % self.ngroups:
            raise ValueError(f"ngroups ({self.ngroups}) must divide the number of heads ({heads})")
        g, n, p = self.ngroups, self.d_state, self.headdim
        zxbcdt = nn.Dense(
            2 * d_inner + 2 * g * n + heads,
            use_bias=False,
            kernel_init=torch_linear_init(),
            dtype=self.dtype,
            name="in_proj",
        )(u)
        z, xbc, dt = jnp.split(zxbcdt, [d_inner, 2 * d_inner + 2 * g * n], axis=-1)
        xbc = nn.silu(CausalConv(d_inner + 2 * g * n, self.d_conv, self.dtype, name="conv1d")(xbc))
        x, b, c = jnp.split(xbc, [d_inner, d_inner + g * n], axis=-1)
        dt_bias = self.param("dt_bias", dt_bias_default(), (heads,))
        a_log = self.param("A_log", _a_log_mamba2, (heads,))
        d = self.param("D", nn.initializers.ones, (heads,))
        f32 = jnp.float32
        bsz, length = u.shape[:2]
        delta = nn.softplus(dt.astype(f32) + dt_bias.astype(f32))  # (B, L, H)
        a = -jnp.exp(a_log.astype(f32))  # (H,)
        xh = x.astype(f32).reshape(bsz, length, heads, p)
        bg, cg = (v.astype(f32).reshape(bsz, length, g, n) for v in (b, c))  # (B, L, G, N)
        if self.scan == "quadratic":
            y = ssd_quadratic(delta * a, delta[..., None] * xh, bg, cg)
        else:
            bh, ch = (jnp.repeat(v, heads // g, axis=2) for v in (bg, cg))  # (B, L, H, N)
            decay = jnp.exp(delta * a)[..., None, None]  # (B, L, H, 1, 1)
            inputs = (delta[..., None] * xh)[..., None] * bh[..., None, :]  # (B, L, H, P, N)
            h = _recurrence(self.scan)(decay, inputs, axis=1)
            y = jnp.einsum("blhpn,blhn->blhp", h, ch)
        y = y + xh * d.astype(f32)[:, None]
        y = GatedRMSNorm(name="norm")(y.reshape(bsz, length, d_inner), z).astype(self.dtype)
        out_init = nn.initializers.variance_scaling(self.out_scale**2 / 3.0, "fan_in", "uniform")
        return nn.Dense(self.d_model, use_bias=False, kernel_init=out_init, dtype=self.dtype, name="out_proj")(y)


class _Layer(nn.Module):
    """``h + mixer(RMSNorm(h))`` (the official ``Block`` with pre-norm residual)."""

    version: int
    config: tuple[tuple[str, Any], ...]

    @nn.compact
    def __call__(self, h: Array) -> Array:
        cls = Mamba1 if self.version == 1 else Mamba2
        mixer = cls(**dict(self.config), name="mixer")
        return h + mixer(nn.RMSNorm(epsilon=1e-5, name="norm")(h))


class MambaLM(nn.Module):
    """Token embedding → ``n_layer`` pre-norm Mamba layers → RMSNorm → tied output head.

    Parameter paths ``layers_{i}/mixer/...`` mirror the official ``backbone.layers.{i}.mixer``.

    Attributes:
        vocab_size: number of tokens.
        d_model: width.
        n_layer: number of layers.
        d_state: state size ``N``.
        version: 1 (:class:`Mamba1`) or 2 (:class:`Mamba2`).
        d_conv, expand: as in the blocks.
        headdim, ngroups: Mamba-2 only.
        scan: ``"parallel"``, ``"sequential"`` or (Mamba-2 only) ``"quadratic"``.
        dtype: computation dtype.
    """

    vocab_size: int
    d_model: int = 64
    n_layer: int = 2
    d_state: int = 16
    version: int = 1
    d_conv: int = 4
    expand: int = 2
    headdim: int = 16
    ngroups: int = 1
    scan: Scan = "parallel"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        if self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version!r}")
        embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(0.02), name="embedding")
        h = embed(tokens).astype(self.dtype)
        scale = 1.0 / math.sqrt(self.n_layer)
        config = dict(
            d_model=self.d_model,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            out_scale=scale,
            scan=self.scan,
            dtype=self.dtype,
        )
        if self.version == 2:
            config.update(headdim=self.headdim, ngroups=self.ngroups)
        for i in range(self.n_layer):
            h = _Layer(self.version, tuple(sorted(config.items())), name=f"layers_{i}")(h)
        h = nn.RMSNorm(epsilon=1e-5, name="norm_f")(h)
        return embed.attend(h.astype(jnp.float32))
