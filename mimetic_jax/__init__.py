"""mimetic_jax: mimetic and other structured weight initializers for JAX and Flax.

Public API (see the README for a table and the papers):

* :func:`query_key`, :func:`value_output` — joint samplers for mimetic self-attention
  (Trockman & Kolter, ICML 2023).
* :func:`qkv_init` — initializer for fused query/key/value kernels.
* :func:`mimetic_attention` — re-initialize every attention block of a model: linen, NNX,
  Equinox, or transformers' Flax models (:data:`DEFAULT_LAYOUTS`, :func:`heads_from_config`).
* :mod:`mimetic_jax.nn` — drop-in linen/NNX attention modules that start mimetic.
* :func:`emergence_scale`, :func:`emergence_init`, :func:`emergence_measure` — emergence-promoting
  layer scaling and the emergence measure (Li, George & Silva, 2024).
* :func:`sincos_1d`, :func:`sincos_2d` — fixed sin-cos position-embedding initializers.
* :func:`conv_filter_covariance`, :func:`depthwise_conv_init`, :func:`filter_covariance`,
  :func:`resize_covariance`, :func:`transfer_covariances` — covariance-structured depthwise
  filters (Trockman, Willmott & Kolter, ICLR 2023); :func:`mimetic_conv`,
  :func:`find_depthwise_convs`, :func:`filter_covariances`, :func:`freeze_mask` on whole models.
* :func:`mean_shift_init`, :func:`mimetic_mlp`, :func:`find_mlp_layers` — the mimetic MLP mean
  shift (Trockman & Kolter, "Mimetic Initialization of MLPs").
* :mod:`mimetic_jax.fuse` — FuseInit (Ghods et al. 2020): MSE-optimal fusion of two layers
  (:func:`dense_dense`, :func:`conv_conv`, … and their ``*_from_data`` fits, :func:`fusion_mse`,
  :func:`fuse_params` for whole models).
* :func:`a_log_init`, :func:`dt_bias_init`, :func:`bc_kernels`, :func:`identity_conv_init`,
  :func:`min_retention` — mimetic state space model parts; :func:`mimetic_ssm` re-initializes
  every Mamba block of a model (Trockman et al. 2024).
* :func:`mimetic` — every applicable scheme in one call, by preset (``"vit"``, ``"convmixer"``,
  ``"convnext"``, ``"mamba"``) and :class:`Rule` s, with a report (:func:`mimetic_plan`);
  :func:`analyze`, :func:`plot_analysis` — the structure scores of any model's weights.
"""

from mimetic_jax import (
    fuse,
    nn,
)
from mimetic_jax._kernels import KernelSite
from mimetic_jax.analysis import Analysis, AttentionScores, ConvScores, MLPScores, SSMScores, analyze, plot_analysis
from mimetic_jax.attention import (
    ALBERT,
    BLOOM,
    DEFAULT_LAYOUTS,
    DISTILBERT,
    EQUINOX,
    FLAX,
    FUSED,
    GPT2,
    GPT2_CROSS,
    HAIKU,
    HF,
    HF_BERT,
    HF_OUT_PROJ,
    HF_VIT,
    T5,
    TIMM,
    AttentionBlock,
    AttentionLayout,
    find_attention_blocks,
    heads_from_config,
    mimetic_attention,
    qkv_init,
    query_key,
    sincos_1d,
    sincos_2d,
    value_output,
)
from mimetic_jax.conv import (
    conv_filter_covariance,
    depthwise_conv_init,
    filter_covariance,
    filter_covariances,
    find_depthwise_convs,
    freeze_mask,
    mimetic_conv,
    resize_covariance,
    transfer_covariances,
)
from mimetic_jax.emergence import (
    EmergenceLayer,
    emergence_factors,
    emergence_init,
    emergence_layers,
    emergence_measure,
    emergence_scale,
    forward_order,
)
from mimetic_jax.fuse import (
    FusedConv,
    Moments,
    Pool,
    conv_conv,
    conv_conv_from_data,
    conv_dense,
    conv_dense_from_data,
    dense_dense,
    dense_dense_from_data,
    fold_batchnorm,
    fuse_params,
    fusion_mse,
    relu_moments,
)
from mimetic_jax.mlp import find_mlp_layers, mean_shift_init, mimetic_mlp
from mimetic_jax.presets import PRESETS, MimeticReport, ReportEntry, Rule, mimetic, mimetic_plan
from mimetic_jax.ssm import (
    MAMBA1,
    MAMBA2,
    SSMBlock,
    SSMLayout,
    a_log_init,
    bc_kernels,
    dt_bias_init,
    find_ssm_blocks,
    identity_conv_init,
    mimetic_ssm,
    min_retention,
)

__version__ = "0.1.0"

__all__ = [
    "a_log_init",
    "ALBERT",
    "Analysis",
    "analyze",
    "AttentionBlock",
    "AttentionLayout",
    "AttentionScores",
    "bc_kernels",
    "BLOOM",
    "conv_conv",
    "conv_conv_from_data",
    "conv_dense",
    "conv_dense_from_data",
    "conv_filter_covariance",
    "ConvScores",
    "DEFAULT_LAYOUTS",
    "dense_dense",
    "dense_dense_from_data",
    "depthwise_conv_init",
    "DISTILBERT",
    "dt_bias_init",
    "emergence_factors",
    "emergence_init",
    "emergence_layers",
    "emergence_measure",
    "emergence_scale",
    "EmergenceLayer",
    "EQUINOX",
    "HAIKU",
    "filter_covariance",
    "filter_covariances",
    "find_attention_blocks",
    "find_depthwise_convs",
    "find_mlp_layers",
    "find_ssm_blocks",
    "FLAX",
    "fold_batchnorm",
    "forward_order",
    "freeze_mask",
    "fuse",
    "fuse_params",
    "FUSED",
    "FusedConv",
    "fusion_mse",
    "GPT2",
    "GPT2_CROSS",
    "heads_from_config",
    "HF",
    "HF_BERT",
    "HF_OUT_PROJ",
    "HF_VIT",
    "identity_conv_init",
    "KernelSite",
    "MAMBA1",
    "MAMBA2",
    "mean_shift_init",
    "mimetic",
    "mimetic_attention",
    "mimetic_conv",
    "mimetic_mlp",
    "mimetic_plan",
    "mimetic_ssm",
    "MimeticReport",
    "min_retention",
    "MLPScores",
    "Moments",
    "nn",
    "plot_analysis",
    "Pool",
    "PRESETS",
    "qkv_init",
    "query_key",
    "relu_moments",
    "ReportEntry",
    "resize_covariance",
    "Rule",
    "sincos_1d",
    "sincos_2d",
    "SSMBlock",
    "SSMLayout",
    "SSMScores",
    "T5",
    "TIMM",
    "transfer_covariances",
    "value_output",
]
