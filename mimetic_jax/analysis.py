"""Structure analysis: the scores the mimetic papers look at, per layer and head, for any model.

:func:`analyze` finds the blocks with the package's finders
(:func:`~mimetic_jax.find_attention_blocks`, :func:`~mimetic_jax.find_depthwise_convs`,
:func:`~mimetic_jax.find_mlp_layers`, :func:`~mimetic_jax.find_ssm_blocks`) and measures,
in float64 on the host:

* **query/key** (Trockman & Kolter 2023), per head ``h``: ``P = W_q^h W_k^hᵀ`` (``d×d``);
  ``qk_diag_ratio = mean(diag P) / std(offdiag P)``. Mimetic init (``αZ + βI``) gives
  about ``β√d/α`` (≫ 1); an i.i.d. init gives ``N(0, 1)/√d``-sized values around 0.
* **value/out** (Trockman & Kolter 2023), per layer: ``P = Σ_h W_v^h W_o^h``; ``vo_diag_mean`` (its
  sign: mimetic init makes it ``−β``) and ``vo_diag_ratio`` (relative to the off-diagonal std).
* **depthwise filters** (Trockman, Willmott & Kolter 2023), per layer: the correlation matrix of the taps over
  channels (from :func:`~mimetic_jax.filter_covariance`); ``neighbour_corr`` = mean
  correlation of 4-neighbouring taps, ``far_corr`` = mean over taps at distance ≥ 2.
  Covariance-structured filters have ``neighbour_corr`` well above ``far_corr``; i.i.d.
  filters have both near 0 (``±1/√C``).
* **first MLP layer** (Trockman & Kolter, arXiv 2602.07156), per layer: ``mean`` and ``mean / std`` of the kernel.
* **SSM** (Trockman et al. 2024), per block: the per-step decay ``exp(Δ·A)`` with ``A = −exp(A_log)``
  and ``Δ = softplus(dt bias)`` (its min/median/max), the median half-life in steps,
  the smallest retention after ``length`` steps, and ``bc_diag_ratio`` of ``W_C W_Bᵀ``.

Stacked layers (``stacked_axes``) count as consecutive layers. The scores are ours as a
summary; the quantities are the ones the papers plot. :func:`plot_analysis` draws them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mimetic_jax import _checks
from mimetic_jax._kernels import KernelSite
from mimetic_jax._tree import Path, check_pattern, flatten, path_name, selected
from mimetic_jax.attention import DEFAULT_LAYOUTS, AttentionBlock, find_attention_blocks
from mimetic_jax.conv import DEPTHWISE_NAMES, find_depthwise_convs
from mimetic_jax.mlp import MLP_NAMES, find_mlp_layers
from mimetic_jax.ssm import DEFAULT_SSM_LAYOUTS, SSMBlock, find_ssm_blocks

__all__ = ["Analysis", "AttentionScores", "ConvScores", "MLPScores", "SSMScores", "analyze", "plot_analysis"]


@dataclasses.dataclass(frozen=True)
class AttentionScores:
    """One attention layer: per-head query/key scores and the layer's value/out scores (``nan``: not square)."""

    name: str
    qk_diag_ratio: tuple[float, ...]
    qk_diag_mean: tuple[float, ...]
    vo_diag_mean: float
    vo_diag_ratio: float


@dataclasses.dataclass(frozen=True)
class ConvScores:
    """One depthwise conv layer: tap correlations over channels."""

    name: str
    neighbour_corr: float
    far_corr: float


@dataclasses.dataclass(frozen=True)
class MLPScores:
    """One first MLP layer: the kernel's mean and mean/std."""

    name: str
    mean: float
    mean_over_std: float


@dataclasses.dataclass(frozen=True)
class SSMScores:
    """One SSM block: per-step decay of the state, retention, and the B/C structure."""

    name: str
    decay_min: float
    decay_median: float
    decay_max: float
    half_life_median: float
    retention_min: float
    bc_diag_ratio: float


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` found, one entry per layer in layer order. ``print`` it; ``to_dict()`` for JSON."""

    attention: tuple[AttentionScores, ...] = ()
    conv: tuple[ConvScores, ...] = ()
    mlp: tuple[MLPScores, ...] = ()
    ssm: tuple[SSMScores, ...] = ()
    length: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = []
        for a in self.attention:
            lines.append(
                f"attention {a.name}: qk diag/offdiag-std per head "
                f"{[round(r, 2) for r in a.qk_diag_ratio]}, vo diag mean {a.vo_diag_mean:+.3f} "
                f"(ratio {a.vo_diag_ratio:+.2f})"
            )
        lines += [
            f"depthwise {c.name}: neighbour corr {c.neighbour_corr:+.3f}, far corr {c.far_corr:+.3f}" for c in self.conv
        ]
        lines += [f"mlp {m.name}: mean {m.mean:+.4f} (mean/std {m.mean_over_std:+.3f})" for m in self.mlp]
        lines += [
            f"ssm {s.name}: decay/step min {s.decay_min:.4f} median {s.decay_median:.4f} max "
            f"{s.decay_max:.4f}, median half-life {s.half_life_median:.1f} steps, retention after "
            f"{self.length} steps >= {s.retention_min:.3g}, B/C diag ratio {s.bc_diag_ratio:.2f}"
            for s in self.ssm
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _np(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _diag_scores(p: np.ndarray) -> tuple[float, float]:
    """``(mean diag, mean diag / std offdiag)`` of a square matrix; ``nan`` if not square."""
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        return math.nan, math.nan
    diag = np.diag(p)
    off = p[~np.eye(p.shape[0], dtype=bool)]
    std = off.std()
    mean = float(diag.mean())
    return mean, float(mean / std) if std > 0 else math.nan


def _layers(x: Any, stack: tuple[int, ...]) -> np.ndarray:
    """``x`` with its stacked axes merged into one leading layer axis."""
    a = _np(x)
    return a.reshape((math.prod(stack), *a.shape[len(stack) :]))


def _slice_name(name: str, stack: tuple[int, ...], i: int) -> str:
    return name if not stack else f"{name}[{','.join(map(str, np.unravel_index(i, stack)))}]"


def _attention_kernels(block: AttentionBlock, flat: dict[Path, Any]) -> tuple[np.ndarray, ...]:
    """``(w_q (L,d,H,k), w_k (L,d_kv,H_kv,k), w_v (L,d_kv,H_kv,k), w_o (L,H,k,d_out))``."""
    lay, st = block.layout, block.stack
    h, g, k = block.num_heads, block.num_kv_heads, block.head_dim
    o = _layers(block.to_flax(flat[block.kernel_path(lay.out)]), st).reshape(-1, h, k, block.d_out)
    if lay.kv is not None:  # query + fused key/value, [k | v] or per key head [k_h v_h]
        q_name, kv_name, _ = lay.names
        q = _layers(block.to_flax(flat[block.kernel_path(q_name)]), st).reshape(-1, block.d_in, h, k)
        kv = _layers(block.to_flax(flat[block.kernel_path(kv_name)]), st)
        if kv.ndim == 5:
            return q, kv[:, :, 0], kv[:, :, 1], o
        dk = block.d_kv
        if lay.packing == "heads":
            per_head = kv.reshape(-1, dk, g, 2, k)
            return q, per_head[:, :, :, 0], per_head[:, :, :, 1], o
        kk, v = np.split(kv, [g * k], axis=2)
        return q, kk.reshape(-1, dk, g, k), v.reshape(-1, dk, g, k), o
    if lay.qkv is None:
        q, kk, v = (_layers(block.to_flax(flat[block.kernel_path(n)]), st) for n in lay.names[:3])
        return (q.reshape(-1, block.d_in, h, k), kk.reshape(-1, block.d_kv, g, k), v.reshape(-1, block.d_kv, g, k), o)
    fused = _layers(block.to_flax(flat[block.kernel_path(lay.qkv)]), st)
    if fused.ndim == 5:
        return fused[:, :, 0], fused[:, :, 1], fused[:, :, 2], o
    d = block.d_in
    if lay.packing == "heads":
        per_head = fused.reshape(-1, d, h, 3, k)
        return per_head[:, :, :, 0], per_head[:, :, :, 1], per_head[:, :, :, 2], o
    q, kk, v = np.split(fused, [h * k, (h + g) * k], axis=2)
    return q.reshape(-1, d, h, k), kk.reshape(-1, d, g, k), v.reshape(-1, d, g, k), o


def _attention_scores(block: AttentionBlock, flat: dict[Path, Any]) -> list[AttentionScores]:
    wq, wk, wv, wo = _attention_kernels(block, flat)
    group = block.num_heads // block.num_kv_heads
    out = []
    for i in range(wq.shape[0]):
        heads = [_diag_scores(wq[i, :, h] @ wk[i, :, h // group].T) for h in range(block.num_heads)]
        wv_full = np.repeat(wv[i], group, axis=1)  # value head of each query head
        vo_mean, vo_ratio = _diag_scores(np.einsum("dhk,hke->de", wv_full, wo[i]))
        out.append(
            AttentionScores(
                _slice_name(block.name, block.stack, i),
                tuple(r for _, r in heads),
                tuple(m for m, _ in heads),
                vo_mean,
                vo_ratio,
            )
        )
    return out


def _conv_scores(name: str, kernels: np.ndarray) -> ConvScores:
    """``kernels``: ``(*dims, 1, C)``."""
    dims, channels = kernels.shape[:-2], kernels.shape[-1]
    w = kernels.reshape(-1, channels)
    w = w - w.mean(axis=1, keepdims=True)
    cov = w @ w.T / max(channels - 1, 1)
    sd = np.sqrt(np.clip(np.diag(cov), 1e-30, None))
    corr = cov / sd[:, None] / sd[None, :]
    pos = np.stack(np.meshgrid(*[np.arange(n) for n in dims], indexing="ij"), -1).reshape(-1, len(dims))
    dist = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    near, far = np.isclose(dist, 1.0), dist >= 2.0
    return ConvScores(
        name, float(corr[near].mean()) if near.any() else math.nan, float(corr[far].mean()) if far.any() else math.nan
    )


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _ssm_scores(block: SSMBlock, flat: dict[Path, Any], length: int) -> list[SSMScores]:
    lay, st, p = block.layout, block.stack, block.path
    a_log = _layers(flat[(*p, lay.a_log)], st)
    dt = _softplus(_layers(flat[(*p, *block.dt)], st))
    w = _layers(flat[(*p, *block.bc_kernel)], st)
    gn = block.ngroups * block.d_state
    out = []
    for i in range(a_log.shape[0]):
        a = -np.exp(a_log[i])
        d = dt[i].reshape(dt[i].shape + (1,) * (a.ndim - dt[i].ndim))
        decay = np.exp(d * a).ravel()
        med = float(np.median(decay))
        half = math.log(0.5) / math.log(med) if 0 < med < 1 else (math.inf if med >= 1 else 0.0)
        w_b = w[i][:, block.bc_offset : block.bc_offset + gn]
        w_c = w[i][:, block.bc_offset + gn : block.bc_offset + 2 * gn]
        n = block.d_state
        ratios = [
            _diag_scores(w_c[:, j * n : (j + 1) * n] @ w_b[:, j * n : (j + 1) * n].T)[1] for j in range(block.ngroups)
        ]
        out.append(
            SSMScores(
                _slice_name(block.name, st, i),
                float(decay.min()),
                med,
                float(decay.max()),
                half,
                float(decay.min() ** length),
                float(np.mean(ratios)),
            )
        )
    return out


def _only(sites: list[KernelSite], include: str | None) -> list[KernelSite]:
    """The kernels of one kind that also pass the caller's ``include`` (on the kernel's path)."""
    return [site for site in sites if selected(path_name(site.path), include, None)]


# --------------------------------------------------------------------------- public


def analyze(
    tree: Any,
    *,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    stacked_axes: int = 0,
    depthwise_include: str | None = DEPTHWISE_NAMES,
    mlp_include: str | None = MLP_NAMES,
    ngroups: int | None = None,
    length: int = 64,
    layouts: Sequence[Any] = DEFAULT_LAYOUTS,
    ssm_layouts: Sequence[Any] = DEFAULT_SSM_LAYOUTS,
    include: str | None = None,
    exclude: str | None = None,
    config: Any = None,
) -> Analysis:
    """Structure scores of every attention, depthwise conv, first-MLP and SSM layer of a model.

    Eager, not jittable: the scores are host floats (numpy, float64), read from the arrays
    once per call; see the module docstring for the scores.

    Args:
      tree: a linen params dict, an ``nnx.State``, an ``nnx.Module``, an Equinox module or
        a plain nested dict (transformers' Flax ``params``).
      num_heads, num_kv_heads: head counts for flat (``Dense``) attention kernels.
      stacked_axes: leading axes of stacked layers (each slice is reported as its own layer).
      depthwise_include, mlp_include: path patterns of depthwise convs / first MLP layers
        (defaults of :func:`~mimetic_jax.mimetic_conv` / :func:`~mimetic_jax.mimetic_mlp`).
      ngroups: Mamba-2 ``G`` (default: read as :func:`~mimetic_jax.mimetic_ssm` does).
      length: sequence length of the ``retention_min`` score.
      layouts, ssm_layouts: the attention and SSM layouts to look for.
      config: a model config to read head counts and Mamba-2 groups from (as in
        :func:`~mimetic_jax.mimetic_attention` and :func:`~mimetic_jax.mimetic_ssm`).
      include, exclude: regular expressions (``re.search``) restricting the analysed layers,
        applied to every kind and matched like the single transforms do: against the block's
        path for attention/SSM (``"params/block_0/attn"``), the kernel's path for depthwise
        convs / first MLP layers (``"params/block_0/mlp_in/kernel"``).

    Returns:
      an :class:`Analysis`; a ``ValueError`` when no layer of any kind is found (or none is
      left by ``include``/``exclude``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from mimetic_jax import mimetic
      >>> from mimetic_jax.experiments.models import ViT
      >>> v = ViT(10, width=32, depth=1, num_heads=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> a = analyze(mimetic(v, jax.random.key(1), preset="vit"))
      >>> min(a.attention[0].qk_diag_ratio) > 2, a.attention[0].vo_diag_mean < 0
      (True, True)
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    stacked_axes = _checks.non_negative_int("stacked_axes", stacked_axes)
    for arg, pattern in (
        ("include", include),
        ("exclude", exclude),
        ("depthwise_include", depthwise_include),
        ("mlp_include", mlp_include),
    ):
        check_pattern(arg, pattern)
    flat = flatten(tree)
    attention = [
        s
        for b in find_attention_blocks(
            tree,
            layouts=layouts,
            include=include,
            exclude=exclude,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            stacked_axes=stacked_axes,
            config=config,
        )
        for s in _attention_scores(b, flat)
    ]
    conv = []
    for site in _only(
        find_depthwise_convs(tree, include=depthwise_include, exclude=exclude, stacked_axes=stacked_axes), include
    ):
        k = _layers(site.to_flax(flat[site.path]), site.stack)
        conv += [_conv_scores(_slice_name(path_name(site.path[:-1]), site.stack, i), k[i]) for i in range(len(k))]
    mlp = []
    for site in _only(find_mlp_layers(tree, include=mlp_include, exclude=exclude, stacked_axes=stacked_axes), include):
        k = _layers(flat[site.path], site.stack)
        for i in range(len(k)):
            std = k[i].std()
            mlp.append(
                MLPScores(
                    _slice_name(path_name(site.path[:-1]), site.stack, i),
                    float(k[i].mean()),
                    float(k[i].mean() / std) if std > 0 else math.nan,
                )
            )
    ssm = [
        s
        for b in find_ssm_blocks(
            tree,
            layouts=ssm_layouts,
            include=include,
            exclude=exclude,
            ngroups=ngroups,
            stacked_axes=stacked_axes,
            config=config,
        )
        for s in _ssm_scores(b, flat, length)
    ]
    if not (attention or conv or mlp or ssm):
        names = sorted({path_name(p[:-1]) for p in flat})[:12]
        raise ValueError(
            f"analyze found no attention block, depthwise conv, first MLP layer or SSM block "
            f"with include={include!r}, exclude={exclude!r} (the tree's layers include {names}); "
            f"pass layouts=/depthwise_include=/mlp_include= or change include/exclude"
        )
    return Analysis(tuple(attention), tuple(conv), tuple(mlp), tuple(ssm), length)


def plot_analysis(analysis: Analysis, *, title: str | None = None):
    """A matplotlib figure with one panel per score family :func:`analyze` found (layers on the x axis).

    matplotlib is not a dependency of the library: without it this raises an ``ImportError``
    naming it and the ``experiments`` extra, which brings it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from mimetic_jax.experiments.models import ViT
      >>> v = ViT(10, width=16, depth=2, num_heads=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> fig = plot_analysis(analyze(v))
      >>> len(fig.axes)
      3
    """
    if not isinstance(analysis, Analysis):
        raise TypeError(f"plot_analysis takes an Analysis (from analyze()), got {type(analysis).__name__}")
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, any backend
    except ImportError as err:
        raise ImportError(
            f"plot_analysis needs matplotlib, which is not installed ({err}); install it with "
            'pip install matplotlib, or pip install "mimetic_jax[experiments]"'
        ) from None

    panels: list[tuple[str, list[tuple[float, ...]], float | None]] = []  # (title, rows, reference line)
    if analysis.attention:
        panels.append(
            ("query/key: diag mean / offdiag std (per head)", [a.qk_diag_ratio for a in analysis.attention], 0.0)
        )
        panels.append(("value/out: diag mean of ΣW_v W_o", [(a.vo_diag_mean,) for a in analysis.attention], 0.0))
    if analysis.conv:
        panels.append(
            (
                "depthwise: neighbour tap corr (o) vs far (x)",
                [(c.neighbour_corr, c.far_corr) for c in analysis.conv],
                0.0,
            )
        )
    if analysis.mlp:
        panels.append(("first MLP layer: kernel mean", [(m.mean,) for m in analysis.mlp], 0.0))
    if analysis.ssm:
        panels.append(
            (
                "SSM: decay per step (min, median, max)",
                [(s.decay_min, s.decay_median, s.decay_max) for s in analysis.ssm],
                None,
            )
        )
    fig = Figure(figsize=(3.6 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, rows, ref) in zip(axes[0], panels, strict=True):
        for layer, values in enumerate(rows):
            markers = ["o", "x", "^"] if "corr" in name or "SSM" in name else ["o"] * len(values)
            for j, v in enumerate(values):
                ax.plot(
                    layer, v, markers[j % len(markers)], color=f"C{j % 10}" if len(values) <= 3 else "C0", alpha=0.8
                )
        if ref is not None:
            ax.axhline(ref, color="gray", lw=0.8)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("layer")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
