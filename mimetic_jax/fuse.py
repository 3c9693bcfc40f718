r"""FuseInit: MSE-optimal fusion of two neighbouring layers (Ghods et al. 2020).

Reference: R. Ghods, A. S. Lan, T. Goldstein and C. Studer, "MSE-Optimal Neural
Network Initialization via Layer Fusion", CISS 2020, arXiv:2001.10509.

Train a deeper network, then initialize a shallower one by replacing two neighbouring
layers and the nonlinearity between them,

.. math::

    z_2 = \sigma(x W_1 + b_1)\, W_2 + b_2,

by the single affine layer ``ẑ₂ = x W + b`` that minimizes ``E‖z₂ − ẑ₂‖²`` (the linear
MMSE estimator of ``z₂`` from ``x``). Layout is Flax's (``y = x @ W``, kernels
``(d_in, d_out)``; conv kernels ``(*window, c_in, c_out)``, channels-last data, and
*cross-correlation* as in ``lax.conv_general_dilated`` and ``nn.Conv``). The paper
writes ``W x``; transpose to compare.

**Data-driven** (the general case, what the authors' code does), for any activation:

.. math::

    W = (C_x + \lambda I)^{-1} C_{x z_2},\qquad b = E[z_2] - E[x]\,W,

from first and second moments streamed over the data (:class:`Moments`). ``λ`` is
``ridge`` times the mean variance ``tr C_x / d`` (scale-free; *ours*: the paper's
estimator is the plain inverse, which does not exist for constant pixels).

**Gaussian closed form** (Bussgang / Stein's lemma), ``x ~ N(μ, C_x)`` and ReLU:
``Cov(x, σ(z₁)) = C_x W₁ D`` with ``D = diag E[σ'(z₁)]``, so

.. math::

    W = W_1 D W_2,\quad D_{ii} = \Phi(m_i/s_i),\quad m = \mu W_1 + b_1,\quad
    s_i^2 = (W_1^\top C_x W_1)_{ii},\\
    b = E[\mathrm{relu}(z_1)]\,W_2 + b_2 - \mu W,\qquad
    E[\mathrm{relu}(z)] = m\,\Phi(m/s) + s\,\varphi(m/s),

which needs no inverse of ``C_x`` (singular ``C_x`` is fine). The achieved error is

.. math::

    \mathrm{MSE} = \operatorname{tr}\big(W_2^\top (C_a - D C_z D) W_2\big),\qquad
    C_z = W_1^\top C_x W_1,\quad C_a = \operatorname{Cov}(\mathrm{relu}(z_1)),

with the ReLU moments of correlated Gaussians (:func:`relu_moments`). For a pair
``(z_i, z_j)`` with means ``μ``, stds ``σ``, correlation ``ρ``, ``a = μ_i/σ_i``,
``b = μ_j/σ_j``, ``r = √(1-ρ²)`` (derived with Stein's lemma; checked by Monte Carlo
in the tests):

.. math::

    E[z_i^+ z_j^+] = (\rho\sigma_i\sigma_j + \mu_i\mu_j)\,\Phi_2(a, b; \rho)
      + \mu_i\sigma_j\,\varphi(b)\,\Phi\!\big(\tfrac{a-\rho b}{r}\big)
      + \mu_j\sigma_i\,\varphi(a)\,\Phi\!\big(\tfrac{b-\rho a}{r}\big)
      + \sigma_i\sigma_j\, r\,\varphi(a)\,\varphi\!\big(\tfrac{b-\rho a}{r}\big),

and on the diagonal ``E[(z⁺)²] = (μ²+σ²)Φ(a) + μσφ(a)``. The bivariate normal CDF is
``Φ₂(a,b;ρ) = Φ(a)Φ(b) + (1/2π)∫₀^{asin ρ} exp(−(a²+b²−2ab sin θ)/(2cos²θ)) dθ``
(Plackett's identity after ``r = sin θ``, which makes the integrand smooth even at
``|ρ| → 1``), by 64-point Gauss–Legendre quadrature: run in float64 against SciPy it
agrees to 1e-15 for ``|ρ| ≤ 0.999``, so in float32 only rounding remains (``|ρ|`` is clipped
to ``1 − 1e-6``).

**Convolutions** (1-D and 2-D; the convolution is never built as a matrix):

* *conv → dense* (:func:`conv_dense`): ``W = H₁ D W₂`` where ``H₁`` is the conv as a
  linear map of the flattened input; ``H₁ (D W₂)`` is computed by the conv's transpose
  (``jax.linear_transpose``) applied to the ``d_out`` columns of ``D W₂``, each shaped as
  a feature map. The result is a dense layer on ``x.reshape(n, -1)`` (row-major
  ``(*spatial, c)`` flatten, as Flax models flatten).
* *conv → conv*, closed form for **white stationary** input (independent positions,
  per-channel mean ``μ`` and channel covariance ``Σ``; :func:`conv_conv`): the fused
  kernel is the composition ``K[s₁t + u] = Σ_c k₁[u, :, c] D_c k₂[t, c, :]`` of size
  ``k₁ + s₁(k₂ − 1)``, stride ``s₁ s₂``, padding ``(p₁ˡᵒ + s₁p₂ˡᵒ, p₁ʰⁱ + s₁p₂ʰⁱ)``
  (which gives the same output size as the pair, for any input size). It is exact in
  the interior; at the borders zero-padding of ``σ(z₁)`` (pair) and of ``x`` (fused)
  differ, and the closed form ignores that.
* *conv → conv* in general (:func:`conv_conv_from_data`): least squares of each output
  position's ``z₂`` on the fused kernel's input patch (all channels, so cross-channel
  correlations are fitted), moments streamed over the data and positions.

**Joint fit, not per channel pair** (ours, a departure). The authors' code fits a conv
pair's fused kernel one (input channel ``m``, output channel ``n``) pair at a time: the
slice ``h[m→n]`` is the regression of output channel ``n`` on input channel ``m``'s
window *alone*, and the slices are then summed over ``m`` in the fused conv (with a fused
window they choose, 3 taps in their HAR code, an absolute ridge 1e-3, and one bias per
output position, as their convs have). Ours solves one
least-squares problem per output channel over the whole patch, all input channels
together, on the composed receptive field, one bias per channel. For one window, the joint fit
minimizes the MSE over *every* kernel of that window (and bias), so on the data it is fitted
to its MSE is never larger than the per-pair kernel's (ridge → 0). They coincide when the
input channels are uncorrelated (the normal equations decouple); with correlated channels
each per-pair regression also picks up its neighbours' signal and the sum counts it several
times (``tests/test_fuse.py``: per-pair MSE 5.1× the joint one with channel correlations
0.6–0.8, 1.004× with independent channels).

**Across pooling** (``pool=`` :class:`Pool`, after the activation: ``conv₁ → σ → pool →
conv₂``, as the authors' conv–pool–conv experiments). The fused conv's window, stride and
padding are those of the three sliding windows in sequence: ``w₁ + s₁(w_p − 1) +
s₁s_p(w₂ − 1)``, stride ``s₁ s_p s₂``, padding ``p₁ + s₁p_p + s₁s_p p₂``.

* :func:`conv_conv_from_data` (max or average pooling): the least-squares affine conv
  from that patch to ``z₂``. A linear MMSE fit needs no linearity of what lies between
  ``x`` and ``z₂``, so max pooling is as sound here as ReLU is (the authors' code also fuses
  across max pooling this way). Tested against a direct float64 ``numpy.linalg.lstsq``.
* :func:`conv_conv` (closed form, white stationary Gaussian input): average pooling only.
  It is linear, a channel-diagonal conv with weights ``1/|w_p|``, so by Stein's lemma the
  LMMSE kernel is still the composition ``k₁D ∘ avg ∘ k₂`` (exact in the interior, borders
  as without pooling). Max pooling is **not supported** there (``ValueError``): ``max`` of
  rectified correlated Gaussians has no closed-form cross-covariance with ``x`` that we
  know of, and Bussgang's ``D`` does not pass through it.
* Not supported: pooling between a conv and a dense layer (``conv_dense*``), and in the
  dense pair.

**Across BatchNorm.** Inference-mode BatchNorm (running statistics) is a per-channel
affine map; :func:`fold_batchnorm` folds it into the layer before it (``layer → BN →
σ``: exact) or after it (``σ → BN → layer``: exact for dense layers and unpadded convs),
and the pair is then fused as usual. BatchNorm in training mode (batch statistics) is not
an affine map of one example and is not supported; :func:`fuse_params` does not look for
BatchNorm layers: fold them first and use the pair functions.

Strides are an int or one int per spatial axis; padding is ``"VALID"``, ``"SAME"``
(as ``lax``/Flax define it: ``lo = ⌊total/2⌋``), an int, or one int or ``(lo, hi)`` pair
per axis. ``"SAME"`` needs the input's spatial size to be known (``input_size``).

**Moments in float64 without x64** (ours): JAX runs in float32 unless x64 is enabled
process-wide, and a local ``enable_x64`` does not reach an already-traced program. So
:class:`Moments` keeps every running sum as a compensated pair ``hi + lo`` (TwoSum, i.e.
Kahan–Babuška summation; about 48 significant bits in float32), and sums the data
shifted by the first batch's mean, so ``E[zzᵀ] − E[z]E[z]ᵀ`` does not cancel. Each
batch's own sum is a float32 matmul (relative error ~1e-7 of that batch); the error
then no longer grows with the number of batches. When x64 *is* enabled the pairs are
float64. :meth:`Moments.update` is pure and jittable.

**Validation.** Every array argument must be a floating array (bfloat16 and float16
included) with finite entries and the documented shape, and covariances must be
symmetric PSD; otherwise a ``ValueError``/``TypeError`` names the argument. The value
checks (finite entries, PSD, a non-empty :class:`Moments`) need concrete arrays: under
``jax.jit`` traced arrays skip them. Call the functions eagerly (they jit their own
math) to have every check.

Whole models: :func:`fuse_params` builds a shallower model's parameters from a trained
deeper model's (linen dicts, ``nnx.State``, ``nnx.Module``): layers ``i, i+1`` fused,
the others copied.

Example:
    >>> import jax, jax.numpy as jnp
    >>> k = jax.random.split(jax.random.key(0), 4)
    >>> w1, w2 = jax.random.normal(k[0], (8, 16)) / 3, jax.random.normal(k[1], (16, 4)) / 4
    >>> b1, b2 = jnp.zeros(16), jnp.zeros(4)
    >>> w, b = dense_dense(w1, b1, w2, b2, mean=jnp.zeros(8), cov=jnp.eye(8))
    >>> w.shape, b.shape
    ((8, 4), (4,))
    >>> x = jax.random.normal(k[2], (4096, 8))
    >>> wd, bd = dense_dense_from_data(w1, b1, w2, b2, x, activation="relu")
    >>> bool(jnp.abs(wd - w).max() < 0.1)
    True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from mimetic_jax import _checks, _tree

__all__ = [
    "CLOSED_FORM_ACTIVATIONS",
    "FusedConv",
    "Moments",
    "Pool",
    "conv_conv",
    "conv_conv_from_data",
    "conv_dense",
    "conv_dense_from_data",
    "dense_dense",
    "dense_dense_from_data",
    "fold_batchnorm",
    "fuse_params",
    "fusion_mse",
    "relu_moments",
]

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST
#: Activations the Gaussian closed forms support.
CLOSED_FORM_ACTIVATIONS = ("relu", "identity")
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "identity": lambda z: z,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
}
_GL_NODES = 64
_CLIP = 40.0  # |m/s| beyond this Φ is exactly 0 or 1 in float32


# --------------------------------------------------------------------------- validation


def _activation_fn(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    if callable(activation):
        return activation
    return ACTIVATIONS[_checks.choice("activation", activation, tuple(ACTIVATIONS))]


def _closed_form_activation(activation: Any) -> str:
    if activation not in CLOSED_FORM_ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {list(CLOSED_FORM_ACTIVATIONS)} for the Gaussian closed form, got "
            f"{activation!r}; use the *_from_data variant for other activations"
        )
    return activation


def _float(name: str, x: Any) -> Array:
    """``x`` as a floating array with finite entries (the values are checked only when concrete)."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a floating array, got {x!r}")
    if not _checks.is_traced(x):
        try:
            x = jnp.asarray(x)
        except TypeError as err:
            raise TypeError(f"{name} must be a floating array, got {type(x).__name__}") from err
    _checks.float_dtype(name, x.dtype)
    _checks.finite_array(name, x)
    return x


def _dense_pair(w1: Any, b1: Any, w2: Any, b2: Any) -> tuple[Array, Array, Array, Array, jnp.dtype]:
    w1, b1, w2, b2 = (_float(n, v) for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)))
    d_in, d_hid = _checks.array_shape("w1", w1, (None, None))
    _checks.array_shape("b1", b1, (d_hid,))
    _checks.array_shape("w2", w2, (d_hid, None))
    _checks.array_shape("b2", b2, (w2.shape[1],))
    return w1, b1, w2, b2, w1.dtype


def _conv_kernel(name: str, k: Any, rank: int | None = None) -> Array:
    k = _float(name, k)
    if k.ndim not in (3, 4) or (rank is not None and k.ndim != rank + 2):
        want = "3 (1-D: (w, c_in, c_out)) or 4 (2-D: (h, w, c_in, c_out))" if rank is None else str(rank + 2)
        raise ValueError(f"{name} must be a conv kernel of rank {want}, got shape {k.shape}")
    if 0 in k.shape:
        raise ValueError(f"{name} must have no empty axis, got shape {k.shape}")
    return k


def _gaussian(mean: Any, cov: Any, d: int) -> tuple[Array, Array]:
    mean = jnp.broadcast_to(_float("mean", mean).astype(jnp.float32), (d,)) if np.ndim(mean) == 0 else mean
    mean = _float("mean", mean).astype(jnp.float32)
    _checks.array_shape("mean", mean, (d,))
    cov = _float("cov", cov)
    if cov.ndim == 0:
        cov = cov * jnp.eye(d, dtype=jnp.float32)
    _checks.array_shape("cov", cov, (d, d))
    _checks.psd_matrix("cov", cov)
    return mean, cov.astype(jnp.float32)


# --------------------------------------------------------------------------- ReLU moments


def _relu_1d(m: Array, s: Array) -> tuple[Array, Array, Array]:
    """``(Φ(m/s), E[relu z], E[relu(z)²])`` for ``z ~ N(m, s²)``, ``s = 0`` included."""
    a = jnp.clip(m / jnp.maximum(s, jnp.finfo(jnp.float32).tiny), -_CLIP, _CLIP)
    cdf, pdf = ndtr(a), jnp.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    return cdf, m * cdf + s * pdf, (m * m + s * s) * cdf + m * s * pdf


def _bvn_cdf(a: Array, b: Array, rho: Array) -> Array:
    """``Φ₂(a, b; ρ)`` elementwise, by Gauss–Legendre quadrature of Plackett's identity."""
    x, w = np.polynomial.legendre.leggauss(_GL_NODES)
    top = jnp.arcsin(rho)[..., None]
    theta = top * (jnp.asarray(x, jnp.float32) + 1) / 2
    sin, cos2 = jnp.sin(theta), jnp.cos(theta) ** 2
    a_, b_ = a[..., None], b[..., None]
    f = jnp.exp(-(a_ * a_ + b_ * b_ - 2 * a_ * b_ * sin) / (2 * cos2))
    integral = (f * jnp.asarray(w, jnp.float32)).sum(-1) * top[..., 0] / 2
    return ndtr(a) * ndtr(b) + integral / (2 * math.pi)


def relu_moments(mean: Any, cov: Any) -> tuple[Array, Array]:
    """Mean and covariance of ``relu(z)`` for ``z ~ N(mean, cov)`` (formulas in the module doc).

    Args:
        mean: ``(d,)``.
        cov: ``(d, d)`` symmetric PSD (singular allowed: zero variances give ``relu(mean)``).

    Returns:
        ``(E[relu z] (d,), Cov[relu z] (d, d))`` in float32.

    ``mean`` and ``cov`` must be finite and ``cov`` symmetric PSD; under ``jax.jit`` a
    traced ``cov`` skips the PSD check and traced values the finite check (call it
    eagerly to have them).

    Example:
        >>> m, c = relu_moments(jnp.zeros(2), jnp.eye(2))
        >>> round(float(m[0]), 4), round(float(c[0, 0]), 4), bool(abs(c[0, 1]) < 1e-6)
        (0.3989, 0.3408, True)
    """
    d = np.shape(mean)[0] if np.ndim(mean) == 1 else None
    if d is None:
        raise ValueError(f"mean must have shape (d,), got shape {np.shape(mean)}")
    m, c = _relu_moments(*_gaussian(mean, cov, d))
    _no_overflow("relu_moments", m, c, inputs={"mean": mean, "cov": cov})
    return m, c


@jax.jit
def _relu_moments(mean: Array, cov: Array) -> tuple[Array, Array]:
    d = mean.shape[0]
    s = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0.0))
    _, e1, e2 = _relu_1d(mean, s)
    tiny = jnp.finfo(jnp.float32).tiny
    sf = jnp.maximum(s, tiny)
    ss = s[:, None] * s[None, :]
    rho = jnp.clip(jnp.where(ss > 0, cov / jnp.where(ss > 0, ss, 1.0), 0.0), -1 + 1e-6, 1 - 1e-6)
    a = jnp.clip(mean / sf, -_CLIP, _CLIP)
    ai, bj = a[:, None], a[None, :]
    r = jnp.sqrt(1 - rho * rho)
    pdf = jnp.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    pa, pb = pdf[:, None], pdf[None, :]
    mi, mj, si, sj = mean[:, None], mean[None, :], s[:, None], s[None, :]
    cross = (
        (rho * si * sj + mi * mj) * _bvn_cdf(ai, bj, rho)
        + mi * sj * pb * ndtr((ai - rho * bj) / r)
        + mj * si * pa * ndtr((bj - rho * ai) / r)
        + si * sj * r * pa * jnp.exp(-0.5 * ((bj - rho * ai) / r) ** 2) / math.sqrt(2 * math.pi)
    )
    second = jnp.where(jnp.eye(d, dtype=bool), jnp.diag(e2), cross)
    c = second - e1[:, None] * e1[None, :]
    return e1, (c + c.T) / 2


# --------------------------------------------------------------------------- dense → dense


def _gain_and_mean(m: Array, var: Array, activation: str) -> tuple[Array, Array]:
    """``(D = E[σ'(z)], E[σ(z)])`` for ``z ~ N(m, var)`` elementwise."""
    if activation == "identity":
        return jnp.ones_like(m), m
    cdf, e1, _ = _relu_1d(m, jnp.sqrt(jnp.maximum(var, 0.0)))
    return cdf, e1


def dense_dense(
    w1: Any, b1: Any, w2: Any, b2: Any, *, mean: Any, cov: Any, activation: str = "relu"
) -> tuple[Array, Array]:
    """Gaussian closed form ``W = W₁ D W₂``, ``b = E[σ(z₁)] W₂ + b₂ − μ W`` (module doc).

    Args:
        w1, b1: first layer, ``(d_in, d_hid)`` and ``(d_hid,)``.
        w2, b2: second layer, ``(d_hid, d_out)`` and ``(d_out,)``.
        mean: input mean, ``(d_in,)`` or a scalar.
        cov: input covariance, ``(d_in, d_in)`` PSD, or a scalar variance (``σ² I``).
        activation: ``"relu"`` (the paper) or ``"identity"`` (exact composition).

    Returns:
        ``(w (d_in, d_out), b (d_out,))`` in ``w1``'s dtype.

    Every array must be finite and ``cov`` symmetric PSD (``ValueError`` naming it); under
    ``jax.jit`` a traced ``cov`` skips the PSD check and traced arrays the finite check.
    """
    activation = _closed_form_activation(activation)
    w1, b1, w2, b2, dtype = _dense_pair(w1, b1, w2, b2)
    w, b = _dense_dense(w1, b1, w2, b2, *_gaussian(mean, cov, w1.shape[0]), activation)
    _no_overflow("dense_dense", w, b, dtype=dtype, inputs=dict(w1=w1, b1=b1, w2=w2, b2=b2, mean=mean, cov=cov))
    return w.astype(dtype), b.astype(dtype)


def _largest(value: Any) -> float | None:
    """``max |value|`` of a concrete array (``None`` for a tracer or ``None``)."""
    if value is None or _checks.is_traced(value):
        return None
    with jax.ensure_compile_time_eval():
        return float(jnp.max(jnp.abs(jnp.asarray(value, jnp.float32)))) if jnp.size(value) else 0.0


def _no_overflow(
    what: str,
    *results: Any,
    dtype: Any = jnp.float32,
    inputs: Mapping[str, Any] | None = None,
    data: str | None = None,
) -> None:
    """Raise if a concrete result of finite inputs is not finite in ``dtype`` (float32 math overflowed,
    the cast to ``dtype`` would, or a callable activation returned NaN/inf). Traced results are not checked.

    The message names the arguments to rescale: each of ``inputs`` (``{name: array}``) with its
    largest magnitude, largest first, and ``data`` (the name of streamed data that cannot be read
    twice, such as ``x``).
    """
    top = float(jnp.finfo(dtype).max)
    for r in results:
        big = _largest(r)
        if big is None:
            return
        if not big <= top:
            sizes = sorted(
                ((m, n) for n, v in (inputs or {}).items() if (m := _largest(v)) is not None),
                key=lambda mn: -mn[0],
            )
            names = [f"{n} (max |{n}| = {m:.3g})" for m, n in sizes]
            if data is not None:
                names.append(f"the data {data}")
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
            hint = "rescale " + listed if names else "rescale the inputs"
            raise ValueError(
                f"{what}: the inputs are finite but the result is not finite in {jnp.dtype(dtype)} (largest finite "
                f"value {top:.4g}): the float32 math overflowed or the activation returned NaN/inf; {hint}"
            )


@functools.partial(jax.jit, static_argnums=6)
def _dense_dense(
    w1: Array, b1: Array, w2: Array, b2: Array, mean: Array, cov: Array, activation: str
) -> tuple[Array, Array]:
    w1f, w2f = w1.astype(jnp.float32), w2.astype(jnp.float32)
    m = jnp.dot(mean, w1f, precision=HIGHEST) + b1.astype(jnp.float32)
    var = jnp.einsum("ij,ik,kj->j", w1f, cov, w1f, precision=HIGHEST)
    gain, e_act = _gain_and_mean(m, var, activation)
    w = jnp.dot(w1f * gain, w2f, precision=HIGHEST)
    return w, jnp.dot(e_act, w2f, precision=HIGHEST) + b2.astype(jnp.float32) - jnp.dot(mean, w, precision=HIGHEST)


def fusion_mse(w1: Any, b1: Any, w2: Any, b2: Any, *, mean: Any, cov: Any, activation: str = "relu") -> Array:
    """``E‖z₂ − ẑ₂‖²`` (summed over outputs) of the closed-form fusion for Gaussian input.

    ``tr(W₂ᵀ (C_a − D C_z D) W₂)``; zero for ``"identity"``. Compare pairs of layers with it
    (the smallest error is the pair to fuse); :func:`dense_dense_from_data` and the other
    data-driven fits give the same quantity for real data with ``return_mse=True``.
    Checks as :func:`dense_dense` (under ``jax.jit`` a traced ``cov`` skips the PSD check).
    """
    activation = _closed_form_activation(activation)
    w1, b1, w2, b2, _ = _dense_pair(w1, b1, w2, b2)
    mean, cov = _gaussian(mean, cov, w1.shape[0])
    if activation == "identity":
        return jnp.zeros((), jnp.float32)
    mse = _relu_mse(w1, b1, w2, b2, mean, cov)
    _no_overflow("fusion_mse", mse, inputs=dict(w1=w1, b1=b1, w2=w2, b2=b2, mean=mean, cov=cov))
    return mse


@jax.jit
def _relu_mse(w1: Array, b1: Array, w2: Array, b2: Array, mean: Array, cov: Array) -> Array:
    w1f, w2f = w1.astype(jnp.float32), w2.astype(jnp.float32)
    m = jnp.dot(mean, w1f, precision=HIGHEST) + b1.astype(jnp.float32)
    cz = jnp.einsum("ij,ik,kl->jl", w1f, cov, w1f, precision=HIGHEST)
    _, ca = _relu_moments(m, (cz + cz.T) / 2)
    gain, _ = _gain_and_mean(m, jnp.diagonal(cz), "relu")
    resid = ca - gain[:, None] * cz * gain[None, :]
    return jnp.maximum(jnp.einsum("ij,ik,kj->", w2f, resid, w2f, precision=HIGHEST), 0.0)


# --------------------------------------------------------------------------- streaming moments


def _acc_dtype() -> jnp.dtype:
    # jax.config's flags are attributes set at run time, which its Config class does not declare.
    x64 = jax.config.jax_enable_x64  # type: ignore[attr-defined]
    return jnp.dtype(jnp.float64) if x64 else jnp.dtype(jnp.float32)


def _two_sum(pair: Array, value: Array) -> Array:
    """Add ``value`` to the compensated sum ``pair = stack([hi, lo])`` (TwoSum + renormalize)."""
    hi, lo = pair[0], pair[1]
    s = hi + value
    bp = s - hi
    lo = lo + ((hi - (s - bp)) + (value - bp))
    t = s + lo
    return jnp.stack([t, lo - (t - s)])


class Moments(NamedTuple):
    """Running first and second moments of rows ``z`` (``(n, d)`` per batch), jittable.

    Every sum is a compensated pair ``[hi, lo]`` of data shifted by the first batch's mean
    (module doc: float64-grade accumulation without x64). Build with :meth:`zeros`, add
    batches with :meth:`update` (pure; jit it), read :meth:`mean_cov`.

    Example:
        >>> m = Moments.zeros(3)
        >>> m = jax.jit(Moments.update)(m, jnp.ones((5, 3)))
        >>> float(m.mean_cov()[0][0]), float(m.count.sum())
        (1.0, 5.0)
    """

    # A public field that shadows tuple.count (the method), which nothing here calls.
    count: Array  # type: ignore[assignment]  # (2,)
    shift: Array  # (d,)
    total: Array  # (2, d): sum of (z - shift)
    outer: Array  # (2, d, d): sum of (z - shift)(z - shift)ᵀ

    @classmethod
    def zeros(cls, dim: int) -> Moments:
        """Empty moments of ``dim`` features (``dim²`` entries: bounded by ``2**34``)."""
        d = _checks.size("dim", dim)
        _checks.elements("dim × dim", d * d)
        dt = _acc_dtype()
        return cls(jnp.zeros(2, dt), jnp.zeros(d, dt), jnp.zeros((2, d), dt), jnp.zeros((2, d, d), dt))

    def update(self, z: Any) -> Moments:
        """Add the rows of ``z`` ``(n, d)``: finite, real (checked when concrete; not under ``jax.jit``)."""
        if not _checks.is_traced(z):
            if z is None or isinstance(z, (str, bytes)):
                raise TypeError(f"z must be a real array of shape (n, {self.shift.shape[0]}), got {z!r}")
            try:
                z = jnp.asarray(z)
            except (TypeError, ValueError) as err:
                raise TypeError(f"z must be a real array of shape (n, {self.shift.shape[0]}), got {z!r}") from err
        _checks.array_shape("z", z, (None, self.shift.shape[0]))
        if not jnp.issubdtype(z.dtype, jnp.integer) and not jnp.issubdtype(z.dtype, jnp.floating):
            raise TypeError(f"z must be a real array, got dtype {z.dtype}")
        _checks.finite_array("z", z)
        dt = self.shift.dtype
        z = z.astype(dt)
        n = z.shape[0]
        shift = jnp.where(self.count[0] > 0, self.shift, z.mean(0) if n else self.shift)
        zc = z - shift
        return Moments(
            _two_sum(self.count, jnp.asarray(n, dt)),
            shift,
            _two_sum(self.total, zc.sum(0)),
            _two_sum(self.outer, jnp.dot(zc.T, zc, precision=HIGHEST)),
        )

    def mean_cov(self) -> tuple[Array, Array]:
        """``(mean (d,), covariance (d, d))``; the covariance divides by the count (population).

        Raises ``ValueError`` when no row was added (a mean of nothing); under ``jax.jit``
        (a traced count) that check cannot run and the result is NaN.
        """
        n = self.count[0] + self.count[1]
        if not _checks.is_traced(n) and not float(n) > 0:
            raise ValueError(
                "Moments holds no rows: add a batch z of at least one row with update(z) before mean_cov() "
                "(none was added, or only batches of 0 rows)"
            )
        mc = self.total[0] / n + self.total[1] / n
        cov = self.outer[0] / n + self.outer[1] / n - mc[:, None] * mc[None, :]
        mean, cov = self.shift + mc, (cov + cov.T) / 2
        _no_overflow("Moments.mean_cov", mean, cov, data="z (the rows added with update)")
        return mean, cov


def _batches(x: Any, batch_size: int) -> Iterable[Any]:
    if x is None or isinstance(x, (str, bytes, int, float)):
        raise TypeError(f"x must be an array (n, ...) or an iterable of such batches, got {x!r}")
    if isinstance(x, (np.ndarray, jax.Array)):
        n = x.shape[0]
        return (x[i : i + batch_size] for i in range(0, n, batch_size))
    return iter(x)


@functools.partial(jax.jit, static_argnums=0)
def _step(fn: Callable, moments: Moments, params: tuple, xb: Array) -> Moments:
    return moments.update(jnp.concatenate(fn(params, xb), axis=1))


def _stream(
    fn: Callable[[tuple, Array], tuple[Array, Array]], params: tuple, x: Any, batch_size: int, example: tuple[int, ...]
) -> tuple[Moments, int]:
    """Moments of the rows ``[features, targets]`` that ``fn(params, batch)`` makes of ``x``'s batches.

    ``fn`` is static (hashable, e.g. a frozen dataclass) so repeated calls reuse one program.
    """
    moments: Moments | None = None
    dx = 0
    for xb in _batches(x, batch_size):
        xb = _float("x", xb)
        if tuple(xb.shape[1:]) != example:
            raise ValueError(f"x batches must all have examples of shape {example}, got a batch of shape {xb.shape}")
        if moments is None:
            feats, targets = jax.eval_shape(fn, params, xb)
            dx = feats.shape[1]
            moments = Moments.zeros(dx + targets.shape[1])
        moments = _step(fn, moments, params, xb)
    if moments is None:
        raise ValueError("x must hold at least one example")
    return moments, dx


@functools.partial(jax.jit, static_argnums=1)
def _fit(moments: Moments, dx: int, ridge: float) -> tuple[Array, Array, Array]:
    """Ridge linear MMSE of the last columns on the first ``dx``: ``(w, b, mse)``."""
    mean, cov = moments.mean_cov()
    mean, cov = mean.astype(jnp.float32), cov.astype(jnp.float32)
    cxx, cxy, cyy = cov[:dx, :dx], cov[:dx, dx:], cov[dx:, dx:]
    lam = ridge * jnp.trace(cxx) / dx
    evals, evecs = jnp.linalg.eigh(cxx)
    reg = evals + lam
    floor = jnp.finfo(jnp.float32).eps * jnp.maximum(evals[-1], 0.0) * dx
    inv = jnp.where(reg > floor, 1.0 / jnp.where(reg > floor, reg, 1.0), 0.0)
    w = jnp.dot(evecs * inv, jnp.dot(evecs.T, cxy, precision=HIGHEST), precision=HIGHEST)
    b = mean[dx:] - jnp.dot(mean[:dx], w, precision=HIGHEST)
    mse = jnp.trace(cyy) - 2 * jnp.sum(w * cxy) + jnp.sum(w * jnp.dot(cxx, w, precision=HIGHEST))
    return w, b, jnp.maximum(mse, 0.0)


def dense_dense_from_data(
    w1: Any,
    b1: Any,
    w2: Any,
    b2: Any,
    x: Any,
    *,
    activation: str | Callable[[Array], Array] = "relu",
    ridge: float = 1e-5,
    batch_size: int = 4096,
    return_mse: bool = False,
):
    """Data-driven linear MMSE fusion ``W = (C_x + λI)⁻¹ C_{x z₂}``, ``b = E z₂ − E x W``.

    Every array (the layers and each batch of ``x``) must be finite; that value check runs on
    concrete arrays only: under ``jax.jit`` (traced arguments) it cannot, so call it eagerly to
    have it (the math is jitted inside either way).

    Args:
        w1, b1, w2, b2: the two layers (as :func:`dense_dense`).
        x: the first layer's inputs: an ``(n, d_in)`` array (streamed in ``batch_size``
            rows) or an iterable of ``(n_i, d_in)`` batches (never held at once).
        activation: a name in ``ACTIVATIONS`` or any callable.
        ridge: ``λ = ridge · tr(C_x)/d_in`` (0: pseudo-inverse).
        return_mse: also return the fitted fusion's mean squared error (summed over outputs).

    Returns:
        ``(w, b)`` in ``w1``'s dtype, or ``(w, b, mse)``.
    """
    w1, b1, w2, b2, dtype = _dense_pair(w1, b1, w2, b2)
    act = _activation_fn(activation)
    ridge = _nonnegative("ridge", ridge)
    batches, example = _peek(x, batch_size)
    if example != (w1.shape[0],):
        raise ValueError(
            f"x must have shape (n, {w1.shape[0]}) to match w1 {w1.shape}, got examples of shape {example}"
        )
    params = tuple(v.astype(jnp.float32) for v in (w1, b1, w2, b2))
    moments, dx = _stream(_DenseRows(act), params, batches, batch_size, example)
    w, b, mse = _fit(moments, dx, ridge)
    _no_overflow(
        "the least-squares fit", w, b, mse, inputs=dict(zip(("w1", "b1", "w2", "b2"), params, strict=True)), data="x"
    )
    out = (w.astype(dtype), b.astype(dtype))
    return out + (mse,) if return_mse else out


@dataclasses.dataclass(frozen=True)
class _DenseRows:
    act: Callable[[Array], Array]

    def __call__(self, params: tuple, xb: Array) -> tuple[Array, Array]:
        w1, b1, w2, b2 = params
        xb = xb.astype(jnp.float32)
        z1 = jnp.dot(xb, w1, precision=HIGHEST) + b1
        return xb, jnp.dot(self.act(z1), w2, precision=HIGHEST) + b2


def _nonnegative(name: str, value: Any) -> float:
    v = _checks.finite_float(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


# --------------------------------------------------------------------------- convolutions


def _ints(name: str, value: Any, n: int) -> tuple[int, ...]:
    seq: Any = (value,) * n if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        vals = tuple(seq)
    except TypeError as err:
        raise TypeError(f"{name} must be an int or {n} ints, got {value!r}") from err
    if len(vals) != n:
        raise ValueError(f"{name} must be an int or {n} ints (one per spatial axis), got {value!r}")
    return tuple(_checks.size(f"{name}[{i}]", v) for i, v in enumerate(vals))


def _pads(
    name: str, padding: Any, window: Sequence[int], strides: Sequence[int], size: Sequence[int] | None
) -> tuple[tuple[int, int], ...]:
    """Explicit ``(lo, hi)`` per spatial axis for ``"VALID"``, ``"SAME"``, ints or pairs."""
    n = len(window)
    if isinstance(padding, str):
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"{name} must be 'VALID', 'SAME', an int or (lo, hi) pairs, got {padding!r}")
        if padding == "VALID":
            return ((0, 0),) * n
        if size is None:
            raise ValueError(f"{name}='SAME' needs the input's spatial size: pass input_size")
        return tuple(jax.lax.padtype_to_pads(tuple(size), tuple(window), tuple(strides), "SAME"))
    seq: Any = (
        (int(padding),) * n if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) else padding
    )
    try:
        items = list(seq)
    except TypeError as err:
        raise TypeError(f"{name} must be 'VALID', 'SAME', an int or (lo, hi) pairs, got {padding!r}") from err
    if len(items) != n:
        raise ValueError(f"{name} must give one pad per spatial axis ({n}), got {padding!r}")
    out = []
    for p in items:
        lo, hi = (p, p) if isinstance(p, (int, np.integer)) else tuple(p)
        if int(lo) < 0 or int(hi) < 0:
            raise ValueError(f"{name} pads must be >= 0, got {padding!r}")
        if max(int(lo), int(hi)) > _checks.MAX_DIM:
            raise ValueError(f"{name} pads must be at most {_checks.MAX_DIM}, got {padding!r}")
        out.append((int(lo), int(hi)))
    return tuple(out)


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    return ("NWC", "WIO", "NWC") if rank == 1 else ("NHWC", "HWIO", "NHWC")


def _conv(x: Array, kernel: Array, strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> Array:
    """Cross-correlation, channels last, as ``nn.Conv`` (no bias)."""
    return jax.lax.conv_general_dilated(
        x, kernel, tuple(strides), tuple(pads), dimension_numbers=_dimension_numbers(kernel.ndim - 2), precision=HIGHEST
    )


def _out_size(
    size: Sequence[int], window: Sequence[int], strides: Sequence[int], pads: Sequence[tuple[int, int]]
) -> tuple[int, ...]:
    return tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(size, window, strides, pads, strict=True))


class FusedConv(NamedTuple):
    """A fused convolution: use it as ``nn.Conv(c_out, kernel.shape[:-2], strides, padding)``."""

    kernel: Array
    bias: Array
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]


class Pool(NamedTuple):
    """A pooling layer between the two fused convs: ``conv₁ → σ → pool → conv₂``.

    ``kind`` is ``"max"`` or ``"avg"``; ``window`` and ``strides`` an int or one int per
    spatial axis (no default stride: Flax's ``nn.max_pool`` defaults to 1, PyTorch's to the
    window); ``padding`` as for the convs. As ``nn.max_pool`` / ``nn.avg_pool``: max pooling
    pads with ``−inf``, average pooling with zeros and divides by the window size
    (``count_include_pad=True``). Only :func:`conv_conv_from_data` takes ``"max"``; the
    closed form :func:`conv_conv` takes ``"avg"`` (module docstring).

    Example:
        >>> Pool("max", 2, 2)
        Pool(kind='max', window=2, strides=2, padding='VALID')
    """

    kind: str
    window: Any
    strides: Any
    padding: Any = "VALID"


def _pool_spec(pool: Any, rank: int, size: tuple | None) -> tuple[str, tuple, tuple, tuple]:
    if not isinstance(pool, Pool):
        if isinstance(pool, (tuple, list)) and 3 <= len(pool) <= 4:
            pool = Pool(*pool)
        else:
            raise TypeError(f"pool must be None or a Pool(kind, window, strides, padding), got {pool!r}")
    kind = _checks.choice("pool.kind", pool.kind, ("max", "avg"))
    window = _ints("pool.window", pool.window, rank)
    strides = _ints("pool.strides", pool.strides, rank)
    pads = _pads("pool.padding", pool.padding, window, strides, size)
    if any(lo >= w or hi >= w for (lo, hi), w in zip(pads, window, strict=True)):
        raise ValueError(
            f"pool.padding must be smaller than the pool window {window} on each side (a window of "
            f"padding only has no value), got {pads}"
        )
    return kind, window, strides, pads


def _conv_pair(
    k1: Any, b1: Any, k2: Any, b2: Any, strides: Any, padding: Any, input_size: Any, pool: Any = None
) -> tuple[Array, Array, Array, Array, tuple, tuple, tuple, tuple, tuple | None, tuple | None]:
    k1 = _conv_kernel("k1", k1)
    rank = k1.ndim - 2
    k2 = _conv_kernel("k2", k2, rank)
    b1, b2 = _float("b1", b1), _float("b2", b2)
    _checks.array_shape("b1", b1, (k1.shape[-1],))
    if k2.shape[-2] != k1.shape[-1]:
        raise ValueError(f"k2 must read k1's {k1.shape[-1]} output channels, got k2 of shape {k2.shape}")
    _checks.array_shape("b2", b2, (k2.shape[-1],))
    if not isinstance(strides, (tuple, list)) or len(strides) != 2:
        raise ValueError(f"strides must be a pair (strides1, strides2), got {strides!r}")
    if not isinstance(padding, (tuple, list)) or len(padding) != 2:
        raise ValueError(f"padding must be a pair (padding1, padding2), got {padding!r}")
    s1, s2 = _ints("strides[0]", strides[0], rank), _ints("strides[1]", strides[1], rank)
    size = None if input_size is None else _ints("input_size", input_size, rank)
    p1 = _pads("padding[0]", padding[0], k1.shape[:-2], s1, size)
    size1 = None if size is None else _out_size(size, k1.shape[:-2], s1, p1)
    if size1 is not None and min(size1) < 1:
        raise ValueError(f"k1 of shape {k1.shape} does not fit the input of size {size} with padding {p1}")
    spec = None
    if pool is not None:
        spec = _pool_spec(pool, rank, size1)
        if size1 is not None:
            size1 = _out_size(size1, spec[1], spec[2], spec[3])
            if min(size1) < 1:
                raise ValueError(
                    f"pool window {spec[1]} does not fit k1's output with padding {spec[3]} (input size {size})"
                )
    p2 = _pads("padding[1]", padding[1], k2.shape[:-2], s2, size1)
    if size1 is not None and min(_out_size(size1, k2.shape[:-2], s2, p2)) < 1:
        raise ValueError(
            f"k2 of shape {k2.shape} does not fit {'k1' if spec is None else 'the pool'}'s output of "
            f"size {size1} with padding {p2} "
            f"(input size {size})"
        )
    # the fused kernel's window grows with the first stride: bound it before anything is allocated
    stages = [(k1.shape[:-2], s1, p1)] + ([] if spec is None else [spec[1:]]) + [(k2.shape[:-2], s2, p2)]
    window, _, pads = _chain(stages)
    _checks.elements(
        f"the fused kernel (window {tuple(window)} × c_in × c_out, the window from k1, k2 and strides ({s1}, {s2}))",
        math.prod(window) * k1.shape[-2] * k2.shape[-1],
    )
    for i, (w, (lo, hi)) in enumerate(zip(window, pads, strict=True)):
        if max(w, lo + hi) > _checks.MAX_DIM:
            raise ValueError(
                f"strides/padding make the fused window ({w}) or padding ({lo}, {hi}) of axis {i} larger than "
                f"{_checks.MAX_DIM}"
            )
    return k1, b1, k2, b2, s1, s2, p1, p2, size, spec


def _chain(stages: Sequence[tuple[tuple, tuple, tuple]]) -> tuple[tuple, tuple, tuple]:
    """Window, stride and padding of sliding-window stages ``(window, strides, pads)`` run in sequence.

    Stage ``b`` after ``a``: window ``w_a + s_a(w_b − 1)``, stride ``s_a s_b``, pads
    ``p_a + s_a p_b`` (lo and hi); the output size then equals the chain's for any input.
    """
    w, st, pd = stages[0]
    for wb, sb, pb in stages[1:]:
        w = tuple(a + s * (b - 1) for a, s, b in zip(w, st, wb, strict=True))
        pd = tuple((la + s * lb, ha + s * hb) for (la, ha), s, (lb, hb) in zip(pd, st, pb, strict=True))
        st = tuple(a * b for a, b in zip(st, sb, strict=True))
    return w, st, pd


def _pool(h: Array, kind: str, window: tuple, strides: tuple, pads: tuple) -> Array:
    """``nn.max_pool`` / ``nn.avg_pool`` (``count_include_pad=True``), channels last."""
    dims, st, pd = (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    if kind == "max":
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, dims, st, pd)
    return jax.lax.reduce_window(h, 0.0, jax.lax.add, dims, st, pd) / math.prod(window)


def _avg_kernel(window: tuple, c: int) -> Array:
    """Average pooling as a (channel-diagonal) conv kernel ``(*window, c, c)``."""
    return jnp.broadcast_to(jnp.eye(c, dtype=jnp.float32) / math.prod(window), (*window, c, c))


def _compose(k1: Array, k2: Array, s1: Sequence[int]) -> Array:
    """``K[s₁t + u] = Σ_c k1[u, :, c] k2[t, c, :]`` (kernels already scaled by ``D``)."""
    w1, w2 = k1.shape[:-2], k2.shape[:-2]
    size = tuple(a + s * (b - 1) for a, s, b in zip(w1, s1, w2, strict=True))
    out = jnp.zeros(size + (k1.shape[-2], k2.shape[-1]), jnp.float32)
    for t in np.ndindex(*w2):
        part = jnp.einsum("...ac,cb->...ab", k1, k2[t], precision=HIGHEST)
        out = out.at[tuple(slice(s * i, s * i + a) for s, i, a in zip(s1, t, w1, strict=True))].add(part)
    return out


def _channel_gaussian(mean: Any, cov: Any, c: int) -> tuple[Array, Array]:
    mean = _float("mean", mean).astype(jnp.float32)
    mean = jnp.broadcast_to(mean, (c,)) if mean.ndim == 0 else mean
    _checks.array_shape("mean", mean, (c,))
    cov = _float("cov", cov)
    cov = cov * jnp.eye(c, dtype=jnp.float32) if cov.ndim == 0 else cov
    _checks.array_shape("cov", cov, (c, c))
    _checks.psd_matrix("cov", cov)
    return mean, cov.astype(jnp.float32)


def conv_conv(
    k1: Any,
    b1: Any,
    k2: Any,
    b2: Any,
    *,
    mean: Any = 0.0,
    cov: Any = 1.0,
    strides: tuple[Any, Any] = (1, 1),
    padding: tuple[Any, Any] = ("VALID", "VALID"),
    input_size: Any = None,
    activation: str = "relu",
    pool: Pool | None = None,
) -> FusedConv:
    """Closed-form conv → conv fusion for white stationary Gaussian input (module doc).

    Every array must be finite and ``cov`` symmetric PSD; these value checks run on concrete
    arrays only: under ``jax.jit`` (traced arguments) they cannot, so call it eagerly to have
    them (the math is jitted inside either way).

    Args:
        k1, b1: first conv, kernel ``(*w1, c0, c1)``; k2, b2: second, ``(*w2, c1, c2)``.
        mean: per-channel input mean ``(c0,)`` or a scalar.
        cov: channel covariance ``(c0, c0)`` (positions independent) or a scalar variance.
        strides: ``(strides1, strides2)``, each an int or one per spatial axis.
        padding: ``(padding1, padding2)``, each ``"VALID"``, ``"SAME"``, an int or pairs.
        input_size: the input's spatial size; needed only for ``"SAME"``.
        activation: ``"relu"`` or ``"identity"``.
        pool: ``None`` or an average :class:`Pool` after the activation (``conv₁ → σ →
            avgpool → conv₂``): the fused kernel is the composition of ``k1 D``, the
            pooling's kernel and ``k2``, window ``w1 + s1(wp − 1) + s1 sp (w2 − 1)``, stride
            ``s1 sp s2`` (ours, exact in the interior as without pooling). Max pooling is a
            ``ValueError``: it is not linear and has no closed form here; use
            :func:`conv_conv_from_data`.

    Returns:
        :class:`FusedConv` with kernel ``(*(w1 + s1 (w2 − 1)), c0, c2)``, stride ``s1 s2``
        and explicit padding (with a pool: the composed window, stride and padding above),
        in ``k1``'s dtype.

    Example:
        >>> f = conv_conv(jnp.ones((3, 3, 1, 4)), jnp.zeros(4), jnp.ones((3, 3, 4, 2)), jnp.zeros(2),
        ...               padding=("SAME", "SAME"), input_size=(8, 8))
        >>> f.kernel.shape, f.strides, f.padding
        ((5, 5, 1, 2), (1, 1), ((2, 2), (2, 2)))
    """
    activation = _closed_form_activation(activation)
    k1, b1, k2, b2, s1, s2, p1, p2, _, spec = _conv_pair(k1, b1, k2, b2, strides, padding, input_size, pool)
    if spec is not None and spec[0] != "avg":
        raise ValueError(
            "pool.kind must be 'avg' for the closed form conv_conv: max pooling is not linear, so "
            "the fused layer has no closed form here; use conv_conv_from_data (a least-squares fit "
            f"across any pooling), got {pool!r}"
        )
    dtype = k1.dtype
    mean, cov = _channel_gaussian(mean, cov, k1.shape[-2])
    layers = dict(k1=k1, b1=b1, k2=k2, b2=b2, mean=mean, cov=cov)
    if spec is None:
        kernel, bias = _conv_conv(k1, b1, k2, b2, mean, cov, s1, activation)
        _no_overflow("conv_conv", kernel, bias, dtype=dtype, inputs=layers)
        return _fused_conv(kernel, bias, s1, s2, p1, p2, dtype)
    _, wp, sp, pp = spec
    k2_through_pool = _compose(_avg_kernel(wp, k1.shape[-1]), k2.astype(jnp.float32), sp)
    kernel, bias = _conv_conv(k1, b1, k2_through_pool, b2, mean, cov, s1, activation)
    _no_overflow("conv_conv", kernel, bias, dtype=dtype, inputs=layers)
    _, st, pd = _chain([(k1.shape[:-2], s1, p1), (wp, sp, pp), (k2.shape[:-2], s2, p2)])
    return FusedConv(kernel.astype(dtype), bias.astype(dtype), st, pd)


@functools.partial(jax.jit, static_argnums=(6, 7))
def _conv_conv(
    k1: Array, b1: Array, k2: Array, b2: Array, mean: Array, cov: Array, s1: tuple, activation: str
) -> tuple[Array, Array]:
    k1f, k2f = k1.astype(jnp.float32), k2.astype(jnp.float32)
    flat = k1f.reshape(-1, k1.shape[-2], k1.shape[-1])  # (positions, c0, c1)
    m = jnp.einsum("pac,a->c", flat, mean, precision=HIGHEST) + b1.astype(jnp.float32)
    var = jnp.einsum("pac,ab,pbc->c", flat, cov, flat, precision=HIGHEST)
    gain, e_act = _gain_and_mean(m, var, activation)
    kernel = _compose(k1f * gain, k2f, s1)
    spatial = tuple(range(k2.ndim - 2))
    bias = (
        b2.astype(jnp.float32)
        + jnp.dot(e_act, k2f.sum(spatial), precision=HIGHEST)
        - jnp.dot(mean, kernel.sum(spatial), precision=HIGHEST)
    )
    return kernel, bias


def _fused_conv(kernel: Array, bias: Array, s1: tuple, s2: tuple, p1: tuple, p2: tuple, dtype: Any) -> FusedConv:
    strides = tuple(a * b for a, b in zip(s1, s2, strict=True))
    pads = tuple((l1 + s * l2, h1 + s * h2) for (l1, h1), s, (l2, h2) in zip(p1, s1, p2, strict=True))
    return FusedConv(kernel.astype(dtype), bias.astype(dtype), strides, pads)


@dataclasses.dataclass(frozen=True)
class _ConvConvRows:
    act: Callable[[Array], Array]
    s1: tuple
    p1: tuple
    s2: tuple
    p2: tuple
    window: tuple
    strides: tuple
    padding: tuple
    pool: tuple | None = None

    def __call__(self, params: tuple, xb: Array) -> tuple[Array, Array]:
        k1, b1, k2, b2 = params
        xb = xb.astype(jnp.float32)
        h = self.act(_conv(xb, k1, self.s1, self.p1) + b1)
        if self.pool is not None:
            h = _pool(h, *self.pool)
        z2 = _conv(h, k2, self.s2, self.p2) + b2
        patches = jax.lax.conv_general_dilated_patches(
            xb,
            self.window,
            self.strides,
            self.padding,
            dimension_numbers=_dimension_numbers(k1.ndim - 2),
            precision=HIGHEST,
        )
        return patches.reshape(-1, patches.shape[-1]), z2.reshape(-1, z2.shape[-1])


def _peek(x: Any, batch_size: int) -> tuple[Iterable[Any], tuple[int, ...]]:
    """``(batches, shape of one example)`` without consuming an iterator's first batch."""
    _checks.size("batch_size", batch_size)
    it = iter(_batches(x, batch_size))
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("x must hold at least one example") from None
    return itertools.chain([first], it), tuple(np.shape(first)[1:])


def conv_conv_from_data(
    k1: Any,
    b1: Any,
    k2: Any,
    b2: Any,
    x: Any,
    *,
    strides: tuple[Any, Any] = (1, 1),
    padding: tuple[Any, Any] = ("VALID", "VALID"),
    activation: str | Callable[[Array], Array] = "relu",
    ridge: float = 1e-5,
    batch_size: int = 256,
    return_mse: bool = False,
    pool: Pool | None = None,
):
    """Least-squares conv → conv fusion over input patches (any activation, any input law).

    Each output position of the pair's ``z₂`` is regressed on the fused kernel's input
    patch (size ``w1 + s1(w2 − 1)``, stride ``s1 s2``, composed padding; all input
    channels together, so cross-channel correlations are fitted), moments streamed over
    ``x``'s batches and all positions.

    Every array (the kernels, biases and each batch of ``x``) must be finite; that value check
    runs on concrete arrays only: under ``jax.jit`` (traced arguments) it cannot, so call it
    eagerly to have it.

    Args:
        k1, b1, k2, b2, strides, padding, activation: as :func:`conv_conv`.
        x: inputs ``(n, *spatial, c0)`` (streamed in ``batch_size`` images) or an iterable
            of such batches (all of one spatial size).
        ridge: ``λ = ridge · tr(C_patch)/d_patch``.
        return_mse: also return the mean squared error per output position (summed over
            output channels).
        pool: ``None`` or a :class:`Pool` (max or average) after the activation:
            ``z₂ = conv₂(pool(σ(conv₁(x))))``. The fused conv has the composed window
            ``w1 + s1(wp − 1) + s1 sp (w2 − 1)``, stride ``s1 sp s2`` and padding
            ``p1 + s1 pp + s1 sp p2``; the fit is the least-squares affine map from that
            patch to ``z₂`` whatever lies in between, so max pooling needs no linearity.

    Returns:
        :class:`FusedConv` (and the MSE if ``return_mse``).

    Example:
        >>> k = jax.random.split(jax.random.key(0), 3)
        >>> k1, k2 = jax.random.normal(k[0], (3, 3, 1, 4)) / 3, jax.random.normal(k[1], (3, 3, 4, 2)) / 6
        >>> x = jax.random.normal(k[2], (16, 12, 12, 1))
        >>> f = conv_conv_from_data(k1, jnp.zeros(4), k2, jnp.zeros(2), x, pool=Pool("max", 2, 2))
        >>> f.kernel.shape, f.strides, f.padding
        ((8, 8, 1, 2), (2, 2), ((0, 0), (0, 0)))
    """
    act = _activation_fn(activation)
    ridge = _nonnegative("ridge", ridge)
    batches, example = _peek(x, batch_size)
    k1 = _conv_kernel("k1", k1)
    rank, c0 = k1.ndim - 2, k1.shape[-2]
    if len(example) != rank + 1 or example[-1] != c0:
        raise ValueError(
            f"x must have shape (n, *spatial[{rank}], {c0}) to match k1 {k1.shape}, got examples of shape {example}"
        )
    k1, b1, k2, b2, s1, s2, p1, p2, size, spec = _conv_pair(k1, b1, k2, b2, strides, padding, example[:-1], pool)
    assert size is not None  # input_size was given
    dtype = k1.dtype
    stages = [(k1.shape[:-2], s1, p1)] + ([] if spec is None else [spec[1:]]) + [(k2.shape[:-2], s2, p2)]
    window, fused_strides, fused_padding = _chain(stages)
    if min(_out_size(size, window, fused_strides, fused_padding)) < 1:
        raise ValueError(
            f"x's spatial size {size} is smaller than the fused window {window} with padding "
            f"{fused_padding}: there is no output position to fit"
        )
    padded = [n + lo + hi for n, (lo, hi) in zip(size, fused_padding, strict=True)]
    out_pos = math.prod(_out_size(size, window, fused_strides, fused_padding))
    _checks.elements(
        "batch_size × the padded input, batch_size × output positions × patch",
        batch_size * math.prod(padded) * c0,
        batch_size * out_pos * math.prod(window) * c0,
    )
    params = tuple(v.astype(jnp.float32) for v in (k1, b1, k2, b2))
    rows = _ConvConvRows(act, s1, p1, s2, p2, window, fused_strides, fused_padding, spec)
    moments, dx = _stream(rows, params, batches, batch_size, example)
    w, b, mse = _fit(moments, dx, ridge)
    _no_overflow(
        "the least-squares fit", w, b, mse, inputs=dict(zip(("k1", "b1", "k2", "b2"), params, strict=True)), data="x"
    )
    # conv_general_dilated_patches orders a patch's features (c0, *window)
    kernel = jnp.moveaxis(w.reshape((c0,) + window + (w.shape[-1],)), 0, -2)
    out = FusedConv(kernel.astype(dtype), b.astype(dtype), fused_strides, fused_padding)
    return (out, mse) if return_mse else out


# --------------------------------------------------------------------------- conv → dense


def _conv_dense_pair(
    k1: Any, b1: Any, w2: Any, b2: Any, input_shape: Sequence[int], strides: Any, padding: Any
) -> tuple[Array, Array, Array, Array, tuple, tuple, tuple]:
    k1 = _conv_kernel("k1", k1)
    rank = k1.ndim - 2
    shape = _ints("input_shape", input_shape, rank + 1)
    if shape[-1] != k1.shape[-2]:
        raise ValueError(f"input_shape {shape} must end in k1's {k1.shape[-2]} input channels")
    s1 = _ints("strides", strides, rank)
    p1 = _pads("padding", padding, k1.shape[:-2], s1, shape[:-1])
    out = _out_size(shape[:-1], k1.shape[:-2], s1, p1)
    if min(out) < 1:
        raise ValueError(f"k1 of shape {k1.shape} does not fit input_shape {shape} with padding {p1}")
    b1, w2, b2 = _float("b1", b1), _float("w2", w2), _float("b2", b2)
    _checks.array_shape("b1", b1, (k1.shape[-1],))
    flat = math.prod(out) * k1.shape[-1]
    if w2.ndim != 2 or w2.shape[0] != flat:
        raise ValueError(
            f"w2 must have shape ({flat}, d_out): the conv output {out + (k1.shape[-1],)} "
            f"flattened, got shape {w2.shape}"
        )
    _checks.array_shape("b2", b2, (w2.shape[1],))
    return k1, b1, w2, b2, shape, s1, p1


def conv_dense(
    k1: Any,
    b1: Any,
    w2: Any,
    b2: Any,
    *,
    input_shape: Sequence[int],
    mean: Any = 0.0,
    cov: Any = 1.0,
    strides: Any = 1,
    padding: Any = "VALID",
    activation: str = "relu",
) -> tuple[Array, Array]:
    """Closed-form conv → (flatten →) dense fusion ``W = H₁ D W₂`` for Gaussian input.

    ``H₁ (D W₂)`` is computed by the conv's transpose, never as a matrix.

    Every array must be finite and ``cov`` symmetric PSD; these value checks run on concrete
    arrays only: under ``jax.jit`` (traced arguments) they cannot, so call it eagerly to have
    them (the math is jitted inside either way).

    Args:
        k1, b1: the conv, kernel ``(*window, c0, c1)``.
        w2, b2: the dense layer on the flattened conv output, ``(prod(out) c1, d_out)``.
        input_shape: one example's shape ``(*spatial, c0)``.
        mean: input mean, broadcastable to ``input_shape`` (a scalar, ``(c0,)``, or full).
        cov: a scalar variance or a ``(c0, c0)`` channel covariance (white in space), or
            the full ``(D, D)`` covariance of the flattened input, ``D = prod(input_shape)``.
        strides, padding: of the conv (int/ints; ``"VALID"``, ``"SAME"``, int or pairs).
        activation: ``"relu"`` or ``"identity"``.

    Returns:
        ``(w (D, d_out), b (d_out,))`` of a dense layer on ``x.reshape(n, -1)``.
    """
    activation = _closed_form_activation(activation)
    k1, b1, w2, b2, shape, s1, p1 = _conv_dense_pair(k1, b1, w2, b2, input_shape, strides, padding)
    dtype, c0, full = k1.dtype, shape[-1], math.prod(shape)
    mean = _float("mean", mean).astype(jnp.float32)
    try:
        mean = jnp.broadcast_to(mean, shape)
    except ValueError as err:
        raise ValueError(f"mean must broadcast to input_shape {shape}, got shape {mean.shape}") from err
    cov = _float("cov", cov).astype(jnp.float32)
    full_cov = cov.ndim == 2 and cov.shape == (full, full) and full != c0
    if full_cov:
        _checks.psd_matrix("cov", cov)
    else:
        _, cov = _channel_gaussian(0.0, cov, c0)
    w, b = _conv_dense(k1, b1, w2, b2, mean, cov, shape, s1, p1, full_cov, activation)
    _no_overflow("conv_dense", w, b, dtype=dtype, inputs=dict(k1=k1, b1=b1, w2=w2, b2=b2, mean=mean, cov=cov))
    return w.astype(dtype), b.astype(dtype)


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10))
def _conv_dense(
    k1: Array,
    b1: Array,
    w2: Array,
    b2: Array,
    mean: Array,
    cov: Array,
    shape: tuple,
    s1: tuple,
    p1: tuple,
    full_cov: bool,
    activation: str,
) -> tuple[Array, Array]:
    k1f, full = k1.astype(jnp.float32), math.prod(shape)
    conv = lambda x: _conv(x, k1f, s1, p1)
    m = conv(mean[None])[0] + b1.astype(jnp.float32)
    if full_cov:
        evals, evecs = jnp.linalg.eigh((cov + cov.T) / 2)
        root = evecs * jnp.sqrt(jnp.maximum(evals, 0.0))  # cov = root rootᵀ
        var = jnp.sum(conv(root.T.reshape((full,) + shape)) ** 2, axis=0)
    else:
        q = jnp.einsum("...ac,ab,...bc->...c", k1f, cov, k1f, precision=HIGHEST)[..., None, :]
        var = _conv(jnp.ones((1,) + shape[:-1] + (1,), jnp.float32), q, s1, p1)[0]
    gain, e_act = _gain_and_mean(m, var, activation)
    w2f = w2.astype(jnp.float32)
    cot = (gain.reshape(-1, 1) * w2f).T.reshape((w2.shape[1],) + m.shape)
    (w_t,) = jax.linear_transpose(conv, jax.ShapeDtypeStruct((w2.shape[1],) + shape, jnp.float32))(cot)
    w = w_t.reshape(w2.shape[1], full).T
    b = (
        jnp.dot(e_act.reshape(-1), w2f, precision=HIGHEST)
        + b2.astype(jnp.float32)
        - jnp.dot(mean.reshape(-1), w, precision=HIGHEST)
    )
    return w, b


def conv_dense_from_data(
    k1: Any,
    b1: Any,
    w2: Any,
    b2: Any,
    x: Any,
    *,
    strides: Any = 1,
    padding: Any = "VALID",
    activation: str | Callable[[Array], Array] = "relu",
    ridge: float = 1e-5,
    batch_size: int = 1024,
    return_mse: bool = False,
):
    """Data-driven conv → (flatten →) dense fusion: linear MMSE of ``z₂`` on ``x.reshape(n, -1)``.

    Args as :func:`conv_dense` and :func:`dense_dense_from_data`; ``x`` is ``(n, *spatial, c0)``
    or an iterable of such batches. Every array must be finite; that value check runs on
    concrete arrays only: under ``jax.jit`` (traced arguments) it cannot, so call it eagerly.
    """
    act = _activation_fn(activation)
    ridge = _nonnegative("ridge", ridge)
    batches, example = _peek(x, batch_size)
    k1, b1, w2, b2, shape, s1, p1 = _conv_dense_pair(k1, b1, w2, b2, example, strides, padding)
    dtype = k1.dtype
    params = tuple(v.astype(jnp.float32) for v in (k1, b1, w2, b2))
    moments, dx = _stream(_ConvDenseRows(act, s1, p1), params, batches, batch_size, shape)
    w, b, mse = _fit(moments, dx, ridge)
    _no_overflow(
        "the least-squares fit", w, b, mse, inputs=dict(zip(("k1", "b1", "w2", "b2"), params, strict=True)), data="x"
    )
    out = (w.astype(dtype), b.astype(dtype))
    return out + (mse,) if return_mse else out


@dataclasses.dataclass(frozen=True)
class _ConvDenseRows:
    act: Callable[[Array], Array]
    s1: tuple
    p1: tuple

    def __call__(self, params: tuple, xb: Array) -> tuple[Array, Array]:
        k1, b1, w2, b2 = params
        xb = xb.astype(jnp.float32)
        a = self.act(_conv(xb, k1, self.s1, self.p1) + b1).reshape(xb.shape[0], -1)
        return xb.reshape(xb.shape[0], -1), jnp.dot(a, w2, precision=HIGHEST) + b2


# --------------------------------------------------------------------------- BatchNorm


def fold_batchnorm(
    kernel: Any,
    bias: Any,
    *,
    mean: Any,
    var: Any,
    scale: Any = None,
    offset: Any = None,
    epsilon: float = 1e-5,
    side: str = "output",
) -> tuple[Array, Array]:
    """Fold an inference-mode BatchNorm into a dense or conv layer (exact), before fusing.

    Inference-mode BatchNorm (running statistics, as ``nn.BatchNorm(use_running_average=True)``)
    is the per-channel affine map ``BN(h) = γ (h − μ)/√(σ² + ε) + β = h·g + (β − μ g)``,
    ``g = γ/√(σ² + ε)``, so it folds into a neighbouring layer:

    * ``side="output"`` — BN on the layer's output (``layer → BN → σ``, the usual place):
      ``K' = K·g`` (each output channel), ``b' = (b − μ) g + β``. Exact for dense and conv
      layers, any padding.
    * ``side="input"`` — BN on the layer's input (``σ → BN → layer``):
      ``K'[…, i, :] = g_i K[…, i, :]``, ``b' = b + Σ_{window, i} (β − μ g)_i K[…, i, :]``.
      Exact for dense layers and unpadded (``"VALID"``) convs; a zero-padded conv pads the
      BN output with zeros where the folded layer pads its input, so the two differ at the
      border positions.

    With the BatchNorm folded, the pair is an ordinary layer pair: fuse it with
    :func:`dense_dense`, :func:`conv_conv_from_data` … (BN in training mode normalizes by
    the batch's statistics: not an affine map of one example, not foldable).

    Every array must be finite and ``var + epsilon > 0``; on traced arrays (under ``jax.jit``)
    these value checks cannot run: call it eagerly to have them.

    Args:
        kernel: ``(d_in, d_out)`` or a conv kernel ``(*window, c_in, c_out)``.
        bias: ``(d_out,)``/``(c_out,)``, or ``None`` (a layer with ``use_bias=False``).
        mean, var: BN's running statistics (Flax ``batch_stats``' ``mean``, ``var``), one per
            channel the BN normalizes (``c_out`` for ``"output"``, ``c_in`` for ``"input"``).
        scale, offset: BN's ``γ`` and ``β`` (Flax ``params``' ``scale``, ``bias``); ``None``
            for ``use_scale=False`` / ``use_bias=False``.
        epsilon: BN's ``ε`` (Flax's default 1e-5); ``var + ε`` must be ``> 0``.
        side: ``"output"`` or ``"input"``.

    Returns:
        ``(kernel, bias)`` in ``kernel``'s dtype (computed in float32 or wider).

    Example:
        >>> import flax.linen as nn
        >>> k = jax.random.split(jax.random.key(0), 3)
        >>> kernel, x = jax.random.normal(k[0], (3, 3, 2, 4)), jax.random.normal(k[1], (2, 8, 8, 2))
        >>> stats = {"mean": jnp.arange(4.0), "var": jnp.ones(4) * 2}
        >>> bn = nn.BatchNorm(use_running_average=True)
        >>> conv = nn.Conv(4, (3, 3), use_bias=False)
        >>> y = bn.apply({"params": {"scale": jnp.full(4, 0.5), "bias": jnp.ones(4)}, "batch_stats": stats},
        ...              conv.apply({"params": {"kernel": kernel}}, x))
        >>> kf, bf = fold_batchnorm(kernel, None, scale=jnp.full(4, 0.5), offset=jnp.ones(4), **stats)
        >>> y2 = nn.Conv(4, (3, 3)).apply({"params": {"kernel": kf, "bias": bf}}, x)
        >>> bool(jnp.allclose(y, y2, atol=1e-5))
        True
    """
    side = _checks.choice("side", side, ("output", "input"))
    kernel = _float("kernel", kernel)
    if kernel.ndim not in (2, 3, 4):
        raise ValueError(
            f"kernel must be a dense (d_in, d_out) or conv (*window, c_in, c_out) kernel, got shape {kernel.shape}"
        )
    if 0 in kernel.shape:
        raise ValueError(f"kernel must have no empty axis, got shape {kernel.shape}")
    c_in, c_out = kernel.shape[-2:]
    c = c_out if side == "output" else c_in
    eps = _nonnegative("epsilon", epsilon)
    dtype, ct = kernel.dtype, _checks.compute_dtype(kernel.dtype)

    def channel(name: str, v: Any, default: float) -> Array:
        if v is None:
            return jnp.full((c,), default, ct)
        v = _float(name, v)
        _checks.array_shape(name, v, (c,))
        return v.astype(ct)

    if bias is None:
        b = jnp.zeros((c_out,), ct)
    else:
        b = _float("bias", bias)
        _checks.array_shape("bias", b, (c_out,))
        b = b.astype(ct)
    mu, v = channel("mean", mean, 0.0), channel("var", var, 1.0)
    gamma, beta = channel("scale", scale, 1.0), channel("offset", offset, 0.0)
    if not _checks.is_traced(v) and not bool(jnp.all(v + eps > 0)):
        raise ValueError(
            f"var + epsilon must be > 0 in every channel, got var min {float(jnp.min(v))} and epsilon {eps}"
        )
    g = gamma * jax.lax.rsqrt(v + eps)
    k = kernel.astype(ct)
    if side == "output":
        return (k * g).astype(dtype), ((b - mu) * g + beta).astype(dtype)
    shift = beta - mu * g
    k_sum = k.reshape(-1, c_in, c_out).sum(0)
    new_b = b + jnp.dot(shift, k_sum, precision=HIGHEST)
    return (k * g[:, None]).astype(dtype), new_b.astype(dtype)


# --------------------------------------------------------------------------- whole models


def _layer_prefixes(flat: dict, name: str) -> list[tuple]:
    """Prefixes of the paths ending in ``kernel``, in the tree's order."""
    out = [path[:-1] for path in flat if path and path[-1] == "kernel"]
    if not out:
        raise ValueError(f"{name} has no layer with a 'kernel' parameter")
    return out


def _resolve_layers(flat: dict, layers: Sequence[Any] | None, name: str) -> list[tuple]:
    found = _layer_prefixes(flat, name)
    if layers is None:
        return found
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"{name}_layers must be None or a sequence of layer paths, got {layers!r}")
    out = []
    for layer in layers:
        prefix = tuple(layer.split("/")) if isinstance(layer, str) else tuple(layer)
        match = [
            p
            for p in found
            if p == prefix
            or _tree.path_name(p) == _tree.path_name(prefix)
            or (len(p) > len(prefix) and _tree.path_name(p[-len(prefix) :]) == _tree.path_name(prefix))
        ]
        if len(match) != 1:
            raise ValueError(
                f"{name} layer {layer!r} must name exactly one layer with a kernel; layers are "
                f"{[_tree.path_name(p) for p in found]}"
            )
        out.append(match[0])
    return out


def _sub(flat: dict, prefix: tuple) -> dict:
    return {path[len(prefix) :]: v for path, v in flat.items() if path[: len(prefix)] == prefix}


def fuse_params(
    deep: Any,
    shallow: Any,
    index: int,
    *,
    inputs: Any = None,
    mean: Any = None,
    cov: Any = None,
    deep_layers: Sequence[Any] | None = None,
    shallow_layers: Sequence[Any] | None = None,
    activation: str | Callable[[Array], Array] = "relu",
    ridge: float = 1e-5,
    strides: tuple[Any, Any] = (1, 1),
    padding: tuple[Any, Any] = ("VALID", "VALID"),
    input_shape: Sequence[int] | None = None,
    batch_size: int = 256,
    pool: Pool | None = None,
) -> Any:
    """A shallower model's parameters from a trained deeper model's: layers ``index, index+1`` fused.

    Deep layers ``L₀ … L_{n−1}`` map to shallow layers ``S₀ … S_{n−2}``: ``S_j = L_j`` for
    ``j < index``, ``S_index = fuse(L_index, L_{index+1})``, ``S_j = L_{j+1}`` after. A layer is
    any sub-tree holding a ``kernel`` (and usually a ``bias``); copied layers are copied
    whole. Other parameters (not under a layer) are copied from ``deep`` where the same
    path with the same shape exists, else keep ``shallow``'s values.

    The pair's kind comes from the kernels' ranks: dense→dense (2, 2), conv→dense (3 or
    4, 2: a flatten between them), conv→conv (3, 3 or 4, 4). The fused layer must have
    the shape the shallow model expects (checked): for conv→conv, build the shallow conv
    with :class:`FusedConv`'s kernel size, strides and padding.

    The arrays taken from the trees, ``inputs``, ``mean`` and ``cov`` are checked as by the
    fusion function used (finite; ``cov`` PSD): on concrete arrays only, not under ``jax.jit``.

    Args:
        deep: the trained deeper model: linen params dict, ``nnx.State`` or ``nnx.Module``.
        shallow: the shallower model, same kinds; gives the structure (and values for
            parameters that ``deep`` lacks). Returned updated: a new dict/State, or the
            Module updated in place.
        index: position of the first fused layer in ``deep_layers``.
        inputs: the inputs of deep layer ``index`` (an array or an iterable of batches):
            data-driven fusion. Otherwise ``mean`` and ``cov`` describe Gaussian inputs
            (closed form; see :func:`dense_dense`, :func:`conv_dense`, :func:`conv_conv`).
        deep_layers, shallow_layers: the layers in order, as paths (``"Dense_1"``,
            ``("layers", 0)``) or suffixes of paths; default: every sub-tree with a
            ``kernel``, in the tree's order (linen: definition order).
        activation, ridge: as in the fusion functions.
        strides, padding: of the two fused layers when they are convs.
        input_shape: one example's shape at deep layer ``index`` (conv→dense closed form).
        batch_size: streaming batch size for ``inputs`` arrays.
        pool: a :class:`Pool` between the two convs (conv→conv pairs only): as in
            :func:`conv_conv_from_data` (max or average) and :func:`conv_conv` (average).
            A BatchNorm between the two layers is not handled here: fold it into its layer
            with :func:`fold_batchnorm` and call the pair functions.

    Returns:
        ``shallow``'s parameters in ``shallow``'s container.
    """
    flat = {}
    for name, tree in (("deep", deep), ("shallow", shallow)):
        try:
            flat[name] = _tree.flatten(tree)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name}: {err}") from None
    flat_d, flat_s = flat["deep"], flat["shallow"]
    for path, value in flat_s.items():
        if path[-1] in ("kernel", "bias"):
            _checks.float_dtype(f"shallow {_tree.path_name(path)} dtype", jnp.result_type(value))
    ld = _resolve_layers(flat_d, deep_layers, "deep")
    ls = _resolve_layers(flat_s, shallow_layers, "shallow")
    if len(ls) != len(ld) - 1:
        raise ValueError(f"shallow must have one layer fewer than deep, got {len(ls)} and {len(ld)} layers")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int layer position, got {index!r} of type {type(index).__name__}")
    index = int(index)
    if not 0 <= index < len(ld) - 1:
        raise ValueError(f"index must lie in [0, {len(ld) - 2}] (deep has {len(ld)} layers), got {index}")
    if (inputs is None) == (mean is None or cov is None):
        raise ValueError("pass either inputs (data-driven fusion) or both mean and cov (Gaussian closed form)")
    first, second = _sub(flat_d, ld[index]), _sub(flat_d, ld[index + 1])
    kernel, bias = _fuse_pair(
        first, second, inputs, mean, cov, activation, ridge, strides, padding, input_shape, batch_size, pool
    )
    new = dict(flat_s)
    in_layer = {p for prefix in ls for p in flat_s if p[: len(prefix)] == prefix}
    for path, value in flat_s.items():
        if path not in in_layer and path in flat_d and np.shape(flat_d[path]) == np.shape(value):
            new[path] = flat_d[path]
    for j, prefix in enumerate(ls):
        if j == index:
            src = {("kernel",): kernel, ("bias",): bias}
        else:
            src = _sub(flat_d, ld[j if j < index else j + 1])
        dst = _sub(flat_s, prefix)
        if set(src) != set(dst):
            raise ValueError(
                f"shallow layer {_tree.path_name(prefix)} has parameters "
                f"{sorted(map(_tree.path_name, dst))}, its source has {sorted(map(_tree.path_name, src))}"
            )
        for rel, value in src.items():
            if np.shape(value) != np.shape(dst[rel]):
                raise ValueError(
                    f"shallow {_tree.path_name(prefix + rel)} has shape {np.shape(dst[rel])}, "
                    f"the {'fused' if j == index else 'copied'} value has shape {np.shape(value)}"
                )
            new[prefix + rel] = jnp.asarray(value, dtype=jnp.asarray(dst[rel]).dtype)
    return _tree.rebuild(shallow, new)


def _fuse_pair(
    first: dict,
    second: dict,
    inputs: Any,
    mean: Any,
    cov: Any,
    activation: Any,
    ridge: float,
    strides: Any,
    padding: Any,
    input_shape: Any,
    batch_size: int,
    pool: Any,
) -> tuple[Array, Array]:
    k1, k2 = first[("kernel",)], second[("kernel",)]
    b1 = first.get(("bias",), jnp.zeros(np.shape(k1)[-1], jnp.asarray(k1).dtype))
    b2 = second.get(("bias",), jnp.zeros(np.shape(k2)[-1], jnp.asarray(k2).dtype))
    r1, r2 = np.ndim(k1), np.ndim(k2)
    data = inputs is not None
    if pool is not None and not (r1 in (3, 4) and r2 == r1):
        raise ValueError(f"pool is supported between two convs only, got kernels of ranks {r1} and {r2}")
    if r1 == 2 and r2 == 2:
        if data:  # return_mse=False: the pair alone
            return cast(
                "tuple[Array, Array]",
                dense_dense_from_data(
                    k1, b1, k2, b2, inputs, activation=activation, ridge=ridge, batch_size=batch_size
                ),
            )
        return dense_dense(k1, b1, k2, b2, mean=mean, cov=cov, activation=activation)
    if r1 in (3, 4) and r2 == 2:
        s, p = strides[0], padding[0]
        if data:  # return_mse=False: the pair alone
            return cast(
                "tuple[Array, Array]",
                conv_dense_from_data(
                    k1,
                    b1,
                    k2,
                    b2,
                    inputs,
                    strides=s,
                    padding=p,
                    activation=activation,
                    ridge=ridge,
                    batch_size=batch_size,
                ),
            )
        if input_shape is None:
            raise ValueError("conv→dense closed form needs input_shape (one example's shape)")
        return conv_dense(
            k1, b1, k2, b2, input_shape=input_shape, mean=mean, cov=cov, strides=s, padding=p, activation=activation
        )
    if r1 in (3, 4) and r2 == r1:
        if data:  # return_mse=False: the FusedConv alone
            fused = cast(
                FusedConv,
                conv_conv_from_data(
                    k1,
                    b1,
                    k2,
                    b2,
                    inputs,
                    strides=strides,
                    padding=padding,
                    activation=activation,
                    ridge=ridge,
                    batch_size=batch_size,
                    pool=pool,
                ),
            )
        else:
            size = None if input_shape is None else tuple(input_shape)[:-1]
            fused = conv_conv(
                k1,
                b1,
                k2,
                b2,
                mean=mean,
                cov=cov,
                strides=strides,
                padding=padding,
                input_size=size,
                activation=activation,
                pool=pool,
            )
        return fused.kernel, fused.bias
    raise ValueError(
        f"cannot fuse kernels of ranks {r1} and {r2}: supported pairs are dense→dense (2, 2), "
        "conv→dense (3|4, 2) and conv→conv (3, 3) / (4, 4)"
    )
