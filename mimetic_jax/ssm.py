r"""Mimetic initialization of selective state space models (Mamba) (Trockman et al. 2024).

Reference: A. Trockman, H. Harutyunyan, J. Z. Kolter, S. Kumar and S. Bhojanapalli,
"Mimetic Initialization Helps State Space Models Learn to Recall", arXiv:2410.11135.

Unrolled, a selective SSM is a linear attention with a decay mask:

.. math::

    y_i = \sum_{j \le i} (C_i \cdot B_j)\, \Big(\prod_{k=j+1}^{i} e^{\Delta_k A}\Big)\, \Delta_j x_j,
    \qquad B_t = W_B u_t,\; C_t = W_C u_t .

Mimetic init makes it *start* as causal linear attention, so that copying and
associative recall are easy to learn:

1. **Transition near identity** (:func:`a_log_init`, :func:`dt_bias_init`): ``A → 0``
   (``A_log`` very negative) so that ``e^{ΔA} ≈ 1`` and the state keeps what it saw over
   the whole sequence; ``Δ`` about constant. :func:`min_retention` is the smallest
   ``Π e^{ΔA}`` over ``length`` steps at init.
2. **B/C coupling** (:func:`bc_kernels`): ``W_C W_Bᵀ ≈ α Z + β I`` at rank ``N`` (the
   state size), so ``C_i · B_j ≈ β u_iᵀ u_j``: tokens attend to similar tokens. This is
   the query/key construction of :func:`mimetic_jax.query_key` with ``head_dim = N``
   (``C`` plays the query, ``B`` the key), reused, not re-derived.
3. **Identity short convolution** (:func:`identity_conv_init`, optional): only the
   current tap is one, so the block starts without the random local mixing of the
   default conv. In Mamba-1 the conv sits in front of ``x`` and of the ``B``/``C``
   inputs; in Mamba-2 it acts on ``x``, ``B`` and ``C`` themselves.

What is ours: the paper's exact values (the range of ``A_log``, the target ``Δ``, the
noise weights ``α``/``β``) are not available to us. The defaults here,
``A_log ~ U[−8, −4]``, ``Δ = 1``, ``α = β = 0.7`` (the attention values), and whether the
identity conv is on, are this project's, set by ``benchmarks/ssm_recall.py`` (see the
README). Mamba's own defaults, the baseline: ``A_log = log(1..N)`` (Mamba-1) or
``log U[1, 16]`` (Mamba-2), ``Δ = exp(U[log 1e-3, log 1e-1])``.

What the benchmark found (one H200, 2-layer LMs at d 64, 3–5 paired seeds; README tables):
a large, seed-stable gain on copying (Mamba-1 and -2) and on Mamba-2 MQAR; a sweep changing
one option at a time found nothing better than the defaults on both tasks (``A_log`` ranges
nearer Mamba's own and ``Δ = 0.1`` hurt most); the identity conv hurts copying, so it is off.
On Mamba-1 MQAR the learning rate matters as much as the init: at 1e-3 mimetic init solved it
in every seed (99.7 % against 19.4 %), at 3e-3 it stalled, and at d 128, lr 3e-3 the default
init solved it and mimetic init did not: sweep the learning rate.

The whole-model transform that finds Mamba blocks and applies these is
:func:`mimetic_jax.mimetic_ssm`; the reference blocks are in
:mod:`mimetic_jax.experiments.models.mamba`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import _checks
from mimetic_jax.attention import constrain, query_key

Array = jax.Array
Initializer = Callable[..., Array]

#: Default range of ``A_log`` for a near-identity transition (ours, see the module docstring).
A_LOG_RANGE = (-8.0, -4.0)
#: Default target step size ``Δ`` (ours).
DELTA = 1.0


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    low, high = _checks.finite_float(f"low ({name}[0])", low), _checks.finite_float(f"high ({name}[1])", high)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return low, high


def _positive(name: str, value: Any) -> float:
    value = _checks.finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def a_log_init(low: float = A_LOG_RANGE[0], high: float = A_LOG_RANGE[1]) -> Initializer:
    r"""Initializer for ``A_log`` (any shape): iid ``U[low, high]``, a near-identity transition.

    ``A = −exp(A_log)`` lies in ``[−e^{high}, −e^{low}]``; with step ``Δ`` the state
    keeps at least ``exp(−L Δ e^{high})`` of an input over ``L`` steps
    (:func:`min_retention`): 0.31 for ``high = −4``, ``Δ = 1``, ``L = 64``.

    ``low <= high``, both finite, and at ``init`` both finite in the output dtype
    (``float16`` tops at 65504); the key must be a typed key or a raw ``uint32[2]``.

    Example:
      >>> import jax
      >>> a = a_log_init()(jax.random.key(0), (64, 8))
      >>> bool(a.min() >= -8.0) and bool(a.max() <= -4.0)
      True
    """
    low, high = _range("a_log_range", (low, high))

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        key = _checks.prng_key("key", key)
        dims = _checks.shape_of("shape", shape, range(0, 9))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("low", low, dtype)
        _checks.fits_dtype("high", high, dtype)
        ct = _checks.compute_dtype(dtype)
        out = jax.random.uniform(key, dims, ct, low, high).astype(dtype)
        return constrain(out, out_sharding)

    return init


def dt_bias_init(delta: float = DELTA) -> Initializer:
    r"""Initializer for the Δ bias (Mamba-1 ``dt_proj`` bias, Mamba-2 ``dt_bias``): constant ``softplus⁻¹(Δ)``.

    With the input-dependent part at zero, ``Δ = softplus(bias) = delta`` exactly.
    ``delta`` must be positive and ``softplus⁻¹(delta)`` finite in the output dtype
    (``float16``: ``delta <= 65504``). The key is ignored (deterministic).

    Example:
      >>> import jax
      >>> b = dt_bias_init(1.0)(jax.random.key(0), (4,))
      >>> round(float(jax.nn.softplus(b[0])), 6)
      1.0
    """
    delta = _positive("delta", delta)
    value = delta + math.log(-math.expm1(-delta))

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        del key
        dims = _checks.shape_of("shape", shape, range(0, 9))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("delta", value, dtype, "softplus⁻¹(delta)")
        return constrain(jnp.full(dims, value, dtype), out_sharding)

    return init


def identity_conv_init() -> Initializer:
    """Initializer for a causal depthwise conv kernel ``(d_conv, 1, C)``: only the current tap is one.

    With left padding ``d_conv − 1`` (as in Mamba), tap ``d_conv − 1`` multiplies the
    current position, so the conv is the identity map (set its bias to zero).

    Example:
      >>> import jax
      >>> identity_conv_init()(jax.random.key(0), (4, 1, 3))[:, 0, 0].tolist()
      [0.0, 0.0, 0.0, 1.0]
    """

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        del key
        dims = _checks.shape_of("shape", shape, (3,))
        if dims[1] != 1:
            raise ValueError(f"shape must be a depthwise conv kernel (d_conv, 1, channels), got {dims}")
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        out = jnp.zeros(dims, dtype).at[-1].set(1)
        return constrain(out, out_sharding)

    return init


def bc_kernels(
    key: Array,
    d_in: int,
    d_state: int,
    *,
    num_groups: int = 1,
    alpha: float = 0.7,
    beta: float = 0.7,
    distribution: str = "normal",
    method: str = "exact",
    dtype: Any = jnp.float32,
) -> tuple[Array, Array]:
    r"""B and C projection columns with ``W_C^g W_B^{gᵀ} ≈ α Z_g + β I`` at rank ``N``, per group.

    :func:`mimetic_jax.query_key` with ``num_heads = num_groups``, ``head_dim = d_state``:
    ``C`` is the query, ``B`` the key, so ``C_t · B_s = u_tᵀ W_C W_Bᵀ u_s`` is the
    best rank-``N`` approximation of ``u_tᵀ (αZ + βI) u_s`` (exact method).

    Args:
      key: a PRNG key.
      d_in: width of the input the projections read (Mamba-1: ``d_inner``, the conv
        output; Mamba-2: ``d_model``, the block input).
      d_state: state size ``N`` (at most ``d_in``).
      num_groups: groups ``G`` (Mamba-2 ``ngroups``; 1 for Mamba-1).
      alpha, beta: noise and identity weights.
      distribution, method, dtype: as in :func:`mimetic_jax.query_key`.

    Returns:
      ``(w_b, w_c)``, each ``(d_in, num_groups, d_state)``.

    Raises ``ValueError``/``TypeError`` naming the argument for a bad key, size (each at
    most ``2**31 − 1``, each array at most ``2**34`` elements, checked before anything is
    allocated), option or dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w_b, w_c = bc_kernels(jax.random.key(0), 128, 16)
      >>> p = w_c[:, 0] @ w_b[:, 0].T
      >>> bool(jnp.diagonal(p).mean() > 3 * jnp.abs(p - jnp.diag(jnp.diagonal(p))).mean())
      True
    """
    d_in = _checks.size("d_in", d_in)
    n = _checks.size("d_state", d_state)
    groups = _checks.size("num_groups", num_groups)
    _checks.not_wider("d_state", n, "the B/C projection input width d_in", d_in)
    _checks.elements("d_in × num_groups × d_state, d_in × d_in", d_in * groups * n, d_in * d_in)
    alpha, beta = _checks.finite_float("alpha", alpha), _checks.finite_float("beta", beta)
    key = _checks.prng_key("key", key)
    w_c, w_b = query_key(
        key, d_in, num_groups, n, alpha=alpha, beta=beta, distribution=distribution, method=method, dtype=dtype
    )
    return w_b, w_c


def min_retention(a_log: Array, delta: float | Array, length: int) -> Array:
    r"""Smallest ``Π_{t=1..L} e^{Δ A}`` over the entries of ``A = −exp(A_log)``: ``exp(−L Δ max e^{A_log})``.

    The fraction of an input the state still holds ``length`` steps later, for the
    fastest-decaying channel, with a constant step ``Δ`` (``delta`` may be an array of
    per-channel steps: its largest value is used). ``a_log`` and ``delta`` must be finite
    and ``delta > 0``; under ``jax.jit`` (traced arrays) these value checks cannot run:
    call it eagerly to have them. ``length`` is any positive int (``10**12`` included).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(min_retention(jnp.array([-8.0, -4.0]), 1.0, 64)), 2)
      0.31
    """
    length = _checks.positive_int("length", length)
    for name, value in (("a_log", a_log), ("delta", delta)):
        if not jnp.issubdtype(jnp.result_type(value), jnp.number) or jnp.issubdtype(
            jnp.result_type(value), jnp.complexfloating
        ):
            raise TypeError(f"{name} must be a real number or array, got dtype {jnp.result_type(value)}")
        if np.size(value) == 0:
            raise ValueError(f"{name} must not be empty, got shape {np.shape(value)}")
        _checks.finite_array(name, value)
    if not _checks.is_traced(delta) and not bool(np.all(np.asarray(delta) > 0)):
        raise ValueError(f"delta must be > 0 (the step size Δ), got {delta!r}")
    rate = jnp.max(jnp.exp(jnp.asarray(a_log, jnp.float32))) * jnp.max(jnp.asarray(delta, jnp.float32))
    return jnp.exp(-float(length) * rate)
