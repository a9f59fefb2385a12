"""Next-token cross-entropy with a loss mask and an optional z-loss, computed in f32.

Shape letters: B batch, L length, V vocab.
"""

import jax
import jax.numpy as jnp

from llmjax.numerics import argmax_first


def cross_entropy(logits_BxLxV, targets_BxL, mask_BxL, z_loss: float = 0.0):
  """Mean masked next-token cross-entropy.

  Args:
    logits_BxLxV: unnormalised scores (any float dtype; upcast to f32 here).
    targets_BxL: int target ids.
    mask_BxL: 1 where the token counts (0 for padding, prompts, segment boundaries).
    z_loss: weight of the PaLM auxiliary loss z_loss * log(Z)^2, which keeps logits near zero.
  Returns:
    (loss, aux) where aux holds per-batch sums: 'nll_sum', 'correct_sum', 'weight_sum'.
  """
  logits = logits_BxLxV.astype(jnp.float32)
  mask = mask_BxL.astype(jnp.float32)
  log_z_BxL = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
  nll_BxL = log_z_BxL - target_logit_BxL
  weight_sum = jnp.maximum(mask.sum(), 1.0)
  nll_sum = (nll_BxL * mask).sum()
  loss = nll_sum / weight_sum
  if z_loss:
    loss = loss + z_loss * (jnp.square(log_z_BxL) * mask).sum() / weight_sum
  correct_sum = ((argmax_first(logits) == targets_BxL) * mask).sum()
  return loss, {"nll_sum": nll_sum, "correct_sum": correct_sum, "weight_sum": mask.sum()}
