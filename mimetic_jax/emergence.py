"""Emergence-promoting layer scaling and the emergence measure (Li, George & Silva 2024).

Paper: Li, George & Silva, "Advancing Neural Network Performance through
Emergence-Promoting Initialization Scheme", arXiv 2407.19044 (its repository,
github.com/johnnyjingzeli/EmergenceInit, holds no code). Measure: Li et al., "A Categorical Framework for
Quantifying Emergent Effects in Network Topology", arXiv 2311.17403.

**Scaling.** Draw the usual (Xavier/Kaiming/Flax default) weights, then multiply the
kernel of layer ``k`` of ``L`` (forward order, ``k = 0 … L-1``) by

    c_k = α^(k − p),    pivot p = ⌊L/2⌋ by default,

so input-side layers shrink and output-side layers grow (``α > 1``); biases and
normalization parameters are untouched. ``Σ_k (k − ⌊L/2⌋) = 0`` for odd ``L``, so a
bias-free ReLU MLP of odd depth computes exactly the same function after scaling (ReLU is
positively homogeneous: ``relu(c z) = c relu(z)`` for ``c > 0``, so the output is scaled by
``Π_k c_k``); for even ``L`` the product is ``α^(−L/2)``, so an even-depth net starts at
``α^(−L/2)`` of its function.

**Symmetric pivot** (ours, ``pivot="symmetric"``): ``c_k = α^(k − (L−1)/2)``, the exponents
``−(L−1)/2, …, (L−1)/2`` sum to 0 for every ``L``, so ``Π_k c_k = 1`` and a bias-free ReLU
MLP keeps its function at init for even depth too (for odd ``L`` it is the default). The
paper fixes no rule for even depth; the default ``⌊L/2⌋`` is kept as the reference
construction.

**α.** The paper's own value was not available to us and the authors' repository
(github.com/johnnyjingzeli/EmergenceInit) holds no code; ``α = 1.1`` is the value of a
third-party implementation. The paper reports that with BatchNorm larger ``α`` are usable.
:data:`DEFAULT_ALPHA` = 1.1 is backed by our own sweep (``benchmarks/emergence.py``,
README table: MLP/CNN on digits, with and without BatchNorm, α ∈ {1.1, 1.25, 1.5, 2}),
which found no α whose effect on accuracy differs from no scaling beyond seed noise, so
no other value had a better claim.

**Why the measure falls with α** (measured, not a convention of the measure). Without
BatchNorm the scales compound through the ReLU layers: with zero biases (as at init)
hidden layer ``l``'s pre-activations are scaled by ``Π_{k ≤ l} c_k`` (``α^(−2), α^(−3),
α^(−3), α^(−2)`` for ``L = 5``), so fewer hidden units exceed the activity threshold (0.05) and the hidden
layers lose active units, which lowers ``E``. It is not a matter of which paths are
counted: ``paths="all"`` and ``paths="to_output"`` fall alike, and with ``threshold=0``
(activity = sign, invariant to positive scaling) ``E`` of a bias-free net does not move
with α at all (``tests/test_emergence.py``; figures in the README).

* :func:`emergence_factors` — the ``c_k`` for ``L`` layers;
* :func:`emergence_init` — a per-layer initializer (``base`` times ``c_layer``);
* :func:`emergence_scale` — the whole-model transform (linen dict, ``nnx.State`` or
  ``nnx.Module``), with :func:`emergence_layers` to inspect its grouping and
  :func:`forward_order` to record a linen model's call order.

**What is a layer** (ours; the paper scales the layers of MLPs/CNNs and the blocks of a
transformer, without a rule for arbitrary trees). A layer is a module holding a
``kernel``; its *index* is shared by everything inside one **top-level unit**:

1. wrappers that hold every kernel (``params``, a single ``backbone`` …) are skipped;
2. each top-level child that holds kernels is one unit (``Dense_0``, ``patch_embed``,
   ``block_3``, ``head``) — so all kernels of a residual block (attention + MLP) share
   one index, as the paper does for transformer blocks;
3. a top-level child that is a *list* of modules (its kernel-holding children are
   named ``0, 1, …`` as in ``nnx.List``, or ``name_0, name_1, …`` with a lower-case
   ``name`` as linen names list attributes) is expanded: each item is one unit.

Forward order: an ``nnx.Module`` gives its attributes' definition order; a dict / ``nnx.State``
gives its insertion order, except that siblings numbered ``X_0, X_1, …`` (or ``0, 1, …``)
are put in numeric order. **``jax.jit`` and ``jax.eval_shape`` sort dict keys**, so a
jitted linen init is in alphabetical order (``head`` before ``patch_embed``): there pass
``order=forward_order(model, x)`` or an explicit ``order``. Check with
:func:`emergence_layers`. Kernels stacked by ``nn.scan``/``nnx.vmap`` count as one layer.

**Measure.** For a directed graph whose nodes are *active* or not,

    E = Σ_{x inactive} Σ_{y active, x→y} |paths from y through active nodes|.

For a layered network (nodes = the units of layers ``0 … L``, edges from each layer to
the next), ``P_l(y)``, the number of paths from ``y`` through active nodes, obeys the
backward recursion ``P_l = a_l ⊙ (1 + A_l P_{l+1})``, ``P_L = a_L`` (``a_l`` the 0/1
activity, ``A_l`` the adjacency), and ``E = Σ_l (1 − a_l)ᵀ A_l P_{l+1}``. For fully
connected layers it is a closed form in the counts ``k_l`` of active nodes out of
``n_l``: ``Q_L = 1``, ``Q_l = 1 + k_{l+1} Q_{l+1}``, ``E = Σ_l (n_l − k_l) k_{l+1} Q_{l+1}``.
See :func:`emergence_measure` (NumPy float64, or natural log with ``log=True``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import _checks
from mimetic_jax._sharding import constrain, is_explicit
from mimetic_jax._tree import Path, flatten, path_name, rebuild

__all__ = [
    "DEFAULT_ALPHA",
    "EmergenceLayer",
    "emergence_factors",
    "emergence_init",
    "emergence_layers",
    "emergence_measure",
    "emergence_scale",
    "forward_order",
]

DEFAULT_ALPHA: float = 1.1
"""Default ``α`` = 1.1, the value of a third-party implementation (the authors' repository holds no code).
What backs it is our sweep (``benchmarks/emergence.py``, README table): no α in {1.1, 1.25, 1.5, 2} was
distinguishable from no scaling (|Δ accuracy| ≤ 0.4 pp, p ≥ 0.15), so no other value had a better claim."""

_NUMBERED = re.compile(r"^(.*)_(\d+)$")
_LIST_ITEM = re.compile(r"^([a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*)_(\d+)$")


# --------------------------------------------------------------------------- factors


def _alpha(alpha: Any) -> float:
    a = _checks.finite_float("alpha", alpha)
    if a <= 0:
        raise ValueError(f"alpha must be > 0 (layer k is scaled by alpha ** (k - pivot)), got {alpha}")
    return a


def _pivot(pivot: Any, num_layers: int) -> int | float:
    if pivot is None:
        return num_layers // 2
    if isinstance(pivot, str):
        if pivot != "symmetric":
            raise ValueError(f"pivot must be an int layer index, None or 'symmetric', got {pivot!r}")
        half = num_layers - 1
        return half // 2 if half % 2 == 0 else half / 2  # (L-1)/2, an int when L is odd
    if isinstance(pivot, bool) or not isinstance(pivot, (int, np.integer)):
        raise TypeError(
            f"pivot must be an int layer index, None or 'symmetric', got {pivot!r} of type {type(pivot).__name__}"
        )
    if not 0 <= pivot < num_layers:
        raise ValueError(f"pivot must be a layer index in [0, {num_layers - 1}] ({num_layers} layers), got {pivot}")
    return int(pivot)


def emergence_factors(
    num_layers: int, alpha: float = DEFAULT_ALPHA, pivot: int | str | None = None
) -> tuple[float, ...]:
    """The per-layer factors ``c_k = α^(k − p)``, ``k = 0 … L−1``, ``p = ⌊L/2⌋`` by default.

    ``pivot`` is a layer index ``p`` (its factor is 1), ``None`` (``⌊L/2⌋``, the default) or
    ``"symmetric"`` (ours): ``p = (L − 1)/2``, so the exponents are symmetric about 0 and
    ``Π_k c_k = α^(Σ_k (k − (L−1)/2)) = α^0 = 1`` for every ``L`` (up to float rounding);
    for odd ``L`` it equals the default, for even ``L`` no layer has factor 1. With it a
    bias-free ReLU MLP computes the same function after scaling at any depth, where the
    default leaves even-depth nets at ``α^(−L/2)`` of theirs (module docstring).

    A factor that overflows or underflows float64 (``emergence_factors(400, 1e6)``) is a
    ``ValueError`` naming ``alpha``.

    Example:
        >>> emergence_factors(3, alpha=2.0)
        (0.5, 1.0, 2.0)
        >>> emergence_factors(4, alpha=2.0)
        (0.25, 0.5, 1.0, 2.0)
        >>> emergence_factors(4, alpha=4.0, pivot="symmetric")
        (0.125, 0.5, 2.0, 8.0)

    References:
        Li, George & Silva, "Advancing Neural Network Performance through
        Emergence-Promoting Initialization Scheme", arXiv 2407.19044 (the scaling; the
        symmetric pivot is ours).
    """
    n = _checks.size("num_layers", num_layers)
    a, p = _alpha(alpha), _pivot(pivot, n)
    out = []
    for k in range(n):
        try:
            c = float(a ** (k - p))
        except OverflowError:
            c = float("inf")
        if not 0.0 < c < float("inf"):
            raise ValueError(
                f"alpha={a:g} gives layer {k} of {n} the factor alpha ** ({k - p:g}), which "
                f"{'overflows' if c else 'underflows'} float64: use an alpha nearer 1 or fewer layers"
            )
        out.append(c)
    return tuple(out)


def emergence_init(
    base: Callable[..., jax.Array],
    layer: int,
    num_layers: int,
    alpha: float = DEFAULT_ALPHA,
    pivot: int | str | None = None,
) -> Callable[..., jax.Array]:
    """Initializer for layer ``layer`` of ``num_layers``: ``base``'s draw times ``c_layer``.

    For models built layer by layer (``nn.Dense(..., kernel_init=emergence_init(base, k, L))``).
    ``base`` follows ``init(key, shape, dtype)`` (any ``jax.nn.initializers`` initializer);
    it draws in float32 (float64 if asked), the draw is scaled and cast to ``dtype`` at the
    end, so one key gives the same weights in every dtype. At ``init`` the key (a typed
    key or a raw ``uint32[2]``), the shape and the dtype are checked, and the factor
    ``c_layer`` must be finite in ``dtype`` (``float16`` tops at 65504; the draw multiplies it).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> base = jax.nn.initializers.he_normal()
        >>> init = emergence_init(base, layer=0, num_layers=3, alpha=2.0)
        >>> k = jax.random.key(0)
        >>> bool(jnp.allclose(init(k, (4, 4)), 0.5 * base(k, (4, 4))))
        True
    """
    if not callable(base):
        raise TypeError(f"base must be an initializer init(key, shape, dtype), got {base!r}")
    n = _checks.positive_int("num_layers", num_layers)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in [0, {n - 1}] (num_layers={n}), got {layer!r}")
    c = emergence_factors(n, alpha, pivot)[int(layer)]

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = None, out_sharding: Any = None) -> jax.Array:
        _checks.prng_key("key", key)
        shape = _checks.shape_of("shape", shape, range(0, 9))
        dt = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("alpha", c, _checks.compute_dtype(dt), f"the factor of layer {int(layer)}")
        _checks.fits_dtype("alpha", c, dt, f"the factor of layer {int(layer)}")
        # jax's initializers take out_sharding on Explicit meshes only; on an Auto mesh it is a constraint
        kwargs = {"out_sharding": out_sharding} if out_sharding is not None and is_explicit(out_sharding) else {}
        w = base(key, shape, _checks.compute_dtype(dt), **kwargs)  # same draw for every dtype
        return constrain((w * c).astype(dt), out_sharding)

    return init


def _scale(w: jax.Array, c: float) -> jax.Array:
    dt = jnp.asarray(w).dtype
    return (w.astype(_checks.compute_dtype(dt)) * c).astype(dt)


# --------------------------------------------------------------------------- forward order of a tree


def _child(obj: Any, name: Any) -> Any:
    if obj is None:
        return None
    try:
        if isinstance(name, (int, np.integer)) or isinstance(obj, Mapping):
            return obj[name]
        return getattr(obj, name)
    except (KeyError, IndexError, AttributeError, TypeError):
        return None


def _sibling_positions(obj: Any, names: Sequence[Any]) -> dict[Any, tuple]:
    """Sort keys of sibling names: container position, numbered families in numeric order."""
    if obj is not None and not isinstance(obj, Mapping) and hasattr(obj, "__dict__"):
        listed = [n for n in vars(obj) if not str(n).startswith("_")]
        base = {n: i for i, n in enumerate(listed)}
    else:
        base = {}
    pos = {n: base.get(n, len(base) + i) for i, n in enumerate(names)}
    first: dict[Any, int] = {}
    keys = {}
    fam: tuple[Any, ...]
    for n in names:
        if isinstance(n, (int, np.integer)):
            fam, num = ("<int>",), int(n)
        elif (m := _NUMBERED.match(str(n))) is not None:
            fam, num = ("<num>", m.group(1)), int(m.group(2))
        else:
            fam, num = ("<one>", n), 0
        first[fam] = min(first.get(fam, pos[n]), pos[n])
        keys[n] = (fam, num)
    return {n: (first[keys[n][0]], keys[n][1], pos[n]) for n in names}


def _ordered(paths: Sequence[Path], obj: Any, depth: int = 0) -> list[Path]:
    """``paths`` (sharing their first ``depth`` components) in forward order."""
    groups: dict[Any, list[Path]] = {}
    leaves = []
    for p in paths:
        if len(p) == depth:
            leaves.append(p)
        else:
            groups.setdefault(p[depth], []).append(p)
    keys = _sibling_positions(obj, list(groups))
    out = list(leaves)
    for name in sorted(groups, key=lambda n: keys[n]):
        out += _ordered(groups[name], _child(obj, name), depth + 1)
    return out


def _is_list(names: Sequence[Any]) -> bool:
    if len(names) < 2:
        return False
    if all(isinstance(n, (int, np.integer)) for n in names):
        return True
    matches = [_LIST_ITEM.match(str(n)) for n in names]
    return all(matches) and len({m.group(1) for m in matches if m}) == 1


def _auto_units(modules: Sequence[Path]) -> list[list[Path]]:
    """Group kernel-holding module paths (in forward order) into units, by the rules above."""
    depth = 0
    while len({m[: depth + 1] for m in modules}) == 1 and all(len(m) > depth + 1 for m in modules):
        depth += 1  # wrapper holding every kernel
    units: dict[Path, list[Path]] = {}
    tops = list(dict.fromkeys(m[: depth + 1] for m in modules))
    for top in tops:
        inside = [m for m in modules if m[: depth + 1] == top]
        items = list(dict.fromkeys(m[depth + 1] for m in inside if len(m) > depth + 1))
        direct = any(len(m) == depth + 1 for m in inside)
        if not direct and _is_list(items):
            for m in inside:
                units.setdefault(m[: depth + 2], []).append(m)
        else:
            units[top] = inside
    return list(units.values())


def _matches(path: Path, entry: Path) -> bool:
    starts = (0, 1) if path and path[0] == "params" and (not entry or entry[0] != "params") else (0,)
    return any(tuple(str(x) for x in path[s : s + len(entry)]) == entry for s in starts)


def _entry(e: Any) -> Path:
    if isinstance(e, str):
        parts = tuple(x for x in e.split("/") if x)
    elif isinstance(e, tuple) and all(isinstance(x, (str, int, np.integer)) for x in e):
        parts = tuple(str(x) for x in e)
    else:
        raise TypeError(f"order entries must be path strings ('block_0/mlp') or tuples of names, got {e!r}")
    if not parts:
        raise ValueError(f"order entries must name a path, got {e!r}")
    return parts


def _explicit_units(modules: Sequence[Path], order: Sequence[Any]) -> list[list[Path]]:
    if isinstance(order, (str, bytes)) or not isinstance(order, Sequence) or not order:
        raise TypeError(f"order must be a non-empty sequence of layers (path strings, or lists of them), got {order!r}")
    units: list[list[Path]] = []
    owner: dict[Path, int] = {}
    for k, layer in enumerate(order):
        entries = [_entry(e) for e in (layer if isinstance(layer, list) else [layer])]
        unit = []
        for entry in entries:
            hit = [m for m in modules if _matches(m, entry)]
            if not hit:
                names = [path_name(m) for m in modules][:12]
                raise ValueError(
                    f"order[{k}] names {'/'.join(entry)!r}, which holds no kernel; kernel-holding modules are {names}"
                )
            for m in hit:
                if m in owner and owner[m] != k:
                    raise ValueError(f"order[{k}] and order[{owner[m]}] both contain {path_name(m)!r}")
                owner[m] = k
                if m not in unit:
                    unit.append(m)
        units.append(unit)
    return units


@dataclasses.dataclass(frozen=True)
class EmergenceLayer:
    """One layer index of :func:`emergence_scale`: its kernels and its factor."""

    index: int
    paths: tuple[Path, ...]
    factor: float

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(path_name(p) for p in self.paths)


def _layers(
    flat: Mapping[Path, Any], tree: Any, alpha: float, order: Any, pivot: Any, kernel: str
) -> list[EmergenceLayer]:
    a = _alpha(alpha)
    if not isinstance(kernel, str) or not kernel:
        raise TypeError(
            f"kernel must be the leaf name of the weights (a non-empty str such as 'kernel'), got {kernel!r}"
        )
    kernels = [p for p in flat if p and p[-1] == kernel]
    if not kernels:
        raise ValueError(
            f"no {kernel!r} leaf found in the tree (leaf names include {sorted({str(p[-1]) for p in flat})[:12]})"
        )
    obj = tree if not isinstance(tree, Mapping) and hasattr(tree, "__dict__") else None
    modules = [p[:-1] for p in _ordered(kernels, obj)]
    units = _auto_units(modules) if order is None else _explicit_units(modules, order)
    factors = emergence_factors(len(units), a, pivot)
    return [
        EmergenceLayer(k, tuple((*m, kernel) for m in u), c)
        for k, (u, c) in enumerate(zip(units, factors, strict=True))
    ]


def emergence_layers(
    tree: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    order: Any = None,
    pivot: int | str | None = None,
    kernel: str = "kernel",
) -> list[EmergenceLayer]:
    """The layers :func:`emergence_scale` would scale, in forward order, with their factors.

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> mlp = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(8), nn.relu, nn.Dense(2)])
        >>> params = mlp.init(jax.random.key(0), jnp.ones((1, 4)))
        >>> [(l.names, l.factor) for l in emergence_layers(params, alpha=2.0)]  # doctest: +NORMALIZE_WHITESPACE
        [(('params/layers_0/kernel',), 0.5), (('params/layers_2/kernel',), 1.0),
         (('params/layers_4/kernel',), 2.0)]
    """
    return _layers(flatten(tree), tree, alpha, order, pivot, kernel)


def emergence_scale(
    tree: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    order: Sequence[Any] | None = None,
    pivot: int | str | None = None,
    kernel: str = "kernel",
) -> Any:
    """Scale the kernels of layer ``k`` of ``L`` by ``α^(k − pivot)`` (Li, George & Silva 2024).

    Args:
      tree: a linen variables/params dict, an ``nnx.State`` or an ``nnx.Module``.
      alpha: ``α > 0`` (``α > 1`` shrinks the input side and grows the output side).
      order: the layers in forward order, overriding the automatic grouping (module
        docstring): each entry is a path (``"block_0"``, ``"params/block_0"`` or a tuple)
        or a *list* of paths sharing one index; every kernel under an entry gets that
        entry's factor, kernels under no entry are left unchanged. An entry that holds no
        kernel is a ``ValueError``. :func:`forward_order` returns a usable ``order``.
      pivot: the layer whose factor is 1; default ``⌊L/2⌋``. ``"symmetric"`` (ours):
        ``c_k = α^(k − (L−1)/2)``, whose product is 1 for every ``L``, so a bias-free ReLU
        MLP keeps its function at even depth too (:func:`emergence_factors`).
      kernel: the leaf name of the weights to scale (biases, norm scales untouched).

    Returns:
      a new dict / ``nnx.State`` (same structure, dtypes), or the ``nnx.Module`` updated
      in place. Works under ``jax.jit``.

    Each factor must be finite in its kernel's dtype (``ValueError`` naming ``alpha``);
    the kernels' values are not inspected (scaling keeps NaN as NaN and makes none).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> mlp = nn.Sequential([nn.Dense(8, use_bias=False), nn.relu, nn.Dense(8, use_bias=False),
      ...                      nn.relu, nn.Dense(2, use_bias=False)])
      >>> x = jax.random.normal(jax.random.key(1), (5, 4))
      >>> params = mlp.init(jax.random.key(0), x)
      >>> scaled = emergence_scale(params, alpha=1.5)   # odd depth, no bias: same function
      >>> bool(jnp.allclose(mlp.apply(params, x), mlp.apply(scaled, x), atol=1e-5))
      True
    """
    flat = flatten(tree)
    layers = _layers(flat, tree, alpha, order, pivot, kernel)
    for layer in layers:
        for p in layer.paths:
            # an integer kernel came back truncated (all zeros for factors < 1): floating kernels only
            dt = _checks.float_dtype(f"kernel {path_name(p)!r} dtype", jnp.asarray(flat[p]).dtype)
            _checks.fits_dtype("alpha", layer.factor, dt, f"the factor of layer {layer.index} ({path_name(p)})")
            flat[p] = _scale(flat[p], layer.factor)
    return rebuild(tree, flat)


def forward_order(model: Any, *args: Any, method: Any = None, **kwargs: Any) -> list[list[str]]:
    """The kernel-holding submodules of a linen ``model`` in the order its forward pass calls them.

    Runs ``model.init`` abstractly (``jax.eval_shape``; nothing is computed) with a method
    interceptor and returns the module paths (``"block_0"``, ``"block_0/attn/query"``, …)
    grouped into units by the rules of the module docstring, one entry (a list of paths)
    per layer index: pass it as ``emergence_scale(params, order=...)``.

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         x = nn.Dense(8, name="z_first")(x)
        ...         return nn.Dense(2, name="a_last")(nn.relu(x))
        >>> forward_order(Net(), jnp.ones((1, 4)))
        [['z_first'], ['a_last']]
    """
    import flax.linen as nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen Module, got {type(model).__name__}")
    calls: list[Path] = []

    def record(next_fun, f_args, f_kwargs, context):
        path = tuple(context.module.path)
        if path not in calls:
            calls.append(path)
        return next_fun(*f_args, **f_kwargs)

    if method is not None and not callable(method) and not (isinstance(method, str) and hasattr(model, method)):
        raise ValueError(f"method must be None, a method of the model or its name, got {method!r}")
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, method=method, **kwargs))
    kernels = {p[1:-1] for p in flatten(variables) if p and p[0] == "params" and p[-1] == "kernel"}
    modules = [p for p in calls if p in kernels]
    modules += sorted(kernels - set(modules), key=path_name)  # kernels created outside a call (rare)
    return [[path_name(m) for m in unit] for unit in _auto_units(modules)]


# --------------------------------------------------------------------------- the measure


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _nodes(name: str, a: Any, node: str, batch: int | None) -> np.ndarray:
    if _checks.is_traced(a):
        raise TypeError(
            f"{name} must be a concrete array (emergence_measure runs eagerly, not under jax.jit), got a tracer"
        )
    if np.iscomplexobj(a):
        raise TypeError(f"{name} must be a real array, got a complex one (dtype {np.asarray(a).dtype})")
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real array, got {type(a).__name__}") from err
    if arr.ndim < 2:
        raise ValueError(f"{name} must have a batch axis and node axes (rank >= 2), got shape {arr.shape}")
    if batch is not None and arr.shape[0] != batch:
        raise ValueError(f"{name} has batch size {arr.shape[0]}, the first activation has {batch}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be finite, got NaN or inf entries (a NaN activation is neither active nor inactive)"
        )
    if node == "channel" and arr.ndim > 2:
        arr = arr.mean(axis=tuple(range(1, arr.ndim - 1)))
    return arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))


def emergence_measure(
    activations: Sequence[Any],
    *,
    threshold: float = 0.05,
    adjacency: Sequence[Any] | None = None,
    paths: str = "all",
    node: str = "unit",
    log: bool = False,
) -> np.ndarray:
    """The emergence measure ``E`` of a layered network on each example of a batch.

    ``E = Σ_{x inactive} Σ_{y active, x→y} |paths from y through active nodes|``
    (Li et al. 2023, arXiv 2311.17403). Layer ``l``'s nodes are the entries of
    ``activations[l]`` (layer 0 the input, the last one the output); a node is *active* on
    an example when its value exceeds ``threshold`` (0.05, the threshold of the follow-up
    paper). Pass post-nonlinearity values (or pre-ReLU values: for ``threshold ≥ 0`` the
    activity is the same).

    Computed by the backward recursion of the module docstring: in closed form from the
    counts of active nodes for fully connected layers (``adjacency=None``), by sparse
    matrix products otherwise; in float64, or as ``log E`` (natural log, ``-inf`` for
    ``E = 0``) with ``log=True``, which stays finite for any width and depth (``E`` itself
    grows like the product of the widths and overflows float64 beyond ~1e308).

    Args:
      activations: ``L + 1`` arrays ``(B, ...)`` with the same batch size ``B``.
      threshold: activity threshold.
      adjacency: ``None`` (every node of layer ``l`` feeds every node of layer ``l+1``) or
        ``L`` arrays ``(n_l, n_{l+1})``, nonzero where there is an edge.
      paths: ``"all"`` (ours, default): every path that starts at ``y`` and stays on
        active nodes counts, ``y`` alone included; ``"to_output"``: only the paths that
        reach the last layer. (The published text says "paths from y through active
        nodes"; which paths count is our reading.)
      node: what a node is for a feature map ``(B, H, W, C)`` (ours; the paper does not
        say): ``"unit"`` — every entry ``(h, w, c)`` is a node, and with
        ``adjacency=None`` consecutive layers are treated as fully connected (an upper
        bound of a convolution's edges); ``"channel"`` — each channel is a node whose value
        is its spatial mean. ``(B, d)`` activations are the same either way.
      log: return ``log E`` instead of ``E``.

    Returns:
      ``(B,)`` float64 NumPy array: ``E`` (or ``log E``) per example (``B = 0`` gives an
      empty array). Runs eagerly (not under ``jax.jit``): it is a diagnostic. Activations
      and adjacency must be finite (NaN activations are a ``ValueError``); ``E`` beyond
      float64's range is ``inf``, never NaN.

    Example:
      >>> import numpy as np
      >>> x = np.array([[1.0, 0.0]])            # input: one active, one inactive node
      >>> h = np.array([[1.0, 1.0, 0.0]])       # hidden: two active
      >>> y = np.array([[1.0]])                 # output: active
      >>> # inactive input → 2 active hidden nodes with 2 paths each (y alone, y→out); inactive hidden → out: 1
      >>> float(emergence_measure([x, h, y])[0])
      5.0
    """
    if isinstance(activations, (str, bytes)) or not isinstance(activations, Sequence) or len(activations) < 2:
        raise ValueError(
            "activations must be a sequence of at least two arrays (input, ..., output), got "
            f"{type(activations).__name__}"
            + (f" of length {len(activations)}" if isinstance(activations, Sequence) else "")
        )
    t = _checks.finite_float("threshold", threshold)
    if not isinstance(log, (bool, np.bool_)):
        raise TypeError(f"log must be a bool, got {log!r}")
    _checks.choice("paths", paths, ("all", "to_output"))
    _checks.choice("node", node, ("unit", "channel"))
    first = _nodes("activations[0]", activations[0], node, None)
    layers = [first] + [
        _nodes(f"activations[{i}]", a, node, first.shape[0]) for i, a in enumerate(activations) if i > 0
    ]
    active = [v > t for v in layers]
    adj = None if adjacency is None else _adjacency(adjacency, [v.shape[1] for v in layers])
    log_measure = lambda: _dense_log_measure(active, paths) if adj is None else _graph_log_measure(active, adj, paths)
    if log:
        return log_measure()
    with np.errstate(over="ignore", invalid="ignore"):
        out = _dense_measure(active, paths) if adj is None else _graph_measure(active, adj, paths)
    bad = np.isnan(out)
    if bad.any():  # inf · 0 after an overflow: the log form gives E itself (0, or inf when E overflows float64)
        with np.errstate(over="ignore"):
            out[bad] = np.exp(log_measure()[bad])
    return out


def _adjacency(adjacency: Sequence[Any], widths: list[int]) -> list[np.ndarray]:
    if isinstance(adjacency, (str, bytes)) or not isinstance(adjacency, Sequence):
        raise TypeError(f"adjacency must be None or a sequence of arrays, got {type(adjacency).__name__}")
    if len(adjacency) != len(widths) - 1:
        raise ValueError(
            f"adjacency must hold one matrix per pair of consecutive layers ({len(widths) - 1}), got {len(adjacency)}"
        )
    out = []
    for i, a in enumerate(adjacency):
        m = np.asarray(a)
        if np.iscomplexobj(m):
            raise TypeError(f"adjacency[{i}] must be a real array, got dtype {m.dtype}")
        if m.dtype == object or not np.all(np.isfinite(m.astype(np.float64, copy=False))):
            raise ValueError(f"adjacency[{i}] must be a finite numeric array, got NaN, inf or non-numbers")
        if m.shape != (widths[i], widths[i + 1]):
            raise ValueError(
                f"adjacency[{i}] must have shape {(widths[i], widths[i + 1])} (nodes of layers {i} and "
                f"{i + 1}), got {m.shape}"
            )
        out.append(m != 0)
    return out


def _dense_measure(active: list[np.ndarray], paths: str) -> np.ndarray:
    """Closed form in float64: ``Σ_l (n_l − k_l) k_{l+1} Q_{l+1}`` (exact below 2**53)."""
    counts = [a.sum(axis=1).astype(np.float64) for a in active]
    q, total = np.ones_like(counts[-1]), np.zeros_like(counts[-1])
    for l in range(len(active) - 2, -1, -1):
        reach = counts[l + 1] * q
        total += (active[l].shape[1] - counts[l]) * reach
        q = 1.0 + reach if paths == "all" else reach
    return total


def _graph_measure(active: list[np.ndarray], adjacency: list[np.ndarray], paths: str) -> np.ndarray:
    """General layered graph in float64: ``P_l = a_l ⊙ ([1 +] A_l P_{l+1})``."""
    p, total = active[-1].astype(np.float64), np.zeros(active[0].shape[0])
    for l in range(len(active) - 2, -1, -1):
        ap = p @ adjacency[l].T.astype(np.float64)
        total += np.where(active[l], 0.0, ap).sum(axis=1)
        p = np.where(active[l], 1.0 + ap if paths == "all" else ap, 0.0)
    return total


def _dense_log_measure(active: list[np.ndarray], paths: str) -> np.ndarray:
    """Closed form: ``log Σ_l (n_l − k_l) k_{l+1} Q_{l+1}``, ``Q_l = [1 +] k_{l+1} Q_{l+1}``."""
    counts = [a.sum(axis=1).astype(np.float64) for a in active]
    log_q = np.zeros_like(counts[-1])  # Q_L = 1
    terms = []
    for l in range(len(active) - 2, -1, -1):
        log_k_next = _log(counts[l + 1])
        terms.append(_log(active[l].shape[1] - counts[l]) + log_k_next + log_q)
        reach = log_k_next + log_q
        log_q = np.logaddexp(0.0, reach) if paths == "all" else reach
    return _logsumexp(np.stack(terms, axis=1), axis=1)


def _graph_log_measure(active: list[np.ndarray], adjacency: list[np.ndarray], paths: str) -> np.ndarray:
    """General layered graph: ``log P_l = log a_l + log([1 +] A_l P_{l+1})`` with per-row rescaling."""
    log_p = np.where(active[-1], 0.0, -np.inf)
    terms = []
    for l in range(len(active) - 2, -1, -1):
        m = np.max(log_p, axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        log_ap = _log(np.exp(log_p - m) @ adjacency[l].T.astype(np.float64)) + m  # log (A_l P_{l+1})
        terms.append(_logsumexp(np.where(active[l], -np.inf, log_ap), axis=1))
        log_p = np.where(active[l], np.logaddexp(0.0, log_ap) if paths == "all" else log_ap, -np.inf)
    return _logsumexp(np.stack(terms, axis=1), axis=1)
