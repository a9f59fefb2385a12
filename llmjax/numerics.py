"""Array helpers shared by training, evaluation and decoding, written in the form XLA:CPU runs
fastest."""

import jax.numpy as jnp


def argmax_first(x_BxV):
  """Index of the first maximum along the last axis, as jnp.argmax returns it. XLA:CPU runs
  jnp.argmax (a variadic reduction) about 3x slower than this max, compare, min (measured on
  [16, 32000])."""
  max_Bx1 = jnp.max(x_BxV, axis=-1, keepdims=True)
  index_V = jnp.arange(x_BxV.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x_BxV == max_Bx1, index_V, x_BxV.shape[-1]), axis=-1)
