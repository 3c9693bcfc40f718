"""Sharding plumbing shared by the initializers and transforms: where arrays are placed."""

from __future__ import annotations

from typing import Any

import jax

Array = jax.Array

__all__ = ["constrain"]


def constrain(x: Array, out_sharding: Any) -> Array:
    """Apply an initializer's ``out_sharding`` (``None`` leaves ``x`` as it is)."""
    if out_sharding is None:
        return x
    mesh = getattr(out_sharding, "mesh", None)
    explicit = mesh is None or any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))
    if explicit:  # explicit-axis meshes (the default of jax.make_mesh) and bare PartitionSpecs
        return jax.sharding.reshard(x, out_sharding)
    return jax.lax.with_sharding_constraint(x, out_sharding)
