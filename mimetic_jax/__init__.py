"""mimetic_jax: mimetic and other structured weight initializers for JAX and Flax.

Public API (see the README for a table and the papers):

* :func:`query_key`, :func:`value_output` — joint samplers for mimetic self-attention
  (Trockman & Kolter, ICML 2023).
* :func:`qkv_init` — initializer for fused query/key/value kernels.
* :func:`mimetic_attention` — re-initialize every attention block of a linen/NNX model.
* :func:`sincos_1d`, :func:`sincos_2d` — fixed sin-cos position-embedding initializers.
* :func:`a_log_init`, :func:`dt_bias_init`, :func:`bc_kernels`, :func:`identity_conv_init`,
  :func:`min_retention` — mimetic state space model parts; :func:`mimetic_ssm` re-initializes
  every Mamba block of a model (Trockman et al. 2024).
"""

from mimetic_jax.attention import qkv_init, query_key, sincos_1d, sincos_2d, value_output
from mimetic_jax.ssm import a_log_init, bc_kernels, dt_bias_init, identity_conv_init, min_retention
from mimetic_jax.ssm_transform import MAMBA1, MAMBA2, SSMBlock, SSMLayout, find_ssm_blocks, mimetic_ssm
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
    "MAMBA1",
    "MAMBA2",
    "AttentionBlock",
    "AttentionLayout",
    "SSMBlock",
    "SSMLayout",
    "a_log_init",
    "bc_kernels",
    "dt_bias_init",
    "find_attention_blocks",
    "find_ssm_blocks",
    "identity_conv_init",
    "mimetic_attention",
    "mimetic_ssm",
    "min_retention",
    "qkv_init",
    "query_key",
    "sincos_1d",
    "sincos_2d",
    "value_output",
]
