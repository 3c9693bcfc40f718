"""Reference Flax models used by the command line, benchmarks, notebooks and tests."""

from __future__ import annotations

from mimetic_jax.experiments.models.convnets import ConvMixer, ConvMixerBlock, ConvNeXt, ConvNeXtBlock, DepthwiseConv
from mimetic_jax.experiments.models.decoder import DecoderLM
from mimetic_jax.experiments.models.mamba import Mamba1, Mamba2, MambaLM
from mimetic_jax.experiments.models.vit import EncoderBlock, ViT, query_key_products, value_output_products

__all__ = [
    "ConvMixer",
    "ConvMixerBlock",
    "ConvNeXt",
    "ConvNeXtBlock",
    "DecoderLM",
    "DepthwiseConv",
    "EncoderBlock",
    "Mamba1",
    "Mamba2",
    "MambaLM",
    "ViT",
    "query_key_products",
    "value_output_products",
]
