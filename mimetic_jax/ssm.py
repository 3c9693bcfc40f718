r"""Mimetic initialization of selective state space models (Mamba) (Trockman et al. 2024).

Reference: A. Trockman, H. Harutyunyan, J. Z. Kolter, S. Kumar and S. Bhojanapalli,
"Mimetic Initialization Helps State Space Models Learn to Recall", arXiv:2410.11135.

Unrolled, a selective SSM is a linear attention with a decay mask:

.. math::

    y_i = \sum_{j \le i} (C_i \cdot B_j)\, \Big(\prod_{k=j+1}^{i} e^{\Delta_k A}\Big)\, \Delta_j x_j,
    \qquad B_t = W_B u_t,\; C_t = W_C u_t .

Mimetic init makes it *start* as causal linear attention, so that copying and
associative recall are easy to learn:

1. **Transition near identity** (:func:`a_log_init`, :func:`dt_bias_init`): ``A → 0``
   (``A_log`` very negative) so that ``e^{ΔA} ≈ 1`` and the state keeps what it saw over
   the whole sequence. The Δ bias sets ``softplus(bias) = Δ``; the input-dependent part
   of ``Δ`` is left as drawn, so at init ``Δ`` spreads around its target (measured at
   ``d_model`` 64: 1.00 ± 0.05 in Mamba-1, 1.04 ± 0.36 in Mamba-2,
   ``benchmarks/ssm_coupling.py``). :func:`min_retention` is the smallest ``Π e^{ΔA}``
   over ``length`` steps with ``Δ`` held at its target; the spread of ``Δ`` lowers the
   true least retention a little (over 64 tokens, least of 10 seeds: 0.27–0.29 where the
   constant-``Δ`` bound of the same draws says 0.31–0.34).
2. **B/C coupling** (:func:`bc_kernels`): ``W_C W_Bᵀ ≈ α Z + β I`` at rank ``N`` (the
   state size), so ``C_i · B_j ≈ β u_iᵀ u_j``: tokens attend to similar tokens. This is
   the query/key construction of :func:`mimetic_jax.query_key` with ``head_dim = N``
   (``C`` plays the query, ``B`` the key), reused, not re-derived.
3. **Identity short convolution** (:func:`identity_conv_init`, optional): only the
   current tap is one, so the block starts without the random local mixing of the
   default conv. In Mamba-1 the conv sits in front of ``x`` and of the ``B``/``C``
   inputs; in Mamba-2 it acts on ``x``, ``B`` and ``C`` themselves.

What is ours: the paper's exact values (the range of ``A_log``, the target ``Δ``, the
noise weights ``α``/``β``) are not available to us. The defaults here,
``A_log ~ U[−8, −4]``, ``Δ = 1``, ``α = β = 0.7`` (the attention values), and whether the
identity conv is on, are this project's, set by ``benchmarks/ssm_recall.py`` (see the
README). Mamba's own defaults, the baseline: ``A_log = log(1..N)`` (Mamba-1) or
``log U[1, 16]`` (Mamba-2), ``Δ = exp(U[log 1e-3, log 1e-1])``.

What the benchmark found (one H200, 2-layer LMs at d 64, 3–5 paired seeds; README tables):
a large, seed-stable gain on copying (Mamba-1 and -2) and on Mamba-2 MQAR; a sweep changing
one option at a time found nothing better than the defaults on both tasks (``A_log`` ranges
nearer Mamba's own and ``Δ = 0.1`` hurt most); the identity conv hurts copying, so it is off.
On Mamba-1 MQAR the learning rate matters as much as the init: at 1e-3 mimetic init solved it
in every seed (99.7 % against 19.4 %), at 3e-3 it stalled, and at d 128, lr 3e-3 the default
init solved it and mimetic init did not: sweep the learning rate.

The whole-model transform that finds Mamba blocks and applies these is
:func:`mimetic_jax.mimetic_ssm`; the reference blocks are in
:mod:`mimetic_jax.experiments.models.mamba`.

Whole-model transform
---------------------

:func:`mimetic_ssm` walks a Flax linen params dict, an ``nnx.State`` or an NNX module
(the same plumbing as :func:`mimetic_jax.mimetic_attention`, :mod:`mimetic_jax._tree`),
finds every Mamba block by its parameter names and writes the mimetic parts of
:mod:`mimetic_jax.ssm` into it, with the same shapes, dtypes and (for concrete arrays)
shardings. Everything else is left as it is.

=============  ==========================================================  ===================================
layout         children the block must have                                what is re-initialized
=============  ==========================================================  ===================================
``MAMBA1``     ``A_log (d_inner, N)``, ``x_proj/kernel (d_inner, R+2N)``,    ``A_log``; ``dt_proj/bias``;
               ``dt_proj/kernel (R, d_inner)``, ``dt_proj/bias``            ``x_proj`` columns ``R:R+N`` (B),
                                                                           ``R+N:R+2N`` (C); ``conv1d``
``MAMBA2``     ``A_log (H,)``, ``dt_bias (H,)``, ``in_proj/kernel``          ``A_log``; ``dt_bias``; ``in_proj``
               ``(d_model, 2 d_inner + 2GN + H)``, ``conv1d/kernel``         columns of B and C; ``conv1d``
               ``(d_conv, 1, d_inner + 2GN)``, ``out_proj/kernel``
               ``(d_inner, d_model)``
=============  ==========================================================  ===================================

These are the names of the official implementation and of Hugging Face ``transformers``
(``mixer.in_proj`` ...); other names go through ``layouts=[SSMLayout(...)]``, and
``include``/``exclude`` regular expressions select blocks by path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mimetic_jax import _checks
from mimetic_jax._sharding import constrain, run_auto, target_of
from mimetic_jax._tree import (
    Path,
    common_stack,
    config_int,
    flatten,
    map_stacked,
    match_parts,
    module_at,
    path_name,
    put_like,
    rebuild,
)
from mimetic_jax.attention import DISTRIBUTIONS, METHODS, Distribution, Method, query_key

__all__ = [
    "A_LOG_RANGE",
    "DELTA",
    "a_log_init",
    "bc_kernels",
    "dt_bias_init",
    "identity_conv_init",
    "min_retention",
    "MAMBA1",
    "MAMBA2",
    "SSMBlock",
    "SSMLayout",
    "find_ssm_blocks",
    "mimetic_ssm",
]

Array = jax.Array
Initializer = Callable[..., Array]

#: Default range of ``A_log`` for a near-identity transition (ours, see the module docstring).
A_LOG_RANGE = (-8.0, -4.0)
#: Default target step size ``Δ`` (ours).
DELTA = 1.0


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    low, high = _checks.finite_float(f"low ({name}[0])", low), _checks.finite_float(f"high ({name}[1])", high)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return low, high


def _positive(name: str, value: Any) -> float:
    value = _checks.finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def a_log_init(low: float = A_LOG_RANGE[0], high: float = A_LOG_RANGE[1]) -> Initializer:
    r"""Initializer for ``A_log`` (any shape): iid ``U[low, high]``, a near-identity transition.

    ``A = −exp(A_log)`` lies in ``[−e^{high}, −e^{low}]``; with step ``Δ`` the state
    keeps at least ``exp(−L Δ e^{high})`` of an input over ``L`` steps
    (:func:`min_retention`): 0.31 for ``high = −4``, ``Δ = 1``, ``L = 64``, with the step
    held at ``Δ``; in a model the input-dependent part of ``Δ`` lowers it a little.

    ``low <= high``, both finite, and at ``init`` both finite in the output dtype
    (``float16`` tops at 65504); the key must be a typed key or a raw ``uint32[2]``.

    Example:
      >>> import jax
      >>> a = a_log_init()(jax.random.key(0), (64, 8))
      >>> bool(a.min() >= -8.0) and bool(a.max() <= -4.0)
      True
    """
    low, high = _range("a_log_range", (low, high))

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        key = _checks.prng_key("key", key)
        dims = _checks.shape_of("shape", shape, range(0, 9))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("low", low, dtype)
        _checks.fits_dtype("high", high, dtype)
        ct = _checks.compute_dtype(dtype)
        out = jax.random.uniform(key, dims, ct, low, high).astype(dtype)
        return constrain(out, out_sharding)

    return init


def dt_bias_init(delta: float = DELTA) -> Initializer:
    r"""Initializer for the Δ bias (Mamba-1 ``dt_proj`` bias, Mamba-2 ``dt_bias``): constant ``softplus⁻¹(Δ)``.

    With the input-dependent part at zero, ``Δ = softplus(bias) = delta`` exactly.
    ``delta`` must be positive, at least the smallest normal number of the output dtype
    (float32: about ``1.2e-38``; a smaller ``delta`` rounds to 0 there, so ``softplus(bias)``
    would not give it back), and ``softplus⁻¹(delta)`` finite in it (``float16``:
    ``delta <= 65504``); otherwise a ``ValueError`` names ``delta``. The key is ignored
    (deterministic).

    Example:
      >>> import jax
      >>> b = dt_bias_init(1.0)(jax.random.key(0), (4,))
      >>> round(float(jax.nn.softplus(b[0])), 6)
      1.0
    """
    delta = _positive("delta", delta)
    value = delta + math.log(-math.expm1(-delta))

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        del key
        dims = _checks.shape_of("shape", shape, range(0, 9))
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        _checks.fits_dtype("delta", value, dtype, "softplus⁻¹(delta)")
        _checks.no_underflow("delta", delta, dtype)
        return constrain(jnp.full(dims, value, dtype), out_sharding)

    return init


def identity_conv_init() -> Initializer:
    """Initializer for a causal depthwise conv kernel ``(d_conv, 1, C)``: only the current tap is one.

    With left padding ``d_conv − 1`` (as in Mamba), tap ``d_conv − 1`` multiplies the
    current position, so the conv is the identity map (set its bias to zero).

    Example:
      >>> import jax
      >>> identity_conv_init()(jax.random.key(0), (4, 1, 3))[:, 0, 0].tolist()
      [0.0, 0.0, 0.0, 1.0]
    """

    def init(key: Array, shape: Any, dtype: Any = None, out_sharding: Any = None) -> Array:
        del key
        dims = _checks.shape_of("shape", shape, (3,))
        if dims[1] != 1:
            raise ValueError(f"shape must be a depthwise conv kernel (d_conv, 1, channels), got {dims}")
        dtype = _checks.float_dtype("dtype", jnp.float32 if dtype is None else dtype)
        out = jnp.zeros(dims, dtype).at[-1].set(1)
        return constrain(out, out_sharding)

    return init


def bc_kernels(
    key: Array,
    d_in: int,
    d_state: int,
    *,
    num_groups: int = 1,
    alpha: float = 0.7,
    beta: float = 0.7,
    distribution: Distribution = "normal",
    method: Method = "exact",
    dtype: Any = jnp.float32,
) -> tuple[Array, Array]:
    r"""B and C projection columns with ``W_C^g W_B^{gᵀ} ≈ α Z_g + β I`` at rank ``N``, per group.

    :func:`mimetic_jax.query_key` with ``num_heads = num_groups``, ``head_dim = d_state``:
    ``C`` is the query, ``B`` the key, so ``C_t · B_s = u_tᵀ W_C W_Bᵀ u_s`` is the
    best rank-``N`` approximation of ``u_tᵀ (αZ + βI) u_s`` (exact method).

    Args:
      key: a PRNG key.
      d_in: width of the input the projections read (Mamba-1: ``d_inner``, the conv
        output; Mamba-2: ``d_model``, the block input).
      d_state: state size ``N`` (at most ``d_in``).
      num_groups: groups ``G`` (Mamba-2 ``ngroups``; 1 for Mamba-1).
      alpha, beta: noise and identity weights.
      distribution, method, dtype: as in :func:`mimetic_jax.query_key`.

    Returns:
      ``(w_b, w_c)``, each ``(d_in, num_groups, d_state)``.

    Raises ``ValueError``/``TypeError`` naming the argument for a bad key, size (each at
    most ``2**31 − 1``, each array at most ``2**34`` elements, checked before anything is
    allocated), option or dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w_b, w_c = bc_kernels(jax.random.key(0), 128, 16)
      >>> p = w_c[:, 0] @ w_b[:, 0].T
      >>> bool(jnp.diagonal(p).mean() > 3 * jnp.abs(p - jnp.diag(jnp.diagonal(p))).mean())
      True
    """
    d_in = _checks.size("d_in", d_in)
    n = _checks.size("d_state", d_state)
    groups = _checks.size("num_groups", num_groups)
    _checks.not_wider("d_state", n, "the B/C projection input width d_in", d_in)
    _checks.elements("d_in × num_groups × d_state, d_in × d_in", d_in * groups * n, d_in * d_in)
    alpha, beta = _checks.finite_float("alpha", alpha), _checks.finite_float("beta", beta)
    key = _checks.prng_key("key", key)
    w_c, w_b = query_key(
        key, d_in, num_groups, n, alpha=alpha, beta=beta, distribution=distribution, method=method, dtype=dtype
    )
    return w_b, w_c


def min_retention(a_log: Array, delta: float | Array, length: int) -> Array:
    r"""Smallest ``Π_{t=1..L} e^{Δ A}`` over the entries of ``A = −exp(A_log)``: ``exp(−L Δ max e^{A_log})``.

    The fraction of an input the state still holds ``length`` steps later, for the
    fastest-decaying channel, with a constant step ``Δ`` (``delta`` may be an array of
    per-channel steps: its largest value is used). In a Mamba block ``Δ_t`` depends on the
    input around the bias's target, so the retention a real sequence sees can be lower:
    pass the steps observed (an array; the largest is used) for a bound that holds.
    ``a_log`` and ``delta`` must be finite and ``delta > 0``; under ``jax.jit`` (traced
    arrays) these value checks cannot run: call it eagerly to have them. ``length`` is any
    positive int (``10**12`` included).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(min_retention(jnp.array([-8.0, -4.0]), 1.0, 64)), 2)
      0.31
    """
    length = _checks.positive_int("length", length)

    def as_real(name: str, value: Any) -> Any:
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be a real number or array, got {value!r}")
        if isinstance(value, (list, tuple)):
            try:
                return np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise TypeError(f"{name} must be a real number or array, got {value!r}") from err
        return value

    a_log, delta = as_real("a_log", a_log), as_real("delta", delta)
    for name, value in (("a_log", a_log), ("delta", delta)):
        if not jnp.issubdtype(jnp.result_type(value), jnp.number) or jnp.issubdtype(
            jnp.result_type(value), jnp.complexfloating
        ):
            raise TypeError(f"{name} must be a real number or array, got dtype {jnp.result_type(value)}")
        if np.size(value) == 0:
            raise ValueError(f"{name} must not be empty, got shape {np.shape(value)}")
        _checks.finite_array(name, value)
    if not _checks.is_traced(delta) and not bool(np.all(np.asarray(delta) > 0)):
        raise ValueError(f"delta must be > 0 (the step size Δ), got {delta!r}")
    rate = jnp.max(jnp.exp(jnp.asarray(a_log, jnp.float32))) * jnp.max(jnp.asarray(delta, jnp.float32))
    return jnp.exp(-float(length) * rate)


# --------------------------------------------------------------------------- whole-model transform


@dataclasses.dataclass(frozen=True)
class SSMLayout:
    """Parameter names of one Mamba layout (``version`` 1 or 2).

    Mamba-1 needs ``x_proj`` and ``dt_proj``; Mamba-2 needs ``dt_bias`` and ``out_proj``
    (its width gives ``d_inner``). ``in_proj`` and ``conv1d`` are kernels' parents;
    ``a_log`` and ``dt_bias`` are leaves of the block.
    """

    version: int
    a_log: str = "A_log"
    in_proj: str = "in_proj"
    conv1d: str = "conv1d"
    out_proj: str = "out_proj"
    x_proj: str | None = None
    dt_proj: str | None = None
    dt_bias: str | None = None
    kernel: str = "kernel"
    bias: str = "bias"

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"SSMLayout version must be 1 or 2, got {self.version!r}")
        if self.version == 1 and (self.x_proj is None or self.dt_proj is None):
            raise ValueError(f"a Mamba-1 SSMLayout needs x_proj and dt_proj names: {self}")
        if self.version == 2 and self.dt_bias is None:
            raise ValueError(f"a Mamba-2 SSMLayout needs a dt_bias name: {self}")

    def required(self) -> tuple[Path, ...]:
        """Paths (relative to the block) that must exist for a match."""
        if self.version == 1:
            return ((self.a_log,), (self.x_proj, self.kernel), (self.dt_proj, self.kernel), (self.dt_proj, self.bias))
        return (
            (self.a_log,),
            (self.dt_bias,),
            (self.in_proj, self.kernel),
            (self.conv1d, self.kernel),
            (self.out_proj, self.kernel),
        )


MAMBA1 = SSMLayout(version=1, x_proj="x_proj", dt_proj="dt_proj")
MAMBA2 = SSMLayout(version=2, dt_bias="dt_bias")
DEFAULT_SSM_LAYOUTS: tuple[SSMLayout, ...] = (MAMBA1, MAMBA2)


@dataclasses.dataclass(frozen=True)
class SSMBlock:
    """One Mamba block found in a tree.

    ``d_in`` is the width the B/C projections read (Mamba-1 ``d_inner``, Mamba-2
    ``d_model``); ``bc_offset`` the first B column of the projection kernel (B: ``G·N``
    columns, then C: ``G·N``); ``stack`` the leading stacked axes.
    """

    path: Path
    layout: SSMLayout
    d_in: int
    d_state: int
    ngroups: int
    bc_offset: int
    stack: tuple[int, ...]

    @property
    def name(self) -> str:
        return path_name(self.path)

    @property
    def bc_kernel(self) -> Path:
        lay = self.layout
        return (lay.x_proj, lay.kernel) if lay.version == 1 else (lay.in_proj, lay.kernel)

    @property
    def dt(self) -> Path:
        lay = self.layout
        return (lay.dt_proj, lay.bias) if lay.version == 1 else (lay.dt_bias,)


#: Where a Mamba-2 block's group count ``G`` is read when ``ngroups=`` is not given: the module's
#: attribute (an NNX model), then the model config (transformers' ``Mamba2Config.n_groups``).
_GROUP_NAMES = ("ngroups", "n_groups", "num_groups")


def _groups_of(heads: int, gn: int) -> list[int]:
    """The group counts ``G`` a Mamba-2 block of ``heads`` heads and ``G·N = gn`` could have (``G`` divides both)."""
    return [g for g in range(1, min(heads, gn) + 1) if heads % g == 0 and gn % g == 0]


def _sizes(
    layout: SSMLayout, shapes: dict[Path, tuple[int, ...]], ngroups: int | None, where: str
) -> tuple[int, int, int, int]:
    """``(d_in, d_state, bc_offset, groups)`` from the block's shapes (stacked axes removed).

    A Mamba-2 block's shapes give ``G·N``, not ``G``: with ``ngroups`` unknown, the split is
    refused unless ``G = 1`` is the only count that divides both ``G·N`` and the heads.
    """

    def bad(msg: str) -> ValueError:
        listed = ", ".join(f"{'/'.join(p)} {s}" for p, s in shapes.items())
        return ValueError(f"SSM block {where!r}: inconsistent shapes ({listed}): {msg}")

    a_log = shapes[(layout.a_log,)]
    if layout.version == 1:
        x_proj, dt_kernel = shapes[(layout.x_proj, layout.kernel)], shapes[(layout.dt_proj, layout.kernel)]
        if len(a_log) != 2 or len(x_proj) != 2 or len(dt_kernel) != 2:
            raise bad("expected A_log (d_inner, N), x_proj (d_inner, R + 2N), dt_proj (R, d_inner)")
        d_inner, n = a_log
        rank = dt_kernel[0]
        if x_proj != (d_inner, rank + 2 * n) or dt_kernel[1] != d_inner:
            raise bad(
                f"x_proj must be (d_inner={d_inner}, dt_rank + 2 d_state = {rank + 2 * n}) and "
                f"dt_proj (dt_rank, {d_inner})"
            )
        return d_inner, n, rank, 1
    in_proj, conv, out = (
        shapes[(layout.in_proj, layout.kernel)],
        shapes[(layout.conv1d, layout.kernel)],
        shapes[(layout.out_proj, layout.kernel)],
    )
    if len(a_log) != 1 or len(in_proj) != 2 or len(conv) != 3 or len(out) != 2:
        raise bad("expected A_log (H,), in_proj (d_model, W), conv1d (d_conv, 1, C), out_proj (d_inner, d_model)")
    heads, d_inner, d_model = a_log[0], out[0], in_proj[0]
    two_gn = conv[2] - d_inner
    if ngroups is None and two_gn > 0 and two_gn % 2 == 0:
        candidates = _groups_of(heads, two_gn // 2)
        if len(candidates) > 1:
            raise ValueError(
                f"SSM block {where!r} (Mamba-2): its shapes give G·N = {two_gn // 2} with {heads} heads, which fits "
                f"ngroups G in {candidates}; pass ngroups= (mamba_ssm's default is 1) or config=model.config "
                f"(with {' / '.join(_GROUP_NAMES)})"
            )
        ngroups = 1
    ngroups = ngroups or 1
    if two_gn <= 0 or two_gn % (2 * ngroups):
        raise bad(f"conv1d channels {conv[2]} - d_inner {d_inner} must be 2 * ngroups({ngroups}) * d_state")
    if in_proj[1] != 2 * d_inner + two_gn + heads or shapes[(layout.dt_bias,)] != (heads,):
        raise bad(
            f"in_proj width must be 2 d_inner + 2 G N + H = {2 * d_inner + two_gn + heads} and dt_bias ({heads},)"
        )
    if heads % ngroups:
        raise bad(f"ngroups ({ngroups}) must divide the number of heads ({heads})")
    return d_model, two_gn // (2 * ngroups), 2 * d_inner, ngroups


def _find(
    flat: Mapping[Path, Any],
    layouts: Sequence[SSMLayout],
    include: str | None,
    exclude: str | None,
    ngroups: Any,
    stacked_axes: Any,
    *,
    tree: Any = None,
    config: Any = None,
) -> list[SSMBlock]:
    if ngroups is not None:
        ngroups = _checks.positive_int("ngroups", ngroups)
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    if isinstance(layouts, SSMLayout):
        raise TypeError(
            "layouts must be a sequence of SSMLayout, got one SSMLayout; wrap it in a list: layouts=[layout]"
        )
    if isinstance(layouts, (str, bytes, Mapping)) or not isinstance(layouts, Sequence) or not layouts:
        raise TypeError(f"layouts must be a non-empty sequence of SSMLayout, got {layouts!r}")
    for lay in layouts:
        if not isinstance(lay, SSMLayout):
            raise TypeError(f"layouts must hold SSMLayout objects, got {lay!r} of type {type(lay).__name__}")
    matched: dict[Path, tuple[SSMLayout, tuple[Path, ...]]] = {}
    for layout in layouts:
        for parent, paths in match_parts(flat, layout.required(), include, exclude, root=False)[0]:
            matched.setdefault(parent, (layout, paths))
    blocks = []
    for parent in sorted(matched, key=lambda p: tuple(str(x) for x in p)):
        layout, paths = matched[parent]
        name = path_name(parent)
        rel = layout.required()
        full = {r: tuple(jnp.shape(flat[p])) for r, p in zip(rel, paths, strict=True)}
        try:
            stack = common_stack(f"SSM block {name!r}", list(full.values()), stacked_axes)
            groups = ngroups
            if groups is None and layout.version == 2:
                module = module_at(tree, parent) if tree is not None else None
                groups = config_int(module, _GROUP_NAMES) if module is not None else None
                if groups is None and config is not None:
                    groups = config_int(config, _GROUP_NAMES)
            d_in, n, offset, groups = _sizes(layout, {r: s[stacked_axes:] for r, s in full.items()}, groups, name)
            if n > d_in:
                raise ValueError(
                    f"SSM block {name!r}: state size d_state={n} is larger than the B/C projection "
                    f"allows (its input width is {d_in}); the rank-N product W_C W_Bᵀ needs N <= {d_in}"
                )
        except _checks.BlockError:
            raise
        except ValueError as e:  # a block it cannot express: its path travels with the error
            raise _checks.BlockError(str(e), name) from None
        blocks.append(SSMBlock(parent, layout, d_in, n, groups, offset, stack))
    return blocks


def find_ssm_blocks(
    tree: Any,
    *,
    layouts: Sequence[SSMLayout] = DEFAULT_SSM_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    ngroups: int | None = None,
    stacked_axes: int = 0,
    config: Any = None,
) -> list[SSMBlock]:
    """List the Mamba blocks :func:`mimetic_ssm` would change, with their sizes.

    The arguments are those of :func:`mimetic_ssm`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from mimetic_jax.experiments.models import MambaLM
      >>> model = MambaLM(vocab_size=16, d_model=16, n_layer=1, d_state=8, version=2, headdim=8, ngroups=2)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
      >>> [(b.d_state, b.ngroups) for b in find_ssm_blocks(params, config={"n_groups": 2})]
      [(8, 2)]
    """
    return _find(flatten(tree), layouts, include, exclude, ngroups, stacked_axes, tree=tree, config=config)


def _new_leaves(block: SSMBlock, key: Array, old: dict[Path, Array], opts: dict[str, Any]) -> dict[Path, Array]:
    """The block's re-initialized leaves (unstacked), in their own dtypes."""
    lay = block.layout
    k_a, k_bc = jax.random.split(key)
    new: dict[Path, Array] = {}
    if opts["transition"]:
        a = old[(lay.a_log,)]
        new[(lay.a_log,)] = a_log_init(*opts["a_log_range"])(k_a, a.shape, a.dtype)
        dt = old[block.dt]
        new[block.dt] = dt_bias_init(opts["delta"])(None, dt.shape, dt.dtype)
    if opts["bc"]:
        w = old[block.bc_kernel]
        _checks.target_fits("alpha", opts["alpha"], "beta", opts["beta"], w.dtype)  # drawn in float32, written in w's
        w_b, w_c = bc_kernels(
            k_bc,
            block.d_in,
            block.d_state,
            num_groups=block.ngroups,
            alpha=opts["alpha"],
            beta=opts["beta"],
            distribution=opts["distribution"],
            method=opts["method"],
        )
        width = block.ngroups * block.d_state
        cols = jnp.concatenate([w_b.reshape(block.d_in, width), w_c.reshape(block.d_in, width)], axis=1)
        new[block.bc_kernel] = jax.lax.dynamic_update_slice_in_dim(w, cols.astype(w.dtype), block.bc_offset, axis=1)
    if opts["conv"]:
        kernel = old[(lay.conv1d, lay.kernel)]
        lo = _conv_channels_from(block, opts["conv"], kernel.shape[-1])
        ident = identity_conv_init()(None, (*kernel.shape[:-1], kernel.shape[-1] - lo), kernel.dtype)
        new[(lay.conv1d, lay.kernel)] = kernel.at[..., lo:].set(ident)
        if (lay.conv1d, lay.bias) in old:
            new[(lay.conv1d, lay.bias)] = old[(lay.conv1d, lay.bias)].at[..., lo:].set(0)
    return new


def _conv_channels_from(block: SSMBlock, conv: bool | str, channels: int) -> int:
    """The first conv channel the identity conv covers: all (``conv=True``) or Mamba-2's B/C channels."""
    if conv is True:
        return 0
    return channels - 2 * block.ngroups * block.d_state


def _writes_conv(block: SSMBlock, conv: bool | str) -> bool:
    """Whether ``conv`` changes this block's conv (``"bc"`` leaves Mamba-1's alone: its B/C are not conv channels)."""
    return conv is True or (conv == "bc" and block.layout.version == 2)


def _reinit_block(flat: dict[Path, Any], block: SSMBlock, key: Array, opts: dict[str, Any]) -> None:
    lay = block.layout
    rel = [(lay.a_log,), block.dt, block.bc_kernel]
    opts = {**opts, "conv": opts["conv"] if _writes_conv(block, opts["conv"]) else False}
    if opts["conv"]:
        if (*block.path, lay.conv1d, lay.kernel) not in flat:
            raise ValueError(f"SSM block {block.name!r} has no {lay.conv1d}/{lay.kernel}: conv=True needs one")
        rel += [(lay.conv1d, lay.kernel)] + (
            [(lay.conv1d, lay.bias)] if (*block.path, lay.conv1d, lay.bias) in flat else []
        )
    old = {r: flat[(*block.path, *r)] for r in rel}

    # Where the leaves live (concrete shardings, or an Explicit mesh's types): the block is computed
    # in Auto mode (auto_axes on an Explicit mesh, where a dynamic_update_slice of a replicated
    # update into a sharded kernel is a ShardingTypeError) and each new leaf placed like the old one.
    targets = {r: target_of(flat[(*block.path, *r)]) for r in rel}
    new = run_auto(
        lambda k, o: map_stacked(lambda kk, x: _new_leaves(block, kk, x, opts), k, block.stack, o), targets, key, old
    )
    for r, w in new.items():
        flat[(*block.path, *r)] = put_like(w, flat[(*block.path, *r)])


def mimetic_ssm(
    tree: Any,
    key: Array,
    *,
    transition: bool = True,
    bc: bool = True,
    conv: bool | str = False,
    a_log_range: tuple[float, float] = A_LOG_RANGE,
    delta: float = DELTA,
    alpha: float = 0.7,
    beta: float = 0.7,
    distribution: str = "normal",
    method: str = "exact",
    layouts: Sequence[SSMLayout] = DEFAULT_SSM_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    ngroups: int | None = None,
    stacked_axes: int = 0,
    config: Any = None,
    allow_empty: bool = False,
) -> Any:
    """Re-initialize every Mamba block of a model mimetically (Trockman et al. 2024).

    Parts (each can be switched off; see :mod:`mimetic_jax.ssm` for the math):

    * ``transition``: ``A_log ~ U[a_log_range]`` and the Δ bias ``softplus⁻¹(delta)``
      (:func:`~mimetic_jax.ssm.a_log_init`, :func:`~mimetic_jax.ssm.dt_bias_init`);
    * ``bc``: the B and C columns of the projection with ``W_C W_Bᵀ ≈ αZ + βI`` at
      rank ``N`` per group (:func:`~mimetic_jax.ssm.bc_kernels`);
    * ``conv``: identity short convolution, bias zero (:func:`~mimetic_jax.ssm.identity_conv_init`):
      ``True`` on every conv channel, ``"bc"`` on the channels that carry B and C only
      (Mamba-2, whose conv runs on ``x``, ``B`` and ``C`` separately; ``x`` keeps its conv),
      ``False`` (the default) leaves the conv as it is. Mamba-1's conv runs before ``x_proj``, in
      front of ``x`` and of B/C alike, so ``"bc"`` leaves a Mamba-1 block's conv unchanged. On
      Mamba-2 ``"bc"`` keeps the B/C coupling that the random conv destroys at init, but trained
      worse in our runs (10 paired seeds: copying −11.6 pp, MQAR −33.0 pp against ``False``;
      ``benchmarks/results/ssm_recall_m2bc_cpu.md``), hence the default.

    Block ``i`` (in sorted path order) draws from ``jax.random.fold_in(key, i)``.

    Args:
      tree: a linen params dict, an ``nnx.State`` or an ``nnx.Module``.
      key: a PRNG key.
      transition, bc: which parts to write.
      conv: ``"bc"``, ``True`` or ``False``, as above.
      a_log_range, delta, alpha, beta, distribution, method: the parts' options.
      layouts: the :class:`SSMLayout` s to look for (default Mamba-1 and Mamba-2 names).
      include, exclude: regular expressions on the block path.
      ngroups: Mamba-2 ``G`` (the kernels' shapes give ``G·N``, not ``G``). Default: the
        module's ``ngroups``/``n_groups`` (an NNX model), else ``config``'s; when neither
        says, ``G = 1`` where the shapes allow no other count, else a ``ValueError``.
      config: a model config to read ``n_groups`` (or ``ngroups``) from.
      stacked_axes: leading axes of stacked layers; each slice gets its own draw.
      allow_empty: return the tree unchanged when no block is found (else ``ValueError``).

    Returns:
      A new dict / ``nnx.State``, or the ``nnx.Module`` updated in place.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from mimetic_jax.experiments.models import MambaLM
      >>> model = MambaLM(vocab_size=16, d_model=32, n_layer=2, d_state=8)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
      >>> params = mimetic_ssm(params, jax.random.key(1))
      >>> bool(params["params"]["layers_0"]["mixer"]["A_log"].max() <= -4.0)
      True
    """
    _checks.choice("method", method, METHODS)
    if not (conv is True or conv is False or (isinstance(conv, str) and conv == "bc")):
        raise ValueError(f"conv must be True, False or 'bc', got {conv!r}")
    if not (transition or bc or conv):
        raise ValueError("nothing to do: transition, bc and conv are all False")
    if isinstance(a_log_range, (str, bytes)) or not hasattr(a_log_range, "__len__") or len(a_log_range) != 2:
        raise TypeError(f"a_log_range must be a pair (low, high) of real numbers, got {a_log_range!r}")
    opts: dict[str, Any] = dict(
        transition=bool(transition),
        bc=bool(bc),
        conv=conv,
        a_log_range=tuple(a_log_range),
        delta=delta,
        alpha=_checks.finite_float("alpha", alpha),
        beta=_checks.finite_float("beta", beta),
        distribution=distribution,
        method=method,
    )
    a_log_init(*opts["a_log_range"])  # validate eagerly, with the argument's name
    dt_bias_init(delta)
    _checks.choice("distribution", distribution, DISTRIBUTIONS)
    _checks.target_fits("alpha", opts["alpha"], "beta", opts["beta"], jnp.float32)
    flat = flatten(tree)
    blocks = _find(flat, layouts, include, exclude, ngroups, stacked_axes, tree=tree, config=config)
    if not blocks:
        if allow_empty:
            return tree
        names = sorted({str(p[-2]) for p in flat if len(p) >= 2})[:12]
        raise ValueError(
            "no SSM block found (looked for "
            + "; ".join(f"Mamba-{lay.version}: " + ", ".join("/".join(r) for r in lay.required()) for lay in layouts)
            + f"; the tree's layer names include {names}). Pass layouts=[SSMLayout(...)] for other names, "
            "or allow_empty=True."
        )
    key = _checks.prng_key("key", key)
    for i, block in enumerate(blocks):
        _reinit_block(flat, block, jax.random.fold_in(key, i), opts)
    return rebuild(tree, flat)
