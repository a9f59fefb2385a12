"""Linear interpolation of two models' parameters: theta(a) = (1 - a) theta_1 + a theta_2.

The CoT Encyclopedia's control by model merging (and model soups in general) interpolates two
fine-tunes of one base; the two trees must have the same structure, shapes and dtypes.
"""

import jax
import jax.numpy as jnp

from llmjax.errors import UserError


def interpolate(params_1, params_2, a: float):
  """(1 - a) params_1 + a params_2, leaf by leaf, in each leaf's dtype (a = 0: params_1)."""
  structure_1, structure_2 = jax.tree.structure(params_1), jax.tree.structure(params_2)
  if structure_1 != structure_2:
    raise UserError("model merging: the two models' parameter trees differ; merge two "
                    "fine-tunes of the same architecture")
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(params_1),
                          jax.tree.leaves(params_2)):
    if x.shape != y.shape:
      raise UserError(f"model merging: parameter {jax.tree_util.keystr(path)} has shape "
                      f"{x.shape} in the first model and {y.shape} in the second")
  return jax.tree.map(
      lambda x, y: ((1.0 - a) * x.astype(jnp.float32) + a * y.astype(jnp.float32)).astype(
          x.dtype), params_1, params_2)
