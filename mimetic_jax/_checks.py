"""Argument validation shared by every scheme.

Each check raises at trace time (Python values and static shapes only) with a
message that names the argument, what it got and what was expected, so a bad
call never turns into a NaN or an XLA error later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np


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


def choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def float_dtype(name: str, dtype: Any) -> jnp.dtype:
    """Return ``dtype`` as a NumPy dtype if it is a real floating dtype, else raise ``TypeError``."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name} must be a floating dtype, got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype such as float32 or bfloat16, got {dt}")
    return dt


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype the linear algebra runs in: float32, or float64 when asked for it."""
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def head_counts(num_heads: Any, num_kv_heads: Any) -> tuple[int, int]:
    """Validate ``num_heads`` and ``num_kv_heads`` (``None`` means equal) and return them."""
    h = positive_int("num_heads", num_heads)
    h_kv = optional_positive_int("num_kv_heads", num_kv_heads, h)
    if h % h_kv:
        raise ValueError(
            f"num_heads ({h}) must be a multiple of num_kv_heads ({h_kv}) for grouped-query attention"
        )
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
        positive_int(f"{name}[{i}]", d)
    return tuple(int(d) for d in dims)


def array_shape(name: str, value: Any, shape: Sequence[int | None]) -> tuple[int, ...]:
    """Raise unless ``value`` has ``len(shape)`` axes matching ``shape`` (``None``: any size)."""
    got = tuple(np.shape(value))
    if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape)):
        want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got shape {got}")
    return got


def psd_matrix(name: str, value: Any, rtol: float = 1e-5) -> None:
    """Raise unless the square ``value`` is symmetric positive semi-definite (concrete values only).

    A traced matrix (under ``jax.jit``) cannot be inspected and is accepted as is.
    """
    try:
        m = np.asarray(value, dtype=np.float64)
    except Exception:  # noqa: BLE001 - a tracer: nothing to check at trace time
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
