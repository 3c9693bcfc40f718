"""Test configuration: 8 virtual CPU devices (for the sharding tests) and x64 off.

The XLA flag must be set before JAX initializes its backends, so it lives here,
at import time of the test session.
"""

from __future__ import annotations

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def strict_promotion():
    """Run a test under JAX's strict dtype promotion (no silent up-casts)."""
    with jax.numpy_dtype_promotion("strict"):
        yield
