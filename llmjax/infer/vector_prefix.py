"""Greedy decoding of text from a vector: a decoder that reads one input vector in place of a
token embedding (a sentence embedding), then its own tokens, with a KV cache.

  decoder = VectorPrefixDecoder(model_config, max_new_tokens=50, eos_id=tokenizer.eos_id)
  tokens_BxT, lengths_B = decoder(params, z_BxD)

Row b's text is tokens_BxT[b, :lengths_B[b]] (its EOS excluded; a row that never reached EOS
has length T). One compiled program per batch size, taking the params as an argument.
"""

import jax
import jax.numpy as jnp

from llmjax.infer.cache import init_cache
from llmjax.models import Decoder, ModelConfig
from llmjax.models.layout import decoder_params


class VectorPrefixDecoder:
  """Greedy decoding from a one-vector prefix (module docstring)."""

  def __init__(self, config: ModelConfig, max_new_tokens: int, eos_id: int, pad_id: int = 0):
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens = {max_new_tokens}: expected at least 1")
    self.model = Decoder(config)
    self.max_new_tokens, self.eos_id, self.pad_id = max_new_tokens, eos_id, pad_id
    self._compiled = {}

  def first_token(self, params, z_BxD):
    """The greedy first token of each row [B] (one position through the decoder)."""
    return self._program(z_BxD.shape[0], 1)(decoder_params(params), z_BxD)[0][:, 0]

  def __call__(self, params, z_BxD, max_new_tokens: int | None = None):
    """(tokens [B, T], lengths [B]) of the greedy continuation of each vector."""
    T = max_new_tokens or self.max_new_tokens
    return self._program(z_BxD.shape[0], T)(decoder_params(params), z_BxD)

  def _program(self, B: int, T: int):
    if (B, T) not in self._compiled:
      self._compiled[(B, T)] = jax.jit(self._build(B, T))
    return self._compiled[(B, T)]

  def _build(self, B: int, T: int):
    model, eos, pad = self.model, self.eos_id, self.pad_id

    def run(params, z_BxD):
      cache = init_cache(model, B, T)
      logits_Bx1xV, variables = model.apply(
          {"params": params, "cache": cache}, None, jnp.zeros((B, 1), jnp.int32),
          embeddings_BxLxD=z_BxD[:, None, :], decode=True, mutable=["cache"])
      first_B = jnp.argmax(logits_Bx1xV[:, 0], axis=-1).astype(jnp.int32)

      def step(carry, position):
        cache, token_B, done_B = carry
        logits_Bx1xV, variables = model.apply(
            {"params": params, "cache": cache}, token_B[:, None],
            jnp.full((B, 1), position, jnp.int32), decode=True, mutable=["cache"])
        next_B = jnp.argmax(logits_Bx1xV[:, 0], axis=-1).astype(jnp.int32)
        done_B = done_B | (token_B == eos)
        next_B = jnp.where(done_B, pad, next_B)
        return (variables["cache"], next_B, done_B), next_B

      carry = (variables["cache"], first_B, jnp.zeros((B,), bool))
      _, rest_TxB = jax.lax.scan(step, carry, jnp.arange(1, T, dtype=jnp.int32))
      tokens_BxT = jnp.concatenate([first_B[:, None], rest_TxB.T], axis=1)
      is_eos_BxT = tokens_BxT == eos
      lengths_B = jnp.where(is_eos_BxT.any(axis=1), jnp.argmax(is_eos_BxT, axis=1), T)
      return tokens_BxT, lengths_B

    return run
