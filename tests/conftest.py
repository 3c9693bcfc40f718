"""Test configuration: 8 virtual CPU devices (for the sharding tests), LLVM -O0 (faster compiles) and x64 off.

The XLA flag must be set before JAX initializes its backends, so it lives here,
at import time of the test session.
"""

from __future__ import annotations

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
# Most of the suite's time is XLA compiling many small programs; LLVM's -O0 codegen compiles them
# faster (tests/test_fuse.py + test_third_party.py on 2 cores: 118 s -> 100 s). The optimized HLO is
# the same, but float results can differ at rounding from the default -O2 (no mul+add contracted to
# FMA: a fast query_key's sum moved in the 7th digit), so the tests compare arrays computed in one
# process under one setting; set the flag in XLA_FLAGS to run them at another level.
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest


@pytest.fixture
def strict_promotion():
    """Run a test under JAX's strict dtype promotion (no silent up-casts)."""
    with jax.numpy_dtype_promotion("strict"):
        yield
