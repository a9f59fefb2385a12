"""The KV cache and the inputs of left-padded rows.

The cache is the decoder's 'cache' collection: per layer, keys and values [B, C, kv_heads,
head_dim] in the compute dtype; per model, the write index and each slot's segment id and
position [B, C] (segment 0 = empty or padding, never attended to).
"""

import jax
import jax.numpy as jnp

from llmjax.models import Decoder


def init_cache(model: Decoder, batch: int, length: int):
  """An empty cache of `length` slots for `batch` rows (zeros; traceable inside jit)."""
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  shapes = jax.eval_shape(lambda t: model.init(jax.random.PRNGKey(0), t, decode=True), tokens)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def left_padded_inputs(mask_BxP):
  """Positions (0 at each row's first real token) and segment ids (1 real, 0 padding) of
  left-padded rows, from their [B, P] 0/1 mask."""
  mask_BxP = mask_BxP.astype(jnp.int32)
  positions_BxP = jnp.maximum(jnp.cumsum(mask_BxP, axis=1) - 1, 0)
  return positions_BxP, mask_BxP
