"""Parameter-tree plumbing shared by every whole-model transform.

A transform (``mimetic_attention``, the conv/MLP/SSM transforms, ``emergence_scale``,
``mimetic``) works on a *flat* view of the model's parameters: a dict from path tuples
(``("params", "encoder", "layers_0", "attn", "query", "kernel")``) to arrays. These
helpers turn a model into that view and write a changed view back in the caller's
container. Four kinds of model are understood:

* a linen variable dict, or any nested mapping of arrays (transformers' Flax ``params``);
* an ``nnx.State`` and an ``nnx.Module`` (its ``nnx.Param`` s only);
* any other pytree, an Equinox module for one: its array leaves, named by their
  ``jax.tree_util`` key paths (attribute names, dict keys, list indices).

* :func:`flatten`/:func:`as_pure_dict` — the flat view;
* :func:`rebuild` — a new dict / ``nnx.State`` / pytree (Equinox: a new module, as
  ``eqx.tree_at`` would return) with the same structure, or the ``nnx.Module`` updated
  **in place** (like ``nnx.update``);
* :func:`match_parts` — the locator: every module path under which a block's parts exist;
* :func:`module_at` — the module object at a path (for attributes such as ``num_heads``);
* :func:`path_name` — the ``"a/b/c"`` string that ``include``/``exclude`` patterns search;
  :func:`selected` applies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx, traverse_util
from flax.core import FrozenDict

from mimetic_jax import _checks

Path = tuple[Any, ...]


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _key_name(entry: Any) -> Any:
    """One ``jax.tree_util`` key-path entry as a path element (a name or a list index)."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _to_pure_dict(state: Any) -> Any:
    """``nnx.to_pure_dict`` where Flax has it (the ``State`` method is deprecated), else the method."""
    fn = getattr(nnx, "to_pure_dict", None)
    return fn(state) if fn is not None else state.to_pure_dict()


def _replace_by_pure_dict(state: Any, pure: Any) -> None:
    fn = getattr(nnx, "replace_by_pure_dict", None)
    if fn is not None:
        fn(state, pure)
    else:
        state.replace_by_pure_dict(pure)


def _is_mapping_tree(tree: Any) -> bool:
    return isinstance(tree, (Mapping, nnx.State, nnx.Module))


def as_pure_dict(tree: Any) -> Any:
    """A nested dict of arrays for a linen params dict, an ``nnx.State`` or an ``nnx.Module``."""
    if isinstance(tree, nnx.Module):
        return _to_pure_dict(nnx.state(tree, nnx.Param))
    if isinstance(tree, nnx.State):
        return _to_pure_dict(tree)
    if isinstance(tree, Mapping):
        return tree
    raise TypeError(f"as_pure_dict takes a mapping, an nnx.State or an nnx.Module, got {type(tree).__name__}")


def _split_keys(path: Path) -> Path:
    """A path with every ``/``-joined string key split into its parts.

    dm-haiku names a parameter dict by the module's whole path in one key
    (``"multi_head_attention/query"``, ``"mlp/~/linear_0"``); split, its parts can be matched
    like any nested dict's.
    """
    if not any(isinstance(k, str) and "/" in k for k in path):
        return path
    return tuple(part for k in path for part in (k.split("/") if isinstance(k, str) else (k,)))


def _flat_mapping(pure: Any, **kwargs: Any) -> dict[Path, Any]:
    """``traverse_util.flatten_dict`` of a nested mapping, ``/``-joined keys split (:func:`_split_keys`)."""
    flat: dict[Path, Any] = {}
    for path, leaf in traverse_util.flatten_dict(
        dict(pure) if isinstance(pure, FrozenDict) else pure, **kwargs
    ).items():
        split = _split_keys(path)
        if split in flat:
            raise ValueError(
                f"tree has two leaves at {path_name(split)!r} (a key holding '/' and a nested dict name the same path)"
            )
        flat[split] = leaf
    return flat


def flatten(tree: Any) -> dict[Path, Any]:
    """The flat ``{path: array}`` view of a mapping, an ``nnx.State``/``nnx.Module`` or any pytree.

    A string key holding ``/`` (dm-haiku's ``"multi_head_attention/query"``) counts as that many
    path elements; :func:`rebuild` writes it back under its own key.
    """
    if _is_mapping_tree(tree):
        return _flat_mapping(as_pure_dict(tree))
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    flat = {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves if _is_array(leaf)}
    if not flat:
        raise TypeError(
            f"tree must be a linen variable dict, an nnx.State, an nnx.Module or a pytree of arrays "
            f"(an Equinox module, say); got {type(tree).__name__} with no array leaves"
        )
    return flat


def _is_sharding(x: Any) -> bool:
    return x is None or isinstance(x, (jax.sharding.Sharding, jax.sharding.PartitionSpec))


def flatten_shardings(shardings: Any, flat: Mapping[Path, Any]) -> dict[Path, Any]:
    """The ``{path: sharding}`` view of a transform's ``shardings=`` (``None``: ``{}``).

    ``shardings`` has the structure of the tree (what one passes as ``out_shardings`` to
    ``jax.jit``), each leaf a ``jax.sharding.Sharding``, a ``PartitionSpec`` or ``None``;
    paths as :func:`flatten` names them. A path that is not a leaf of the tree is a
    ``ValueError`` naming it (a ``shardings`` of another model).
    """
    if shardings is None:
        return {}
    if isinstance(shardings, (nnx.State, Mapping)):
        out = _flat_mapping(as_pure_dict(shardings), keep_empty_nodes=False)
    elif _is_sharding(shardings):
        raise TypeError(
            "shardings must have the structure of the tree (what jax.jit's out_shardings gets for it), "
            f"got one {type(shardings).__name__}; use jax.tree.map(lambda _: s, tree) for one sharding everywhere"
        )
    else:
        leaves = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=_is_sharding)[0]
        out = {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves}
    by_str = {tuple(str(x) for x in p): p for p in flat}
    result = {}
    for path, s in out.items():
        if not _is_sharding(s):
            raise TypeError(f"shardings at {path_name(path)!r} must be a Sharding, a PartitionSpec or None, got {s!r}")
        key = by_str.get(tuple(str(x) for x in path))
        if key is None:
            raise ValueError(f"shardings names {path_name(path)!r}, which is not a leaf of the tree")
        result[key] = s
    return result


def config_get(config: Any, name: str) -> Any:
    """``config[name]`` of a mapping, else the attribute ``name`` of an object (a model config, a module); ``None``."""
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def config_int(config: Any, names: Sequence[str]) -> int | None:
    """The first positive ``int`` among ``names`` of a config or module (:func:`config_get`), else ``None``."""
    for n in names:
        v = config_get(config, n)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def module_at(tree: Any, path: Path) -> Any:
    """The object at ``path`` inside ``tree`` (an attribute, a key or an index per element), or ``None``.

    Used to read what a module carries but its arrays do not (``num_heads`` of an
    Equinox or NNX attention module, ``groups`` of a convolution).
    """
    obj = tree
    for name in path:
        if isinstance(obj, Mapping) or (isinstance(obj, nnx.State)):
            try:
                obj = obj[name]
            except (KeyError, TypeError):
                return None
        elif isinstance(name, int) and isinstance(obj, Sequence):
            obj = obj[name] if -len(obj) <= name < len(obj) else None
        else:
            try:
                obj = getattr(obj, str(name))
            except (AttributeError, TypeError):
                try:
                    obj = obj[name]
                except Exception:  # any container that does not hold it
                    return None
        if obj is None:
            return None
    return obj


def _search(arg: str, pattern: Any, text: str) -> bool:
    if not isinstance(pattern, str):
        raise TypeError(f"{arg} must be a regular expression (a str) or None, got {pattern!r}")
    try:
        return re.search(pattern, text) is not None
    except re.error as e:
        raise ValueError(f"{arg}={pattern!r} is not a valid regular expression: {e}") from None


def check_pattern(arg: str, pattern: Any) -> None:
    """Raise unless ``pattern`` is ``None`` or a compiling regular expression, naming ``arg``.

    Run up front, so a bad pattern is an error even when no path would be searched with it.
    """
    if pattern is not None:
        _search(arg, pattern, "")


def selected(name: str, include: str | None, exclude: str | None) -> bool:
    """Whether a path name passes a transform's ``include``/``exclude`` regular expressions (``re.search``).

    A pattern that is not a string is a ``TypeError``, one that does not compile a
    ``ValueError``, each naming the argument.
    """
    return (include is None or _search("include", include, name)) and (
        exclude is None or not _search("exclude", exclude, name)
    )


def _str_key(path: Path) -> tuple[str, ...]:
    return tuple(str(x) for x in path)


def match_parts(
    flat: Mapping[Path, Any], parts: Sequence[Path], include: str | None, exclude: str | None, *, root: bool
) -> tuple[list[tuple[Path, tuple[Path, ...]]], list[tuple[Path, tuple[int, ...]]]]:
    """The one locator: every module path under which all of ``parts`` exist.

    ``parts`` are paths relative to a block (``("self", "query", "kernel")``), compared
    by name, so a block's parts may sit in different subtrees and list indices match
    their string form. A parent is kept when its path name passes ``include``/``exclude``
    (:func:`selected`); ``root=False`` never returns the tree's root.

    Returns ``(matches, partial)``: ``matches`` holds ``(parent, full paths of the parts)``
    in sorted path order; ``partial`` holds ``(parent, indices of the missing parts)`` for
    parents where some but not all parts exist (for error messages).
    """
    check_pattern("include", include)
    check_pattern("exclude", exclude)
    by_str: dict[tuple[str, ...], Path] = {_str_key(p): p for p in flat}
    rels = [_str_key(r) for r in parts]
    parents: dict[tuple[str, ...], Path] = {}
    for key, path in by_str.items():
        for rel in rels:
            n = len(rel)
            if len(key) >= n and key[len(key) - n :] == rel and (root or len(key) > n):
                parents.setdefault(key[: len(key) - n], path[: len(key) - n])
    matches: list[tuple[Path, tuple[Path, ...]]] = []
    partial: list[tuple[Path, tuple[int, ...]]] = []
    for skey in sorted(parents):
        parent = parents[skey]
        if not selected(path_name(parent), include, exclude):
            continue
        found = [by_str.get((*skey, *rel)) for rel in rels]
        present = [p for p in found if p is not None]
        if len(present) == len(found):
            matches.append((parent, tuple(present)))
        else:
            partial.append((parent, tuple(i for i, p in enumerate(found) if p is None)))
    return matches, partial


def common_stack(what: str, shapes: list[tuple[int, ...]], stacked_axes: int) -> tuple[int, ...]:
    """The leading ``stacked_axes`` axes that the arrays of one block share (stacked layers).

    Raises a ``ValueError`` naming ``what`` when an array has no axis beyond them or
    when they differ.
    """
    stack = shapes[0][:stacked_axes]
    if any(len(s) <= stacked_axes or s[:stacked_axes] != stack for s in shapes):
        raise ValueError(f"{what}: shapes {shapes} do not share stacked_axes={stacked_axes} leading axes")
    return stack


def path_name(path: Path) -> str:
    """``("params", "layers_0", "attn")`` → ``"params/layers_0/attn"``."""
    return "/".join(str(p) for p in path)


def _walk_keys(tree: Any) -> Any:
    """Every key of a nested mapping, depth first."""
    for k, v in tree.items():
        yield k
        if isinstance(v, Mapping):
            yield from _walk_keys(v)


def rebuild(tree: Any, flat: dict[Path, Any]) -> Any:
    """Write ``flat`` back in ``tree``'s container (a new dict/State, or the Module in place)."""
    if not _is_mapping_tree(tree):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        new = [flat.get(tuple(_key_name(k) for k in path), leaf) for path, leaf in leaves]
        return jax.tree_util.tree_unflatten(treedef, new)
    if isinstance(tree, Mapping) and any(isinstance(k, str) and "/" in k for k in _walk_keys(tree)):
        stored = {_split_keys(p): p for p in traverse_util.flatten_dict(dict(tree))}
        flat = {stored.get(p, p): x for p, x in flat.items()}
    pure = traverse_util.unflatten_dict(flat)
    if isinstance(tree, FrozenDict):
        return FrozenDict(pure)
    if isinstance(tree, (nnx.State, nnx.Module)):
        state = nnx.state(tree, nnx.Param) if isinstance(tree, nnx.Module) else tree
        new_state = jax.tree.map(lambda x: x, state)
        _replace_by_pure_dict(new_state, pure)
        if isinstance(tree, nnx.Module):
            nnx.update(tree, new_state)
            return tree
        return new_state
    return pure


def natural_key(path: Path) -> tuple:
    """Sort key on a path that orders ``block_2`` before ``block_10`` (layer order)."""
    return tuple(
        (0, int(t), "") if t.isdigit() else (1, 0, t) for part in path for t in re.split(r"(\d+)", str(part)) if t
    )


def map_stacked(fn: Any, key: Any, stack: tuple[int, ...], args: Any) -> Any:
    """``fn(key, args)`` on every slice of ``stack`` leading axes of ``args``, each slice its own key.

    Layers stacked by ``nn.scan``/``nnx.vmap`` carry leading axes; slice ``i`` (row-major)
    draws from ``jax.random.split(key, prod(stack))[i]``. No stack: ``fn(key, args)``.
    """
    if not stack:
        return fn(key, args)
    for _ in stack:
        fn = jax.vmap(fn)
    count = 1
    for n in stack:
        count *= n
    return fn(jax.random.split(key, count).reshape(stack), args)


def put_like(new: Any, old: Any) -> Any:
    """``new`` with ``old``'s sharding when both are concrete arrays (eager, not under ``jit``).

    Under a trace nothing is moved (a ``device_put`` of a closed-over array inside ``jit``
    is an error): the caller's ``out_shardings`` or JAX's propagation place the result.
    """
    if _checks.is_traced(new) or _checks.is_traced(old):
        return new
    if getattr(old, "sharding", None) is not None:
        return jax.device_put(new, old.sharding)
    return new
