"""Small convolutional reference models: ConvMixer (BatchNorm) and ConvNeXt (LayerNorm).

- :class:`ConvMixer` (Trockman & Kolter, "Patches Are All You Need?", 2022): a patch
  stem ``stem`` (conv, kernel = stride = ``patch_size``) → gelu → BatchNorm, then
  ``depth`` blocks ``block_{i}``: ``x + BN(gelu(depthwise(x)))`` with a depthwise
  ``k×k`` conv named ``depthwise`` (kernel ``(k, k, 1, width)``), then
  ``BN(gelu(pointwise(x)))`` with a ``1×1`` conv named ``pointwise``; global average
  pooling and a ``head``. Call with ``train=True`` (and ``mutable=["batch_stats"]``) to
  use and update batch statistics.
- :class:`ConvNeXtBlock` (Liu et al., "A ConvNet for the 2020s", 2022):
  ``x + γ·pwconv2(gelu(pwconv1(LN(dwconv(x)))))`` with a ``7×7`` depthwise ``dwconv``,
  LayerNorm ``norm``, the MLP ``pwconv1``/``pwconv2`` (``nn.Dense``) and layer scale
  ``gamma`` (init ``1e-6``).
- :class:`ConvNeXt`: stem (patchify conv + LayerNorm), stages of :class:`ConvNeXtBlock`
  separated by LayerNorm + stride-2 conv downsampling, average pooling, LayerNorm, head.
  ``ConvNeXt(1000, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3))`` is ConvNeXt-T.

The names are part of the interface: :mod:`mimetic_jax.conv` finds
``depthwise``/``dwconv`` kernels and first MLP layers (``pointwise``, ``pwconv1``) by them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = ConvMixer(num_classes=10, width=16, depth=2)
    >>> v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    >>> sorted(v), model.apply(v, jnp.zeros((3, 8, 8, 1))).shape
    (['batch_stats', 'params'], (3, 10))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ConvMixer", "ConvMixerBlock", "ConvNeXt", "ConvNeXtBlock", "DepthwiseConv"]

Dtype = Any


class DepthwiseConv(nn.Module):
    """``nn.Conv(C, kernel_size, feature_group_count=C, padding="SAME")`` computed as a sum of shifted products.

    Same parameters (``kernel`` ``(kh, kw, 1, C)`` with Flax's default ``lecun_normal``
    init, ``bias`` ``(C,)``) and the same output as the grouped ``nn.Conv`` (tested),
    but ``kh·kw`` elementwise multiply-adds instead of a grouped convolution, whose
    gradient is very slow on XLA:CPU (about 10× here) and under ``vmap``.
    """

    kernel_size: tuple[int, int] = (5, 5)
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, 1, c)).astype(self.dtype)
        # SAME padding as lax.conv: total k-1, the extra one at the end.
        x = jnp.pad(x.astype(self.dtype), ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
        h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
        # cast: sum() of arrays is typed as possibly its int start, 0 (kh, kw >= 1 here).
        y = cast(jax.Array, sum(x[:, i : i + h, j : j + w, :] * kernel[i, j, 0] for i in range(kh) for j in range(kw)))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,)).astype(self.dtype)
        return y


def _check_image(x: jax.Array, patch: tuple[int, ...]) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, H, W, C), got shape {x.shape}")
    if x.shape[1] % patch[0] or x.shape[2] % patch[1]:
        raise ValueError(f"patch_size={patch} must divide the image size {x.shape[1:3]}")


class ConvMixerBlock(nn.Module):
    """``x + BN(gelu(depthwise(x)))``, then ``BN(gelu(pointwise(x)))``."""

    kernel_size: tuple[int, int] = (5, 5)
    bn_momentum: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = x.shape[-1]
        bn: dict[str, Any] = dict(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype)
        y = DepthwiseConv(self.kernel_size, dtype=self.dtype, name="depthwise")(x)
        x = x + nn.BatchNorm(name="bn_depthwise", **bn)(nn.gelu(y))
        y = nn.Conv(width, (1, 1), dtype=self.dtype, name="pointwise")(x)
        return nn.BatchNorm(name="bn_pointwise", **bn)(nn.gelu(y))


class ConvMixer(nn.Module):
    """ConvMixer with BatchNorm (Trockman & Kolter 2022), scaled down.

    Attributes:
        num_classes: number of output logits.
        width: channels ``C``.
        depth: number of blocks.
        kernel_size: depthwise kernel ``(kh, kw)`` (an int means square).
        patch_size: stem kernel and stride ``(ph, pw)`` (an int means square).
        bn_momentum: BatchNorm running-average momentum.
        dtype: computation dtype (parameters stay float32).

    Call with images ``(N, H, W, C)`` and ``train``; returns logits ``(N, num_classes)``.
    """

    num_classes: int
    width: int = 64
    depth: int = 4
    kernel_size: int | Sequence[int] = 5
    patch_size: int | Sequence[int] = 1
    bn_momentum: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``(N, num_classes)`` of images ``x`` ``(N, H, W, C)``."""
        pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)
        patch, kernel = pair(self.patch_size), pair(self.kernel_size)
        if self.width <= 0 or self.depth < 0 or len(kernel) != 2 or len(patch) != 2 or min(kernel + patch) <= 0:
            raise ValueError(
                f"ConvMixer needs width > 0, depth >= 0 and two positive sizes each, got width={self.width}, "
                f"depth={self.depth}, kernel_size={kernel}, patch_size={patch}"
            )
        _check_image(x, patch)
        x = nn.Conv(self.width, patch, strides=patch, padding="VALID", dtype=self.dtype, name="stem")(
            x.astype(self.dtype)
        )
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype, name="stem_bn")(
            nn.gelu(x)
        )
        for i in range(self.depth):
            x = ConvMixerBlock(kernel, self.bn_momentum, self.dtype, name=f"block_{i}")(x, train)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x.mean(axis=(1, 2)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: ``x + γ·pwconv2(gelu(pwconv1(LN(dwconv(x)))))`` (LayerNorm, no BatchNorm)."""

    kernel_size: tuple[int, int] = (7, 7)
    mlp_ratio: int = 4
    layer_scale: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        dim = x.shape[-1]
        y = DepthwiseConv(self.kernel_size, dtype=self.dtype, name="dwconv")(x)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(y)
        y = nn.gelu(nn.Dense(self.mlp_ratio * dim, dtype=self.dtype, name="pwconv1")(y))
        y = nn.Dense(dim, dtype=self.dtype, name="pwconv2")(y)
        gamma = self.param("gamma", nn.initializers.constant(self.layer_scale), (dim,))
        return x + gamma.astype(self.dtype) * y


class ConvNeXt(nn.Module):
    """A ConvNeXt (Liu et al. 2022) with configurable stages.

    ConvNeXt-T is ``dims=(96, 192, 384, 768), depths=(3, 3, 9, 3)``.

    The stem is a ``patch_size`` patchify conv + LayerNorm; between stages, LayerNorm and
    a ``2×2`` stride-2 conv. ``train`` is accepted (and ignored) for a common call signature.
    """

    num_classes: int
    dims: Sequence[int] = (32, 64)
    depths: Sequence[int] = (2, 2)
    kernel_size: int = 7
    patch_size: int = 1
    layer_scale: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if len(self.dims) != len(self.depths) or not self.dims:
            raise ValueError(f"dims and depths must have the same non-zero length, got {self.dims} and {self.depths}")
        p = (int(self.patch_size),) * 2
        _check_image(x, p)
        x = nn.Conv(self.dims[0], p, strides=p, padding="VALID", dtype=self.dtype, name="stem")(x.astype(self.dtype))
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="stem_norm")(x)
        k = (int(self.kernel_size), int(self.kernel_size))
        for s, (dim, depth) in enumerate(zip(self.dims, self.depths, strict=True)):
            if s > 0:
                x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=f"down_{s}_norm")(x)
                x = nn.Conv(dim, (2, 2), strides=(2, 2), padding="SAME", dtype=self.dtype, name=f"down_{s}")(x)
            for b in range(depth):
                x = ConvNeXtBlock(k, layer_scale=self.layer_scale, dtype=self.dtype, name=f"stage_{s}_block_{b}")(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="final_norm")(x.mean(axis=(1, 2)))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
