"""mimetic_jax: mimetic and other structured weight initializers for JAX and Flax.

Public API (see the README for a table and the papers):

* :func:`query_key`, :func:`value_output` — joint samplers for mimetic self-attention
  (Trockman & Kolter, ICML 2023).
* :func:`qkv_init` — initializer for fused query/key/value kernels.
* :func:`mimetic_attention` — re-initialize every attention block of a linen/NNX model.
* :func:`emergence_scale`, :func:`emergence_init`, :func:`emergence_measure` — emergence-promoting
  layer scaling and the emergence measure (Li, George & Silva, 2024).
* :func:`sincos_1d`, :func:`sincos_2d` — fixed sin-cos position-embedding initializers.
"""

from mimetic_jax.attention import qkv_init, query_key, sincos_1d, sincos_2d, value_output
from mimetic_jax.emergence import (
    EmergenceLayer,
    emergence_factors,
    emergence_init,
    emergence_layers,
    emergence_measure,
    emergence_scale,
    forward_order,
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
    "EmergenceLayer",
    "emergence_factors",
    "emergence_init",
    "emergence_layers",
    "emergence_measure",
    "emergence_scale",
    "find_attention_blocks",
    "forward_order",
    "mimetic_attention",
    "qkv_init",
    "query_key",
    "sincos_1d",
    "sincos_2d",
    "value_output",
]
