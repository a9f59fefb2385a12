"""A decoder with extra heads: the wrapper that sentence-embedding models, stop classifiers and
value heads are built from, without giving up what the engine does with a plain Decoder.

The decoder's params sit under 'decoder' (llmjax.models.layout.DECODER_KEY) and each head's
under 'head_<name>', so `unembedding`, Hugging Face export and import (of the decoder part),
the runners and the sharding rules all work on the wrapper's params unchanged.
"""

from typing import Any

import flax.linen as nn
import jax

from llmjax.models.config import ModelConfig
from llmjax.models.layout import DECODER_KEY
from llmjax.models.layers import Projection
from llmjax.models.transformer import Decoder, hidden_to_logits, unembedding


class MlpHead(nn.Module):
  """Linear -> GELU -> Linear (`hidden` > 0) or one Linear, on the decoder's final hidden
  states: [B, L, D] -> [B, L, out_features]."""

  config: ModelConfig
  out_features: int
  hidden: int = 0

  @nn.compact
  def __call__(self, x_BxLxD):
    cfg = self.config
    if self.hidden:
      x_BxLxH = Projection(cfg, (cfg.d_model, self.hidden), ("embed", "mlp"), 1, True,
                           name="in")(x_BxLxD)
      x_BxLxD = jax.nn.gelu(x_BxLxH, approximate=False)
      in_features, in_axis = self.hidden, "mlp"
    else:
      in_features, in_axis = cfg.d_model, "embed"
    return Projection(cfg, (in_features, self.out_features), (in_axis, None), 1, True,
                      name="out")(x_BxLxD)


class DecoderWithHeads(nn.Module):
  """The Decoder plus named heads on its final hidden states.

  Attributes:
    config: the decoder's ModelConfig.
    heads: ((name, out_features, hidden), ...) — an MlpHead per entry (hidden 0: linear).
  `__call__` takes the Decoder's arguments (tokens or input embeddings, masks, ...) and
  returns (logits_BxLxV, {name: [B, L, out_features]}).
  """

  config: ModelConfig
  heads: tuple[tuple[str, int, int], ...] = ()

  @nn.compact
  def __call__(self, *args, **kwargs) -> tuple[Any, dict[str, Any]]:
    kwargs.pop("return_hidden", None)
    decoder = Decoder(self.config, name=DECODER_KEY)
    hidden_BxLxD = decoder(*args, return_hidden=True, **kwargs)
    logits_BxLxV = hidden_to_logits(hidden_BxLxD,
                                    unembedding(nn.unbox(decoder.variables["params"]), self.config))
    outputs = {name: MlpHead(self.config, out_features, hidden, name=f"head_{name}")(hidden_BxLxD)
               for name, out_features, hidden in self.heads}
    return nn.with_logical_constraint(logits_BxLxV, ("batch", "length", "vocab")), outputs
