"""Sharding plumbing shared by the initializers and transforms: where arrays are placed and where work runs.

Three ideas, used by every scheme:

* :func:`constrain` applies an initializer's ``out_sharding`` (or a transform's target
  sharding of a leaf), on Auto meshes with ``with_sharding_constraint`` and on Explicit
  meshes with ``reshard``.
* :func:`target_of` reads the sharding a leaf will have, where JAX lets us see it: the
  ``.sharding`` of a concrete array (a tree created outside the ``jit``, passed in or closed
  over), the sharding in the type of a traced array on an Explicit mesh
  (``jax.typeof(x).sharding``), or the sharding the caller passed (``shardings=`` of a
  transform, the ``out_sharding`` of an initializer). A traced array on an Auto mesh does not
  carry the ``out_shardings`` of the enclosing ``jit``: there the result is ``None`` and
  JAX's propagation decides.
* :class:`Work` splits a construction's rows over mesh axes: the mimetic constructions of
  ``method="fast"`` are row-local matrix products plus small ``r × r`` Gram matrices and
  Cholesky factors, so drawing their Gaussian rows sharded keeps every ``n × r`` piece at
  ``1/devices`` per device (the shards are computed where they live). :meth:`Work.rows`
  pins an intermediate's rows, :meth:`Work.replicated` a small piece. ``Work()`` (no axes)
  pins nothing: unsharded code paths are unchanged.

Explicit meshes: the constructions run inside :func:`run_auto` (``jax.sharding.auto_axes``),
where the pins are ordinary sharding constraints, and come out with the target shardings.
A tree sharded over an Explicit mesh (``jax.make_mesh``'s default) and passed eagerly with
no context mesh brings its own concrete mesh, which :func:`run_auto` enters for the call;
under ``jit`` with no context mesh an initializer's ``out_sharding`` on an Explicit mesh
fails with JAX's own message, as JAX's initializers do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mimetic_jax import _checks

Array = jax.Array

__all__ = ["Work", "constrain", "context_work", "is_explicit", "run_auto", "target_of", "work_for"]


def is_explicit(sharding: Any) -> bool:
    """Whether ``sharding`` lives on a mesh with an Explicit axis (or is a bare ``PartitionSpec``)."""
    mesh = getattr(sharding, "mesh", None)
    if mesh is None:
        return isinstance(sharding, P)
    return any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def constrain(x: Array, out_sharding: Any) -> Array:
    """Apply an initializer's ``out_sharding`` (``None`` leaves ``x`` as it is)."""
    if out_sharding is None:
        return x
    if is_explicit(out_sharding):  # explicit-axis meshes (the default of jax.make_mesh) and bare PartitionSpecs
        return jax.sharding.reshard(x, out_sharding)
    return jax.lax.with_sharding_constraint(x, out_sharding)


def _named(sharding: Any) -> NamedSharding | None:
    """A ``NamedSharding`` over more than one device, else ``None``; a bare spec resolves on the context mesh."""
    if isinstance(sharding, P):
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty:
            return None
        sharding = NamedSharding(mesh, sharding)
    if not isinstance(sharding, NamedSharding) or math.prod(sharding.mesh.axis_sizes) <= 1:
        return None
    return sharding


def target_of(leaf: Any, given: Any = None) -> NamedSharding | None:
    """The sharding ``leaf`` will have, if it is known (module docstring): ``given`` first, then the leaf's own."""
    if given is not None:
        return _named(given)
    if _checks.is_traced(leaf):
        try:
            sharding = jax.typeof(leaf).sharding
        except Exception:  # an abstract value without a sharding
            return None
        named = _named(sharding)
        return named if named is not None and is_explicit(named) else None
    return _named(getattr(leaf, "sharding", None))


def _axes(entry: Any) -> tuple[str, ...]:
    if entry is None or entry is P.UNCONSTRAINED:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


@dataclasses.dataclass(frozen=True)
class Work:
    """Mesh axes over which a construction's rows are split (hashable: a static argument of ``jit``).

    ``Work()`` pins nothing. With axes, :meth:`rows` constrains one axis of an
    intermediate to ``axes`` (the other axes replicated; under ``vmap`` the batch axes
    too), :meth:`replicated` keeps a small piece on every device.
    """

    mesh: Any = None
    axes: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        if not self.axes:
            return 1
        return math.prod(dict(zip(self.mesh.axis_names, self.mesh.axis_sizes, strict=True))[a] for a in self.axes)

    def _put(self, x: Array, spec: P) -> Array:
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or set(self.axes) - set(mesh.axis_names):
            mesh = self.mesh
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    def rows(self, x: Array, axis: int = 0) -> Array:
        """``x`` with axis ``axis`` split over the work axes (when it divides), the rest replicated."""
        if not self.axes or x.shape[axis] % self.size:
            return x
        spec: list[Any] = [None] * x.ndim
        spec[axis] = self.axes[0] if len(self.axes) == 1 else self.axes
        return self._put(x, P(*spec))

    def place(self, x: Array, spec: Any) -> Array:
        """``x`` constrained to ``spec`` (a ``PartitionSpec`` on the work's mesh)."""
        return self._put(x, P(*spec))

    def replicated(self, x: Array) -> Array:
        """``x`` on every device (small pieces: Gram matrices, Cholesky factors)."""
        if not self.axes:
            return x
        return self._put(x, P())


def work_for(targets: Sequence[NamedSharding | None], sizes: Sequence[int], skip: int = 0) -> Work:
    """The :class:`Work` of a construction whose outputs go to ``targets``.

    Its axes are the mesh axes that shard any axis after the first ``skip`` (stacked layers)
    of any target, in mesh order, as long as their product divides every one of ``sizes``
    (the row counts that will be split; axes are dropped from the end until it does).
    No known target: ``Work()``.
    """
    known = [t for t in targets if t is not None]
    if not known:
        return Work()
    mesh = known[0].mesh
    used: set[str] = set()
    for t in known:
        if t.mesh != mesh:
            return Work()
        for entry in tuple(t.spec)[skip:]:
            used.update(_axes(entry))
    axes = [a for a in mesh.axis_names if a in used]
    sizes_by_name = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    while axes and any(n % math.prod(sizes_by_name[a] for a in axes) for n in sizes):
        axes.pop()
    return Work(mesh, tuple(axes)) if axes else Work()


def context_work(leaves: Sequence[Any], sizes: Sequence[int]) -> Work:
    """The work split when no target is known: traced leaves under ``jax.set_mesh`` of an Auto mesh.

    The rows are split over the context mesh's axes (dropped from the end until their
    product divides every one of ``sizes``): the construction then runs row-sharded and
    XLA moves the result to whatever ``out_shardings`` ask for. Outside a trace, or without
    a context mesh: ``Work()``.
    """
    if not any(_checks.is_traced(x) for x in leaves):
        return Work()
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.axis_sizes) <= 1:
        return Work()
    axes = [n for n, size in zip(mesh.axis_names, mesh.axis_sizes, strict=True) if size > 1]
    sizes_by_name = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    while axes and any(n % math.prod(sizes_by_name[a] for a in axes) for n in sizes):
        axes.pop()
    return Work(mesh, tuple(axes)) if axes else Work()


def _staging() -> bool:
    """Whether a ``jit`` is being traced (a constant then comes out as a tracer): ``jax.set_mesh`` is refused there."""
    return _checks.is_traced(jax.lax.add(0, 0))


def run_auto(fn: Callable[..., dict], out_shardings: dict[Any, Any], *args: Any) -> dict:
    """``fn(*args)`` (a dict of arrays) with each result placed at ``out_shardings[name]`` (``None``: left free).

    On an Explicit mesh ``fn`` runs under ``jax.sharding.auto_axes`` (inside, sharding
    constraints steer XLA's propagation as on an Auto mesh) and the results come out with
    the target shardings in their types; elsewhere the results are constrained.
    """
    explicit = [s for s in out_shardings.values() if s is not None and is_explicit(s)]
    if not explicit:
        result = fn(*args)
        return {n: constrain(x, out_shardings.get(n)) for n, x in result.items()}
    mesh = explicit[0].mesh
    axes = tuple(
        n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == jax.sharding.AxisType.Explicit
    )
    specs = {n: P() if s is None else s.spec for n, s in out_shardings.items()}
    call: Any = jax.sharding.auto_axes(fn, axes=axes, out_sharding=specs)  # typed as a decorator factory too
    current = jax.sharding.get_abstract_mesh()
    if not current.empty and current == mesh.abstract_mesh:
        return call(*args)
    if isinstance(mesh, jax.sharding.Mesh) and not _staging():
        # The leaves' own (concrete) mesh, as when arrays sharded over `jax.make_mesh`'s default
        # mesh are passed eagerly with no context mesh: lowering needs the devices, which an
        # abstract mesh alone does not name.
        with jax.set_mesh(mesh):
            return call(*args)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return call(*args)
