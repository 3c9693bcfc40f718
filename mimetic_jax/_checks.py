"""Argument validation shared by every scheme.

Each check raises at trace time (Python values and static shapes only) with a
message that names the argument, what it got and what was expected, so a bad
call never turns into a NaN or an XLA error later.

The rules: keys (:func:`prng_key`), sizes with an upper bound checked before anything
is allocated (:func:`size`, :func:`elements`, :func:`shape_of`), dtypes
(:func:`float_dtype`: float16, bfloat16, float32, float64), options' ranges
(:func:`real_range`, :func:`positive_float`) including those whose value would overflow
the output dtype (:func:`fits_dtype`), and finite arrays (:func:`finite_array`,
:func:`psd_matrix`). The last two read values: a traced array (under ``jax.jit``) is
not checked, which the public docstrings say. ``docs/validation.md`` lists what each
public entry point checks.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer


class BlockError(ValueError):
    """A block that a transform found but cannot express (its kernel shapes, its head count, ...).

    A ``ValueError``, so an explicit call raises it as any other; ``block`` is the block's path
    name (``"a/b/c"``), which lets :func:`mimetic_jax.mimetic` skip that block of a preset's rule
    and say why in its report.
    """

    def __init__(self, message: str, block: str) -> None:
        super().__init__(message)
        self.block = block


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= 0`` (e.g. ``stacked_axes``), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def optional_positive_int(name: str, value: Any, default: int) -> int:
    """``positive_int`` with ``None`` meaning ``default``."""
    return default if value is None else positive_int(name, value)


def finite_float(name: str, value: Any) -> float:
    """Return ``value`` as a finite Python ``float`` (a static hyper-parameter)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """``value`` as a bool; a ``TypeError`` for anything but ``True``/``False`` (NumPy's included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")
    return bool(value)


def choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def float_dtype(name: str, dtype: Any) -> jnp.dtype:
    """Return ``dtype`` as a NumPy dtype if it is a real floating dtype, else raise ``TypeError``."""
    try:
        dt = jnp.dtype(dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a floating dtype, got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype such as float32 or bfloat16, got {dt}")
    return dt


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype the linear algebra runs in: float32, or float64 when asked for it."""
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def head_counts(num_heads: Any, num_kv_heads: Any) -> tuple[int, int]:
    """Validate ``num_heads`` and ``num_kv_heads`` (``None`` means equal) and return them."""
    h = size("num_heads", num_heads)
    h_kv = h if num_kv_heads is None else size("num_kv_heads", num_kv_heads)
    if h % h_kv:
        raise ValueError(f"num_heads ({h}) must be a multiple of num_kv_heads ({h_kv}) for grouped-query attention")
    return h, h_kv


def not_wider(name: str, value: int, limit_name: str, limit: int) -> None:
    """Raise unless ``value <= limit`` (for example ``head_dim <= d_in``)."""
    if value > limit:
        raise ValueError(f"{name} ({value}) must not exceed {limit_name} ({limit})")


def shape_of(name: str, shape: Any, ranks: Sequence[int]) -> tuple[int, ...]:
    """Validate an initializer's ``shape``: a tuple of positive ints with one of ``ranks``."""
    try:
        dims = tuple(shape)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of ints, got {shape!r}") from err
    if len(dims) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {want}, got shape {dims} (rank {len(dims)})")
    for i, d in enumerate(dims):
        size(f"{name}[{i}]", d)
    # itemsize 2: the smallest floating dtype an initializer may be asked for (float16, bfloat16)
    elements(f"{name} {tuple(int(d) for d in dims)}", math.prod(int(d) for d in dims), itemsize=2)
    return tuple(int(d) for d in dims)


def array_shape(name: str, value: Any, shape: Sequence[int | None]) -> tuple[int, ...]:
    """Raise unless ``value`` has ``len(shape)`` axes matching ``shape`` (``None``: any size)."""
    got = tuple(np.shape(value))
    if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape, strict=True)):
        want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got shape {got}")
    return got


def psd_matrix(name: str, value: Any, rtol: float = 1e-5) -> None:
    """Raise unless the square ``value`` is symmetric positive semi-definite (concrete values only).

    A traced matrix (under ``jax.jit``) cannot be inspected and is accepted as is.
    """
    try:
        m = np.asarray(value, dtype=np.float64)
    except Exception:  # a tracer: nothing to check at trace time
        return
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite, got non-finite entries")
    scale = max(float(np.max(np.abs(m))) if m.size else 0.0, np.finfo(np.float32).tiny)
    if np.max(np.abs(m - m.T)) > rtol * scale * 10:
        raise ValueError(f"{name} must be symmetric, got max |C - Cᵀ| = {np.max(np.abs(m - m.T)):.3g}")
    low = float(np.linalg.eigvalsh((m + m.T) / 2)[0]) if m.size else 0.0
    if low < -rtol * scale * max(1, m.shape[0]):
        raise ValueError(f"{name} must be positive semi-definite, got smallest eigenvalue {low:.4g}")


# --------------------------------------------------------------------------- sizes with an upper bound

#: Largest size accepted for one axis (XLA and ``jax.random`` index axes with 32-bit integers).
MAX_DIM = 2**31 - 1
#: Largest number of elements one call may allocate for one array (2**34: 64 GiB of float32). A sanity
#: bound checked before anything is allocated, so that an absurd size (``10**12`` heads) raises a
#: ``ValueError`` instead of aborting the process or exhausting memory; it is not a memory check.
MAX_ELEMENTS = 2**34


def size(name: str, value: Any, limit: int = MAX_DIM) -> int:
    """``positive_int`` with an upper bound (default :data:`MAX_DIM`), checked before anything is allocated."""
    v = positive_int(name, value)
    if v > limit:
        raise ValueError(f"{name} must be at most {limit}, got {v}")
    return v


def elements(what: str, *counts: int, itemsize: int = 4) -> None:
    """Raise unless each element count in ``counts`` (what one array of the call holds) can be allocated.

    ``what`` names the sizes the counts come from, e.g. ``"d_in × num_heads × head_dim"``. Two
    bounds, both checked before anything is allocated: at most :data:`MAX_ELEMENTS` elements,
    and at most the memory of the machine (:func:`memory_bytes`) at ``itemsize`` bytes an
    element (4: the schemes compute in float32 or float64), so a size that can never be
    allocated here raises a ``ValueError`` naming the sizes instead of an XLA
    ``RESOURCE_EXHAUSTED`` error or a killed process. Passing does not promise the memory is
    free: other arrays, and the computation's temporaries, need room too.
    """
    n = max(int(c) for c in counts)
    if n > MAX_ELEMENTS:
        raise ValueError(
            f"{what} = {n} elements exceeds the limit of {MAX_ELEMENTS} (2**34) elements per array; "
            f"the sizes are too large to allocate"
        )
    limit = memory_bytes()
    if limit is not None and n * itemsize > limit:
        raise ValueError(
            f"{what} = {n} elements needs {n * itemsize / 2**30:.3g} GiB for one array, more than the "
            f"{limit / 2**30:.3g} GiB of memory of this machine ({_memory_source()}); use smaller sizes"
        )


@functools.cache
def _device_memory(backend: str) -> int | None:
    """The summed ``bytes_limit`` of the backend's devices (an accelerator's memory), None on CPU."""
    total = 0
    for d in jax.devices(backend):
        try:
            stats = d.memory_stats() if d.platform != "cpu" else None
        except Exception:  # a backend without memory statistics: use the host's
            return None
        if not stats or "bytes_limit" not in stats:
            return None
        total += int(stats["bytes_limit"])
    return total or None


def _host_memory() -> int | None:
    """Physical memory, lowered by the process's address-space limit (``ulimit -v``) if one is set."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        phys = None
    soft = None
    try:
        import resource  # POSIX only

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        soft = None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, OSError, ValueError):
        pass
    limits = [m for m in (phys, soft) if m and m > 0]
    return min(limits) if limits else None


def _memory_source() -> str:
    backend = jax.default_backend()
    return f"{backend} devices" if _device_memory(backend) is not None else "host memory and address-space limit"


def memory_bytes() -> int | None:
    """The most memory one array of a call could use: the default backend's devices' total memory
    (their ``bytes_limit``; a sharded array spreads over them) or, on CPU, the host's physical
    memory lowered by the address-space limit. ``None`` when it cannot be read."""
    backend = jax.default_backend()
    dev = _device_memory(backend)
    return dev if dev is not None else _host_memory()


# --------------------------------------------------------------------------- keys


@functools.cache
def _raw_key_shape_of(impl: str) -> tuple[int, ...]:
    del impl  # the cache key: the default PRNG implementation sets the raw key's length
    return tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)


def _raw_key_shape() -> tuple[int, ...]:
    # jax.config's flags are attributes set at run time, which its Config class does not declare.
    return _raw_key_shape_of(str(jax.config.jax_default_prng_impl))  # type: ignore[attr-defined]


def prng_key(name: str, key: Any) -> jax.Array:
    """Return ``key`` as a typed PRNG key: a typed key of shape ``()`` or a legacy raw ``uint32`` key.

    Works on traced keys (only the dtype and shape are read). Raises ``TypeError`` for
    anything else (``None``, an int seed, an int32 array, a raw key of the wrong length)
    and ``ValueError`` for a batch of keys (use ``jax.vmap``).
    """
    hint = "a PRNG key such as jax.random.key(0) (or a legacy jax.random.PRNGKey(0))"
    if key is None or isinstance(key, (bool, int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be {hint}, got {key!r}; to seed with an int, pass jax.random.key(seed)")
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be {hint}, got {type(key).__name__}")
    dtype = key.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got a key array of shape {key.shape}; use jax.vmap")
        return key if isinstance(key, jax.Array) else jnp.asarray(key)
    raw = _raw_key_shape()
    if dtype != np.uint32 or tuple(key.shape) != raw:
        raise TypeError(
            f"{name} must be {hint}, got an array of dtype {dtype} and shape {tuple(key.shape)} "
            f"(a raw key is uint32{list(raw)})"
        )
    return jax.random.wrap_key_data(jnp.asarray(key))


# --------------------------------------------------------------------------- values


def real_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``finite_float`` restricted to ``[low, high]`` (``(low, …`` / ``…, high)`` when open)."""
    v = finite_float(name, value)
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        want = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must lie in {want}, got {v:g}")
    return v


def positive_float(name: str, value: Any) -> float:
    """A finite ``float > 0``."""
    v = finite_float(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v:g}")
    return v


def fits_dtype(name: str, value: float, dtype: Any, what: str = "") -> None:
    """Raise unless ``value`` (a static number the output is built from) is finite in ``dtype``.

    ``float16`` saturates at 65504: ``dt_bias_init(7e4)(key, shape, jnp.float16)`` would
    otherwise return ``inf``. ``what`` says how ``value`` relates to ``name`` (``"softplus⁻¹(delta)"``).
    """
    dt = jnp.dtype(dtype)
    top = float(jnp.finfo(dt).max)
    if not abs(value) <= top:
        about = f" ({what} = {value:.4g})" if what else f" ({value:.4g})"
        raise ValueError(f"{name} overflows the output dtype {dt}{about}: its largest finite value is {top:.4g}")


def no_underflow(name: str, value: float, dtype: Any, what: str = "") -> None:
    """Raise unless the nonzero ``value`` is at least the smallest normal number of ``dtype``.

    A smaller value rounds to a subnormal or to zero in ``dtype``: ``dt_bias_init(1e-300)`` would
    give ``softplus(bias) = 0`` in float32 instead of ``delta``. ``what`` as in :func:`fits_dtype`.
    """
    dt = jnp.dtype(dtype)
    tiny = float(jnp.finfo(dt).tiny)
    if value != 0 and not abs(value) >= tiny:
        about = f" ({what} = {value:.4g})" if what else f" ({value:.4g})"
        raise ValueError(
            f"{name} underflows the output dtype {dt}{about}: it must be 0 or at least its smallest "
            f"normal value {tiny:.4g} in magnitude"
        )


#: A bound, with a margin, on the spectral norm of the noise ``Z`` of a mimetic target ``αZ + βI``
#: (entries of variance ``1/max(rows, cols)``: ``‖Z‖₂ ≈ 2``).
NOISE_NORM = 3.0


def target_fits(alpha_name: str, alpha: float, beta_name: str, beta: float, dtype: Any) -> None:
    """Raise unless the factors of the target ``αZ + βI`` are finite in ``dtype`` (and the target in its compute dtype).

    The target's largest singular value is at most ``s = 3|α| + |β|`` (:data:`NOISE_NORM`), so the
    factors' entries (``U √S``, ``√S Vᵀ``) are at most ``√s``: that must be finite in the output
    ``dtype`` (float16 saturates at 65504, so ``s`` up to about 4.3e9), and ``s`` itself must stay
    below the square root of the compute dtype's largest value (float32: about 1.8e19), where the
    SVD's squared norms would overflow to inf and NaN.
    """
    dt = jnp.dtype(dtype)
    ct = compute_dtype(dt)
    s = NOISE_NORM * abs(alpha) + abs(beta)
    pair = f"{alpha_name} ({alpha:g}) and {beta_name} ({beta:g})"
    limit = math.sqrt(float(jnp.finfo(ct).max))
    if not s <= limit:
        raise ValueError(
            f"{pair} are too large for the {ct} computation: 3|{alpha_name}| + |{beta_name}| = {s:.4g} "
            f"exceeds {limit:.4g} (the square root of its largest finite value)"
        )
    top = float(jnp.finfo(dt).max)
    if not math.sqrt(s) <= top:
        raise ValueError(
            f"{pair} overflow the output dtype {dt}: the factors' entries reach about "
            f"√(3|{alpha_name}| + |{beta_name}|) = {math.sqrt(s):.4g}, above its largest finite value {top:.4g}"
        )


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a tracer (under ``jax.jit``/``vmap``/``grad``), whose values cannot be inspected."""
    return isinstance(value, Tracer)


def finite_array(name: str, value: Any) -> None:
    """Raise ``ValueError`` if the concrete array ``value`` holds NaN or inf (a tracer is not checked).

    Under ``jax.jit`` the values are not known at trace time, so a traced array passes;
    callers say so in their docstrings.
    """
    if is_traced(value):
        return
    if isinstance(value, jax.Array):
        if not jnp.issubdtype(value.dtype, jnp.inexact):
            return
        with jax.ensure_compile_time_eval():  # a concrete array closed over inside a jit: still checkable
            ok = bool(jnp.all(jnp.isfinite(value)))
    else:
        arr = np.asarray(value)
        if not (jnp.issubdtype(arr.dtype, jnp.inexact)):
            return
        ok = bool(np.all(np.isfinite(arr)))
    if not ok:
        raise ValueError(f"{name} must be finite, got an array with NaN or inf entries (shape {np.shape(value)})")
