"""Flax Linen models: `Decoder` configured by `ModelConfig`, and wrappers with extra heads."""

from llmjax.models.config import ModelConfig
from llmjax.models.heads import DecoderWithHeads, MlpHead
from llmjax.models.layers import PROBES
from llmjax.models.layout import decoder_params, params_layout, with_decoder_params
from llmjax.models.transformer import (Decoder, apply_with_probes, collect_probes,
                                       decoder_layout, token_embeddings, unembedding)

__all__ = ["PROBES", "Decoder", "DecoderWithHeads", "MlpHead", "ModelConfig",
           "apply_with_probes", "collect_probes", "decoder_layout", "decoder_params",
           "params_layout", "token_embeddings", "unembedding", "with_decoder_params"]
