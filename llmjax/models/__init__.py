"""Flax Linen models: `Decoder` configured by `ModelConfig`."""

from llmjax.models.config import ModelConfig
from llmjax.models.transformer import Decoder, collect_probes, unembedding

__all__ = ["Decoder", "ModelConfig", "collect_probes", "unembedding"]
