"""mimetic_jax: mimetic and other structured weight initializers for JAX and Flax.

Public API (see the README for a table and the papers):

* :func:`query_key`, :func:`value_output` — joint samplers for mimetic self-attention
  (Trockman & Kolter, ICML 2023).
* :func:`qkv_init` — initializer for fused query/key/value kernels.
* :func:`mimetic_attention` — re-initialize every attention block of a linen/NNX model.
* :func:`sincos_1d`, :func:`sincos_2d` — fixed sin-cos position-embedding initializers.
* :mod:`mimetic_jax.fuse` — FuseInit (Ghods et al. 2020): MSE-optimal fusion of two layers
  (:func:`dense_dense`, :func:`conv_conv`, … and their ``*_from_data`` fits, :func:`fusion_mse`,
  :func:`fuse_params` for whole models).
"""

from mimetic_jax import fuse
from mimetic_jax.attention import qkv_init, query_key, sincos_1d, sincos_2d, value_output
from mimetic_jax.fuse import (
    FusedConv,
    Moments,
    conv_conv,
    conv_conv_from_data,
    conv_dense,
    conv_dense_from_data,
    dense_dense,
    dense_dense_from_data,
    fuse_params,
    fusion_mse,
    relu_moments,
)
from mimetic_jax.transforms import (
    FLAX,
    FUSED,
    GPT2,
    HF,
    AttentionBlock,
    AttentionLayout,
    find_attention_blocks,
    mimetic_attention,
)

__version__ = "0.1.0"

__all__ = [
    "FLAX",
    "FUSED",
    "GPT2",
    "HF",
    "AttentionBlock",
    "AttentionLayout",
    "FusedConv",
    "Moments",
    "conv_conv",
    "conv_conv_from_data",
    "conv_dense",
    "conv_dense_from_data",
    "dense_dense",
    "dense_dense_from_data",
    "find_attention_blocks",
    "fuse",
    "fuse_params",
    "fusion_mse",
    "mimetic_attention",
    "qkv_init",
    "query_key",
    "relu_moments",
    "sincos_1d",
    "sincos_2d",
    "value_output",
]
