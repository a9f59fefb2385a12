import jax.numpy as jnp
import numpy as np

from llmjax.numerics import argmax_first


def test_argmax_first_takes_the_first_of_tied_maxima_like_jnp_argmax():
  x = jnp.array([[1.0, 3.0, 3.0, 0.0], [-2.0, -1.0, -5.0, -1.0], [7.0, 7.0, 7.0, 7.0]])
  np.testing.assert_array_equal(argmax_first(x), [1, 1, 0])
  np.testing.assert_array_equal(argmax_first(x), jnp.argmax(x, axis=-1))
  batch = jnp.asarray(np.random.default_rng(0).integers(0, 4, (3, 5, 9)).astype(np.float32))
  np.testing.assert_array_equal(argmax_first(batch), jnp.argmax(batch, axis=-1))
