r"""Covariance-structured depthwise convolution filters (Trockman, Willmott & Kolter, ICLR 2023).

Reference: A. Trockman, D. Willmott and J. Z. Kolter, "Understanding the Covariance
Structure of Convolutional Filters", ICLR 2023, arXiv:2210.03651.

The depthwise filters of trained ConvMixers and ConvNeXts have a structured covariance:
neighbouring taps of a filter are correlated, more so in deeper layers. Drawing each
``k×k`` filter iid from ``N(0, Σ_ℓ)`` with a handcrafted ``Σ_ℓ`` speeds up training,
even with the filters frozen, and covariances measured on small trained nets transfer
to larger ones. Only depthwise layers change.

**Our reconstruction** (the paper's exact construction is not available to us):

.. math::

    Σ_ℓ[(i,j),(i',j')] = s^2 \exp\!\Big(-\frac{(i-i')^2 + (j-j')^2}{2σ_ℓ^2}\Big)
                       = s^2\,(G_{σ_ℓ} ⊗ G_{σ_ℓ}),\qquad
    σ_ℓ = σ_{start} + (σ_{end} - σ_{start})\,\frac{ℓ}{L-1},

with ``s²`` the per-weight variance of Flax's default kernel init (``lecun_normal``:
``1/(kh·kw)`` for a depthwise kernel) unless set. The displacement function
``exp(-|Δ|²/(2σ²))`` is pluggable (:func:`gaussian`). Filters are flattened row-major:
tap ``(i, j)`` of a ``kh×kw`` filter is entry ``i·kw + j``.

**Sampling without Cholesky**: a float32 Cholesky of ``G_σ ⊗ G_σ`` fails for
``k ≥ 7, σ ≥ 2`` (eigenvalues below float32 precision). For the Gaussian closed form each
filter is ``s·A_h E A_wᵀ`` with ``A = G_σ^{1/2}`` (float64 ``eigh``, negative
rounding-level eigenvalues clamped to zero) and ``E`` a standard normal ``kh×kw`` matrix
(Trockman, Willmott & Kolter 2023), which has exactly the covariance above; it is computed as ``R z`` with
``R = s·(A_h ⊗ A_w)``. Any other covariance (a pluggable displacement, a transferred ``Σ``)
is sampled as ``W = R z`` with ``R`` the symmetric PSD square root of ``Σ`` and ``z``
standard normal, one column per channel. ``R`` depends only on static values (kernel size,
``σ``, a concrete covariance), so it is computed once in NumPy when the initializer is
traced: the traced work is one normal draw and one ``K×K`` by ``K×C`` product.

**Transfer**: :func:`filter_covariance` estimates ``Σ`` from a trained kernel;
:func:`resize_covariance` maps it to another kernel size (ours: the covariance of the
filters resized by aligned-corner linear interpolation, ``M Σ Mᵀ``, so it stays
symmetric PSD); :func:`transfer_covariances` maps layers by relative depth.
:func:`freeze_mask` builds the optax mask that keeps the filters frozen.

Whole-model transform
---------------------

:func:`find_depthwise_convs` / :func:`mimetic_conv` walk a linen params dict, an
``nnx.State``, an NNX module or an Equinox module and find the depthwise conv kernels:
``(kh, kw, 1, C)`` or ``(k, 1, C)`` (``nn.Conv(feature_group_count=C)``; Equinox/PyTorch
order ``(C, 1, kh, kw)`` for leaves named ``weight``) whose path matches ``include``
(default :data:`DEPTHWISE_NAMES`). Linen parameters do not record
``feature_group_count``: a plain conv on a 1-channel input (a stem on grayscale images)
has the same kernel shape, hence the name pattern; modules that declare their group count
(Equinox ``groups``, NNX ``feature_group_count``) are decided by it. ``include=None``
matches by shape alone. Layers are ordered by path with numbers compared as numbers
(``block_2`` before ``block_10``); that order is the depth ``ℓ``.
:func:`filter_covariances` reads the empirical covariance of each depthwise layer of a
(trained) model, in layer order, ready for :func:`transfer_covariances`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import _checks
from mimetic_jax._kernels import KernelSite, find_kernels, nothing_found
from mimetic_jax._sharding import constrain, target_of
from mimetic_jax._tree import flatten, put_like, rebuild

Array = jax.Array
Initializer = Callable[..., Array]

__all__ = [
    "DEFAULT_SIGMA_END",
    "DEFAULT_SIGMA_START",
    "DEPTHWISE_NAMES",
    "conv_filter_covariance",
    "default_variance",
    "depthwise_conv_init",
    "filter_covariance",
    "filter_covariances",
    "find_depthwise_convs",
    "freeze_mask",
    "gaussian",
    "layer_sigma",
    "mimetic_conv",
    "resize_covariance",
    "transfer_covariances",
]
Displacement = Callable[[np.ndarray, float], np.ndarray]

#: Relative tolerance on eigenvalues and asymmetry when a covariance is checked.
PSD_TOLERANCE = 1e-5


def gaussian(delta: np.ndarray, sigma: float) -> np.ndarray:
    """The default displacement function ``exp(-|Δ|² / (2σ²))`` of tap offsets ``Δ (..., ndim)``."""
    with np.errstate(over="ignore"):  # a tiny σ: far taps give -inf, exp(-inf) = 0 (the σ → 0 limit)
        return np.exp(-np.sum(np.square(delta), axis=-1) / (2.0 * sigma**2))


def _kernel_dims(kernel_size: Any, name: str = "kernel_size") -> tuple[int, ...]:
    """``k`` (square 2-D ``k×k``), ``(k,)`` (1-D) or ``(kh, kw)`` (2-D) as a tuple of positive ints.

    The ``K×K`` covariance (``K = kh·kw`` taps) must fit :data:`_checks.MAX_ELEMENTS`.
    """
    dims: tuple[int, ...]
    if isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool):
        dims = (_checks.size(name, kernel_size),) * 2
    else:
        seq: Any = kernel_size  # a sequence, or a TypeError below (a bool included)
        try:
            raw = tuple(seq)
        except TypeError as err:
            raise TypeError(f"{name} must be an int or a tuple of 1 or 2 ints, got {kernel_size!r}") from err
        if len(raw) not in (1, 2):
            raise ValueError(f"{name} must have 1 or 2 entries (1-D or 2-D filters), got {raw}")
        dims = tuple(_checks.size(f"{name}[{i}]", d) for i, d in enumerate(raw))
    taps = math.prod(dims)
    _checks.elements(f"the {taps}×{taps} covariance of {name} {dims}", taps * taps)
    return dims


def _positive_float(name: str, value: Any) -> float:
    value = _checks.finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


#: ``σ`` range: ``2σ²`` must be a finite, nonzero (normal) float64, or the Gaussian is NaN.
SIGMA_RANGE = (math.sqrt(sys.float_info.min / 2) * (1 + 1e-12), math.sqrt(sys.float_info.max / 2) * (1 - 1e-12))
#: ``scale`` range: a positive normal float32 (the filters are drawn in float32).
SCALE_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def _sigma(name: str, value: Any) -> float:
    return _checks.real_range(name, _positive_float(name, value), *SIGMA_RANGE)


def _scale(name: str, value: Any) -> float:
    return _checks.real_range(name, _positive_float(name, value), *SCALE_RANGE)


def _offsets(dims: tuple[int, ...]) -> np.ndarray:
    """Pairwise tap offsets ``(K, K, ndim)`` of a filter of size ``dims`` (row-major taps)."""
    grid = np.stack(np.meshgrid(*[np.arange(d, dtype=np.float64) for d in dims], indexing="ij"), -1)
    taps = grid.reshape(-1, len(dims))
    return taps[:, None, :] - taps[None, :, :]


def _closed_form(dims: tuple[int, ...], sigma: float, scale: float, displacement: Displacement) -> np.ndarray:
    offsets = _offsets(dims)
    try:
        raw = displacement(offsets, sigma)
    except Exception as err:
        # The user's own exception, unchanged (as jax.jit or jax.tree.map pass a user function's
        # exception through), with a note naming the argument (PEP 678; Python >= 3.11 shows it).
        add_note = getattr(err, "add_note", None)  # Python >= 3.11
        if add_note is not None:
            add_note(
                f"raised by displacement={displacement!r}, called as displacement(delta, sigma) with "
                f"delta of shape {offsets.shape} and sigma={sigma:g}"
            )
        raise
    try:
        cov = scale**2 * np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"displacement must return a real (K, K) array, got {type(raw).__name__} ({err})") from err
    k = math.prod(dims)
    if cov.shape != (k, k):
        raise ValueError(f"displacement must map offsets (K, K, ndim) to (K, K) = {(k, k)}, got shape {cov.shape}")
    return cov


def _check_psd(name: str, cov: np.ndarray) -> np.ndarray:
    """Raise unless ``cov`` is a finite, symmetric, positive semi-definite square matrix."""
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise ValueError(f"{name} has non-finite entries")
    size = max(float(np.abs(cov).max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(cov - cov.T).max())
    if asym > PSD_TOLERANCE * size:
        raise ValueError(f"{name} must be symmetric, got max |Σ - Σᵀ| = {asym:.3g} (max |Σ| = {size:.3g})")
    low = float(np.linalg.eigvalsh((cov + cov.T) / 2).min())
    if low < -PSD_TOLERANCE * size:
        raise ValueError(f"{name} must be positive semi-definite, got smallest eigenvalue {low:.3g}")
    return (cov + cov.T) / 2


def conv_filter_covariance(
    kernel_size: int | Sequence[int],
    sigma: float,
    *,
    scale: float = 1.0,
    displacement: Displacement = gaussian,
) -> Array:
    r"""The ``K×K`` filter covariance of our reconstruction (module docstring), ``k×k`` (``K = k²``) or 1-D.

    ``kernel_size``: an int ``k`` (square ``k×k`` filters), ``(kh, kw)``, or ``(k,)`` for 1-D.

    ``Σ[(i,j),(i',j')] = scale² · displacement(Δ, σ)`` with ``Δ = (i-i', j-j')``;
    the default :func:`gaussian` gives ``scale²·(G_σ ⊗ G_σ)``. Our reconstruction of
    Trockman, Willmott & Kolter (ICLR 2023), see the module docstring. Computed in
    float64 NumPy, returned as a float32 array. ``displacement(delta, sigma)`` takes
    offsets ``(K, K, ndim)`` and returns ``(K, K)``; the result must be symmetric PSD. An
    exception raised by ``displacement`` itself propagates unchanged (catch it as your own
    type), with a note (PEP 678, shown on Python ≥ 3.11) naming ``displacement``.

    ``sigma`` must lie in :data:`SIGMA_RANGE` (``2σ²`` a finite nonzero float64) and
    ``scale²`` must be a normal float32; otherwise a ``ValueError`` names the argument.

    Example:
      >>> cov = conv_filter_covariance(3, sigma=1.0)
      >>> cov.shape, float(cov[0, 0]), round(float(cov[0, 1]), 4)
      ((9, 9), 1.0, 0.6065)
    """
    dims = _kernel_dims(kernel_size)
    sigma = _sigma("sigma", sigma)
    scale = _positive_float("scale", scale)
    if not SCALE_RANGE[0] <= scale * scale <= SCALE_RANGE[1]:
        raise ValueError(
            f"scale² must be a positive normal float32 (the covariance is float32), i.e. scale in "
            f"[{math.sqrt(SCALE_RANGE[0]):.3g}, {math.sqrt(SCALE_RANGE[1]):.3g}], got scale={scale:g}"
        )
    if not callable(displacement):
        raise TypeError(f"displacement must be a function (delta, sigma) -> (K, K) array, got {displacement!r}")
    cov = _check_psd("the displacement covariance", _closed_form(dims, sigma, scale, displacement))
    return jnp.asarray(cov, jnp.float32)


def layer_sigma(layer: int, num_layers: int, sigma_start: float, sigma_end: float) -> float:
    """``σ_ℓ``: linear from ``sigma_start`` (first layer) to ``sigma_end`` (last layer)."""
    num_layers = _checks.size("num_layers", num_layers)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < num_layers:
        raise ValueError(f"layer must be an int in [0, num_layers={num_layers}), got {layer!r}")
    start = _sigma("sigma_start", sigma_start)
    end = _sigma("sigma_end", sigma_end)
    return start if num_layers == 1 else start + (end - start) * int(layer) / (num_layers - 1)


def _psd_root(cov: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root (float64 ``eigh``, negative eigenvalues clamped to 0)."""
    vals, vecs = np.linalg.eigh(cov)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def _depthwise_dims(name: str, shape: Any) -> tuple[tuple[int, ...], int]:
    """``((kh, kw) or (k,), C)`` of a depthwise kernel shape ``(kh, kw, 1, C)`` / ``(k, 1, C)``."""
    dims = _checks.shape_of(name, shape, (3, 4))
    if dims[-2] != 1:
        raise ValueError(
            f"{name} {dims} is not a depthwise kernel: expected (kh, kw, 1, C) or (k, 1, C) "
            f"(nn.Conv with feature_group_count equal to the channels), got {dims[-2]} input features per group"
        )
    return dims[:-2], dims[-1]


def default_variance(kernel_dims: Sequence[int]) -> float:
    """Per-weight variance of Flax's default conv init (``lecun_normal``) for a depthwise kernel: ``1/(kh·kw)``."""
    return 1.0 / math.prod(kernel_dims)


def _as_covariance(name: str, covariance: Any, size: int) -> np.ndarray:
    if _checks.is_traced(covariance):
        raise TypeError(f"{name} must be a concrete array (it is used at trace time), got a tracer")
    cov = np.asarray(covariance)
    if not jnp.issubdtype(cov.dtype, jnp.floating):  # bfloat16 / float16 included
        raise TypeError(f"{name} must be a floating array, got dtype {cov.dtype}")
    cov = cov.astype(np.float64)
    if cov.shape != (size, size):
        raise ValueError(f"{name} must have shape {(size, size)} for this kernel, got {cov.shape}")
    return _check_psd(name, cov)


def _root_for(
    dims: tuple[int, ...], sigma: float, scale: float | None, covariance: Any, displacement: Displacement
) -> np.ndarray:
    """The ``K×K`` square root ``R`` of the layer's ``Σ`` (float64).

    For the Gaussian closed form ``Σ = s²·(G_h ⊗ G_w)``, ``R = s·(A_h ⊗ A_w)`` with
    ``A = G^{1/2}`` from ``k×k`` eigendecompositions, so ``R z`` is ``s·A_h E A_wᵀ``. (One
    ``K×K`` product per layer measured faster under XLA:CPU than the two ``k×k`` ones.)
    """
    k = math.prod(dims)
    variance = default_variance(dims) if scale is None else scale**2
    if covariance is None and displacement is gaussian:
        factors = [
            _psd_root(gaussian(np.subtract.outer(np.arange(d), np.arange(d))[..., None].astype(float), sigma))
            for d in dims
        ]
        root = factors[0] * math.sqrt(variance)
        for f in factors[1:]:
            root = np.kron(root, f)
        return root
    if covariance is None:
        cov = _check_psd("the displacement covariance", _closed_form(dims, sigma, 1.0, displacement))
    else:
        cov = _as_covariance("covariance", covariance, k)
    mean_diag = float(np.trace(cov)) / k
    if mean_diag <= 0:
        raise ValueError("covariance has a zero diagonal (all filters zero)")
    return _psd_root(cov * (variance / mean_diag))


def sample_filters(key: Array, root: np.ndarray, dims: tuple[int, ...], channels: int, dtype: Any) -> Array:
    """``W = R z`` per channel (``z`` standard normal), shaped ``(*dims, 1, C)``."""
    z = jax.random.normal(key, (math.prod(dims), channels), jnp.float32)
    w = jnp.asarray(root, jnp.float32) @ z
    return w.reshape(*dims, 1, channels).astype(dtype)


def depthwise_conv_init(
    layer: int,
    num_layers: int,
    *,
    sigma_start: float,
    sigma_end: float,
    scale: float | None = None,
    covariance: Any = None,
    displacement: Displacement = gaussian,
) -> Initializer:
    r"""Initializer for depthwise conv kernels: each channel's filter iid ``N(0, Σ_ℓ)``.

    ``Σ_ℓ = s²·(G_σ ⊗ G_σ)`` (:func:`conv_filter_covariance`) with
    ``σ_ℓ = sigma_start + (sigma_end - sigma_start)·layer/(num_layers-1)``, i.e. ``σ``
    grows linearly with depth when ``sigma_end > sigma_start`` (our reconstruction of
    Trockman, Willmott & Kolter, ICLR 2023; see the module docstring).

    Args:
      layer, num_layers: this layer's index among the network's depthwise layers.
      sigma_start, sigma_end: ``σ`` of the first and of the last layer (positive).
      scale: per-weight std ``s``; ``None`` matches Flax's default conv init
        (``lecun_normal``: ``s² = 1/(kh·kw)``).
      covariance: a ``K×K`` symmetric PSD matrix used instead of the closed form (for
        instance from :func:`transfer_covariances`); it is rescaled so that its mean
        diagonal is ``s²`` (ours: the transfer carries the *shape* of the covariance,
        the scale stays the layer's). ``σ`` is then unused.
      displacement: the filter-generating function of the closed form (:func:`gaussian`).

    Checked (``ValueError``/``TypeError`` naming the argument): ``sigma_start``/``sigma_end``
    in :data:`SIGMA_RANGE`, ``scale`` a positive normal float32, ``covariance`` a concrete
    finite symmetric PSD float matrix (bfloat16/float16 accepted), and at ``init``: the key
    (a typed key or a raw ``uint32[2]``), the shape, the dtype, and ``8·scale`` finite in
    the output dtype (``float16`` tops at 65504).

    The returned ``init(key, shape, dtype=None, out_sharding=None)`` takes a depthwise
    kernel shape, ``(kh, kw, 1, C)`` (``nn.Conv(C, (kh, kw), feature_group_count=C)``) or
    1-D ``(k, 1, C)``. The draw is float32, cast to ``dtype`` (default float32).

    Example:
      >>> import flax.linen as nn
      >>> init = depthwise_conv_init(0, 8, sigma_start=1.0, sigma_end=2.0)
      >>> conv = nn.Conv(32, (5, 5), feature_group_count=32, kernel_init=init)
      >>> conv.init(jax.random.key(0), jnp.ones((1, 8, 8, 32)))["params"]["kernel"].shape
      (5, 5, 1, 32)
    """
    sigma = layer_sigma(layer, num_layers, sigma_start, sigma_end)
    if scale is not None:
        scale = _scale("scale", scale)
    if not callable(displacement):
        raise TypeError(f"displacement must be a function (delta, sigma) -> (K, K) array, got {displacement!r}")
    if covariance is not None:
        if _checks.is_traced(covariance):
            raise TypeError(
                "covariance must be a concrete array (it is needed at trace time), got a tracer; pass it "
                "from outside jax.jit"
            )
        cov = np.asarray(covariance)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"covariance must be a square matrix, got shape {cov.shape}")
        _as_covariance("covariance", cov, cov.shape[0])
    roots: dict[tuple[int, ...], np.ndarray] = {}

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        key = _checks.prng_key("key", key)
        dims, channels = _depthwise_dims("shape", shape)
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        std = math.sqrt(default_variance(dims)) if scale is None else scale
        _checks.fits_dtype("scale", 8 * std, dtype, "8 × the per-weight std")
        if std < float(jnp.finfo(dtype).tiny):
            raise ValueError(
                f"scale ({std:.3g}) underflows the output dtype {dtype} (smallest normal value "
                f"{float(jnp.finfo(dtype).tiny):.3g}): the filters would be zero"
            )
        if dims not in roots:
            roots[dims] = _root_for(dims, sigma, scale, covariance, displacement)
        return constrain(sample_filters(key, roots[dims], dims, channels, dtype), out_sharding)

    return init


def filter_covariance(kernel: Any, *, center: bool = True) -> Array:
    """Empirical ``K×K`` covariance of a depthwise kernel's ``C`` filters (float32).

    ``kernel``: ``(kh, kw, 1, C)`` or ``(k, 1, C)``. With ``center`` the filters' mean is
    removed and the sum divided by ``C - 1``; otherwise the second moment ``W Wᵀ / C``.
    A kernel with NaN or inf entries is a ``ValueError``; under ``jax.jit`` (a traced
    kernel) that check cannot run: call it eagerly to have it.

    Example:
      >>> w = depthwise_conv_init(0, 1, sigma_start=1.0, sigma_end=1.0)(jax.random.key(0), (3, 3, 1, 4096))
      >>> cov = filter_covariance(w)
      >>> cov.shape, round(float(cov[0, 0]) * 9, 1)
      ((9, 9), 1.0)
    """
    dims, channels = _depthwise_dims("kernel", jnp.shape(kernel))
    kernel_dtype = jnp.asarray(kernel).dtype
    _checks.float_dtype("kernel dtype", kernel_dtype)
    _checks.finite_array("kernel", kernel)
    if not isinstance(center, (bool, np.bool_)):
        raise TypeError(f"center must be a bool, got {center!r}")
    if center and channels < 2:
        raise ValueError(f"a centered covariance needs at least 2 filters, got kernel shape {jnp.shape(kernel)}")
    w = jnp.asarray(kernel, jnp.float32).reshape(math.prod(dims), channels)
    if center:
        w = w - w.mean(axis=1, keepdims=True)
        return (w @ w.T) / (channels - 1)
    return (w @ w.T) / channels


def _interpolation(n_from: int, n_to: int) -> np.ndarray:
    """``(n_to, n_from)`` aligned-corner linear interpolation (first/last taps map to first/last)."""
    if n_to == 1 or n_from == 1:
        m = np.zeros((n_to, n_from))
        if n_from == 1:
            m[:, 0] = 1.0
        else:
            m[0, n_from // 2] = 1.0 if n_from % 2 else 0.5
            if n_from % 2 == 0:
                m[0, n_from // 2 - 1] = 0.5
        return m
    pos = np.arange(n_to) * (n_from - 1) / (n_to - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_from - 2)
    frac = pos - lo
    m = np.zeros((n_to, n_from))
    m[np.arange(n_to), lo] = 1.0 - frac
    m[np.arange(n_to), lo + 1] += frac
    return m


def resize_covariance(covariance: Any, kernel_size: int | Sequence[int], new_kernel_size: int | Sequence[int]) -> Array:
    """The covariance ``M Σ Mᵀ`` of filters resized from ``kernel_size`` to ``new_kernel_size``.

    ``M`` is aligned-corner linear interpolation along each filter axis (ours: the
    paper resizes covariances but its method is not available to us). ``M Σ Mᵀ`` is
    the exact covariance of the resized filters, so it is symmetric PSD whenever ``Σ``
    is. Upsampling gives a rank-``K`` matrix (``K`` the old tap count), which
    :func:`depthwise_conv_init` samples without trouble.

    Example:
      >>> cov = resize_covariance(conv_filter_covariance(3, 1.0), 3, 7)
      >>> cov.shape
      (49, 49)
    """
    old, new = _kernel_dims(kernel_size), _kernel_dims(new_kernel_size, "new_kernel_size")
    if len(old) != len(new):
        raise ValueError(f"kernel_size {old} and new_kernel_size {new} must have the same number of axes")
    cov = _as_covariance("covariance", covariance, math.prod(old))
    m = np.ones((1, 1))
    for a, b in zip(old, new, strict=True):
        m = np.kron(m, _interpolation(a, b))
    out = m @ cov @ m.T
    return jnp.asarray((out + out.T) / 2, jnp.float32)


def transfer_covariances(
    covariances: Sequence[Any],
    num_layers: int,
    *,
    kernel_size: int | Sequence[int] | None = None,
    new_kernel_size: int | Sequence[int] | None = None,
) -> list[Array]:
    """Map the covariances of a source net's ``S`` depthwise layers to ``num_layers`` layers.

    Target layer ``ℓ`` takes source layer ``round(ℓ (S-1)/(L-1))`` (nearest relative
    depth; one target layer takes the first source layer), resized from ``kernel_size``
    to ``new_kernel_size`` when both are given (:func:`resize_covariance`). Pass each
    result as ``covariance=`` of :func:`depthwise_conv_init`, or the whole list as
    ``covariances=`` of :func:`mimetic_conv`. Every source covariance is checked (a
    concrete, finite, symmetric PSD float matrix of the right size), used or not.

    Example:
      >>> src = [conv_filter_covariance(3, s) for s in (0.5, 1.0, 2.0)]
      >>> [c.shape for c in transfer_covariances(src, 5, kernel_size=3, new_kernel_size=5)][:2]
      [(25, 25), (25, 25)]
    """
    num_layers = _checks.size("num_layers", num_layers)
    if isinstance(covariances, (str, bytes)) or not isinstance(covariances, Sequence):
        raise TypeError(f"covariances must be a sequence of K×K arrays, got {type(covariances).__name__}")
    if len(covariances) == 0:
        raise ValueError("covariances must hold at least one source covariance")
    if (kernel_size is None) != (new_kernel_size is None):
        raise ValueError("pass both kernel_size and new_kernel_size to resize, or neither")
    s = len(covariances)
    taps = None if kernel_size is None else math.prod(_kernel_dims(kernel_size))
    if kernel_size is not None:
        _kernel_dims(new_kernel_size, "new_kernel_size")
    checked = []
    for i, cov in enumerate(covariances):
        if np.ndim(cov) != 2:
            raise ValueError(f"covariances[{i}] must be a K×K matrix, got shape {np.shape(cov)}")
        checked.append(_as_covariance(f"covariances[{i}]", cov, np.shape(cov)[0] if taps is None else taps))
    out = []
    for layer in range(num_layers):
        src = 0 if num_layers == 1 else int(round(layer * (s - 1) / (num_layers - 1)))
        cov = checked[src]
        if kernel_size is not None and new_kernel_size is not None:  # both or neither (checked above)
            out.append(resize_covariance(cov, kernel_size, new_kernel_size))
        else:
            out.append(jnp.asarray(cov, jnp.float32))
    return out


# --------------------------------------------------------------------------- whole-model transform


#: Default path pattern of depthwise convs: ConvMixer ``depthwise``, ConvNeXt ``dwconv`` / timm ``conv_dw``.
DEPTHWISE_NAMES = r"(?i)(depthwise|dw_?conv|conv_?dw)"

#: Package defaults of the conv scheme: ``σ`` growing with depth from 0.5 to 2, as the published
#: description has the covariance spreading with depth. ``benchmarks/conv_sigma.py`` (ConvMixer on
#: digits, 10 paired seeds, 300 steps): with frozen filters 0.5→2 beats the constant 0.5→0.5 by
#: +2.00 ± 1.87 pp (8/10 seeds, p 0.008) and the default init by +2.87 pp (p 0.014); with trained
#: filters every schedule is within 0.6 pp of the others (0.5→2 − 0.5→0.5: −0.04 ± 0.84 pp).
DEFAULT_SIGMA_START = 0.5
DEFAULT_SIGMA_END = 2.0


def _is_depthwise(shape: tuple[int, ...]) -> bool:
    return len(shape) in (3, 4) and shape[-2] == 1


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
    return find_kernels(
        flatten(tree), _is_depthwise, include, exclude, stacked_axes, tree, depthwise_names=DEPTHWISE_NAMES
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
      sigma_start, sigma_end: ``σ`` of the first and last depthwise layer (package defaults
        0.5 → 2, growing with depth: ``DEFAULT_SIGMA_START``, ``DEFAULT_SIGMA_END``).
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
    # the options first, before the tree is read (mimetic_plan runs these checks on an empty tree)
    _sigma("sigma_start", sigma_start)
    _sigma("sigma_end", sigma_end)
    if covariances is not None and not isinstance(covariances, (list, tuple)):
        raise TypeError(
            "covariances must be None or a list of K×K matrices, one per depthwise layer, "
            f"got {type(covariances).__name__}"
        )
    if scale is not None:
        scale = _scale("scale", scale)  # as depthwise_conv_init: a positive normal float32 (1e160 overflowed)
    if not callable(displacement):
        raise TypeError(f"displacement must be a function (delta, sigma) -> (K, K) array, got {displacement!r}")
    key = _checks.prng_key("key", key)
    flat = flatten(tree)
    sites = find_kernels(flat, _is_depthwise, include, exclude, stacked_axes, tree, depthwise_names=DEPTHWISE_NAMES)
    if not sites:
        if allow_empty:
            return tree
        raise nothing_found(
            "depthwise conv kernel (kh, kw, 1, C) or (k, 1, C)", flat, include, _is_depthwise, stacked_axes
        )
    total = sum(s.layers for s in sites)
    if covariances is not None and len(covariances) != total:
        raise ValueError(f"covariances must hold one matrix per depthwise layer ({total}), got {len(covariances)}")
    for site in sites:
        dtype = _checks.float_dtype(f"kernel {site.name!r} dtype", jnp.result_type(flat[site.path]))
        std = math.sqrt(default_variance(site.shape[:-2])) if scale is None else scale
        _checks.fits_dtype("scale", 8 * std, dtype, f"8 × the per-weight std of kernel {site.name!r}")
        if std < float(jnp.finfo(dtype).tiny):
            raise ValueError(
                f"scale ({std:.3g}) underflows the dtype {dtype} of kernel {site.name!r} (smallest normal value "
                f"{float(jnp.finfo(dtype).tiny):.3g}): the filters would be zero"
            )
    layer = 0
    for site in sites:
        dims, channels = site.shape[:-2], site.shape[-1]
        roots = []
        for i in range(site.layers):
            sigma = layer_sigma(layer + i, total, sigma_start, sigma_end)
            if covariances is None:
                roots.append(_root_for(dims, sigma, scale, None, displacement))
                continue
            try:
                roots.append(_root_for(dims, sigma, scale, covariances[layer + i], displacement))
            except (TypeError, ValueError) as err:
                raise type(err)(f"covariances[{layer + i}] (for kernel {site.name!r}): {err}") from None
        old = flat[site.path]
        draws = [
            sample_filters(jax.random.fold_in(key, layer + i), roots[i], dims, channels, old.dtype)
            for i in range(site.layers)
        ]
        new = jnp.stack(draws).reshape((*site.stack, *site.shape)) if site.stack else draws[0]
        flat[site.path] = put_like(constrain(site.from_flax(new), target_of(old)), old)
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
    for site in find_kernels(
        flat, _is_depthwise, include, exclude, stacked_axes, tree, depthwise_names=DEPTHWISE_NAMES
    ):
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
        s.path
        for s in find_kernels(
            flat, _is_depthwise, include, exclude, stacked_axes, source, depthwise_names=DEPTHWISE_NAMES
        )
    }
    return rebuild(tree, {p: p in frozen for p in flat})
