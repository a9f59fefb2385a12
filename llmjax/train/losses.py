"""Next-token cross-entropy with a loss mask and an optional z-loss, computed in f32.

Shape letters: B batch, L length, V vocab.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

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
  _, sums = _loss_sums(logits_BxLxV.astype(jnp.float32), targets_BxL,
                       mask_BxL.astype(jnp.float32))
  return _objective(sums, z_loss) / jnp.maximum(sums["weight_sum"], 1.0), _public(sums)


def _loss_sums(logits_BxLxV, targets_BxL, mask_BxL):
  """log Z of every position and the masked sums (nll, log Z^2, correct, weight) of f32 logits:
  the whole batch's in `cross_entropy`, one chunk's in `chunked_cross_entropy`."""
  log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  return log_z_BxL, {
      "nll_sum": ((log_z_BxL - target_logit_BxL) * mask_BxL).sum(),
      "z_sum": (jnp.square(log_z_BxL) * mask_BxL).sum(),
      "correct_sum": ((argmax_first(logits_BxLxV) == targets_BxL) * mask_BxL).sum(),
      "weight_sum": mask_BxL.sum()}


def _objective(sums, z_loss):
  """The summed loss: nll, plus z_loss * log Z^2 when a z-loss is asked for."""
  return sums["nll_sum"] + z_loss * sums["z_sum"] if z_loss else sums["nll_sum"]


def _public(sums):
  return {k: sums[k] for k in ("nll_sum", "correct_sum", "weight_sum")}


def chunked_cross_entropy(hidden_BxLxD, unembed_DxV, targets_BxL, mask_BxL, chunk_len: int,
                          z_loss: float = 0.0):
  """`cross_entropy(hidden @ unembed, ...)` without materialising the [B, L, V] logits.

  The logits of `chunk_len` positions at a time are computed, reduced to the loss sums and, when
  differentiated, turned into their gradients in the same pass (a custom VJP: softmax minus
  one-hot is known as soon as the logits are), so memory holds [B, chunk_len, V] instead of
  several [B, L, V] buffers (f32 logits, their bf16 original, their gradient) and no logits are
  recomputed in the backward pass. With a 128k vocabulary those buffers are most of a
  pretraining step's memory.

  Args:
    hidden_BxLxD: final hidden states (the Decoder's `return_hidden=True` output).
    unembed_DxV: the unembedding matrix in the compute dtype (`models.unembedding`).
    targets_BxL, mask_BxL, z_loss: as in `cross_entropy`.
    chunk_len: positions per chunk; L is padded (with mask 0) to a multiple of it.
  Returns:
    (loss, aux) as `cross_entropy`; only `loss` is differentiable.
  """
  B, L, D = hidden_BxLxD.shape
  n = -(-L // chunk_len)
  pad = n * chunk_len - L

  def chunks(x):  # [B, L, ...] -> [n, B, chunk_len, ...], padded with zeros (mask 0)
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(B, n, chunk_len, *x.shape[2:]), 1, 0)

  h_NxBxCxD = chunks(hidden_BxLxD)
  objective, sums = _fused_loss_sums(h_NxBxCxD, unembed_DxV, chunks(targets_BxL),
                                     chunks(mask_BxL.astype(jnp.float32)), float(z_loss))
  weight_sum = jnp.maximum(sums["weight_sum"], 1.0)
  return objective / weight_sum, sums


def _chunk_statistics(h_BxCxD, unembed_DxV, targets_BxC, mask_BxC):
  """f32 logits, log-partition and loss sums of one chunk (a 2-D matmul, as in the Decoder)."""
  B, C, D = h_BxCxD.shape
  logits_BxCxV = (h_BxCxD.reshape(B * C, D) @ unembed_DxV).astype(jnp.float32).reshape(B, C, -1)
  return (logits_BxCxV, *_loss_sums(logits_BxCxV, targets_BxC, mask_BxC))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused_loss_sums(h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC, z_loss):
  """(nll_sum + z_loss * z_sum, sums) over chunks; the forward pass alone."""
  def body(total, xs):
    h_BxCxD, targets_BxC, mask_BxC = xs
    _, _, sums = _chunk_statistics(h_BxCxD, unembed_DxV, targets_BxC, mask_BxC)
    return jax.tree.map(jnp.add, total, sums), None
  total, _ = jax.lax.scan(body, _zero_sums(), (h_NxBxCxD, targets_NxBxC, mask_NxBxC))
  return _objective(total, z_loss), _public(total)


def _zero_sums():
  return {k: jnp.zeros((), jnp.float32) for k in ("nll_sum", "z_sum", "correct_sum",
                                                  "weight_sum")}


def _fused_forward(h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC, z_loss):
  """Forward pass that also takes d objective / d hidden and d objective / d unembed."""
  D, V = unembed_DxV.shape

  def body(carry, xs):
    total, grad_unembed_DxV = carry
    h_BxCxD, targets_BxC, mask_BxC = xs
    logits_BxCxV, log_z_BxC, sums = _chunk_statistics(h_BxCxD, unembed_DxV, targets_BxC,
                                                      mask_BxC)
    probs_BxCxV = jnp.exp(logits_BxCxV - log_z_BxC[..., None])
    # d(nll)/d(logits) = softmax - onehot; d(log Z^2)/d(logits) = 2 log Z softmax.
    scale_BxC = mask_BxC * (1.0 + 2.0 * z_loss * log_z_BxC)
    onehot_BxCxV = jax.nn.one_hot(targets_BxC, V, dtype=jnp.float32)
    dlogits_BxCxV = (probs_BxCxV * scale_BxC[..., None]
                     - onehot_BxCxV * mask_BxC[..., None]).astype(unembed_DxV.dtype)
    B, C = targets_BxC.shape
    dlogits_NxV = dlogits_BxCxV.reshape(B * C, V)
    grad_h_BxCxD = (dlogits_NxV @ unembed_DxV.T).reshape(B, C, D).astype(h_BxCxD.dtype)
    grad_unembed_DxV = grad_unembed_DxV + jnp.matmul(
        h_BxCxD.reshape(B * C, D).T, dlogits_NxV, preferred_element_type=jnp.float32)
    return (jax.tree.map(jnp.add, total, sums), grad_unembed_DxV), grad_h_BxCxD

  init = (_zero_sums(), jnp.zeros((D, V), jnp.float32))
  (total, grad_unembed_DxV), grad_h_NxBxCxD = jax.lax.scan(
      body, init, (h_NxBxCxD, targets_NxBxC, mask_NxBxC))
  out = (_objective(total, z_loss), _public(total))
  residuals = (grad_h_NxBxCxD, grad_unembed_DxV.astype(unembed_DxV.dtype), targets_NxBxC,
               mask_NxBxC)
  return out, residuals


def _fused_backward(z_loss, residuals, cotangents):
  grad_h, grad_unembed, targets, mask = residuals
  g = cotangents[0]  # the sums are metrics: their cotangents are ignored
  return ((g * grad_h).astype(grad_h.dtype), (g * grad_unembed).astype(grad_unembed.dtype),
          np.zeros(targets.shape, jax.dtypes.float0), jnp.zeros_like(mask))


_fused_loss_sums.defvjp(_fused_forward, _fused_backward)


def chunked_sequence_logps(hidden_BxLxD, unembed_DxV, targets_BxL, mask_BxL, chunk_len: int):
  """[B] summed log-probs of each row's masked targets under `hidden @ unembed`, without the
  [B, L, V] logits: `chunk_len` positions at a time, forward and backward (a custom VJP that
  recomputes one chunk's logits from the row cotangents), so memory holds [B, chunk_len, V].
  What DPO and its kin read per completion; with a 128k vocabulary the whole-sequence logits
  are most of a step's memory.

  Args:
    hidden_BxLxD: final hidden states (the Decoder's `return_hidden=True` output).
    unembed_DxV: the unembedding matrix in the compute dtype (`models.unembedding`).
    targets_BxL, mask_BxL: target ids and 1 where a target counts.
    chunk_len: positions per chunk; L is padded (with mask 0) to a multiple of it.
  """
  h_NxBxCxD, targets_NxBxC, mask_NxBxC = _position_chunks(
      chunk_len, hidden_BxLxD, targets_BxL, mask_BxL.astype(jnp.float32))
  return _row_logps(h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC)


def chunked_token_kl(hidden_BxLxD, unembed_DxV, ref_hidden_BxLxD, ref_unembed_DxV, mask_BxL,
                     chunk_len: int):
  """Summed KL(policy || reference) over the masked positions, a metric (no gradient), chunk
  by chunk as `chunked_sequence_logps`."""
  h, ref_h, mask = _position_chunks(chunk_len, hidden_BxLxD, ref_hidden_BxLxD,
                                    mask_BxL.astype(jnp.float32))

  def body(total, xs):
    h_BxCxD, ref_BxCxD, mask_BxC = xs
    logp = jax.nn.log_softmax(_chunk_logits(h_BxCxD, unembed_DxV))
    logq = jax.nn.log_softmax(_chunk_logits(ref_BxCxD, ref_unembed_DxV))
    return total + ((jnp.exp(logp) * (logp - logq)).sum(-1) * mask_BxC).sum(), None
  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (h, ref_h, mask))
  return jax.lax.stop_gradient(total)


def _position_chunks(chunk_len: int, *arrays):
  """Each [B, L, ...] array as [n, B, chunk_len, ...], L padded with zeros to n * chunk_len."""
  B, L = arrays[0].shape[:2]
  n = -(-L // chunk_len)

  def chunks(x):
    x = jnp.pad(x, [(0, 0), (0, n * chunk_len - L)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(B, n, chunk_len, *x.shape[2:]), 1, 0)
  return tuple(chunks(x) for x in arrays)


def _chunk_logits(h_BxCxD, unembed_DxV):
  B, C, D = h_BxCxD.shape
  return (h_BxCxD.reshape(B * C, D) @ unembed_DxV).astype(jnp.float32).reshape(B, C, -1)


def _chunk_token_logps(h_BxCxD, unembed_DxV, targets_BxC):
  """f32 logits of one chunk and the log-probs of its targets."""
  logits_BxCxV = _chunk_logits(h_BxCxD, unembed_DxV)
  target_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  return logits_BxCxV, target_BxC - jax.nn.logsumexp(logits_BxCxV, axis=-1)


@jax.custom_vjp
def _row_logps(h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC):
  return _row_logps_forward(h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC)[0]


def _row_logps_forward(h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC):
  def body(total_B, xs):
    h_BxCxD, targets_BxC, mask_BxC = xs
    _, logps_BxC = _chunk_token_logps(h_BxCxD, unembed_DxV, targets_BxC)
    return total_B + (logps_BxC * mask_BxC).sum(-1), None
  total_B, _ = jax.lax.scan(body, jnp.zeros(h_NxBxCxD.shape[1], jnp.float32),
                            (h_NxBxCxD, targets_NxBxC, mask_NxBxC))
  return total_B, (h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC)


def _row_logps_backward(residuals, grad_B):
  """d logps_b / d logits = mask * (onehot - softmax), scaled by row b's cotangent; each
  chunk's logits are recomputed, turned into the hidden states' and unembedding's gradients."""
  h_NxBxCxD, unembed_DxV, targets_NxBxC, mask_NxBxC = residuals
  _, B, C, D = h_NxBxCxD.shape
  V = unembed_DxV.shape[1]

  def body(grad_unembed_DxV, xs):
    h_BxCxD, targets_BxC, mask_BxC = xs
    logits_BxCxV, _ = _chunk_token_logps(h_BxCxD, unembed_DxV, targets_BxC)
    probs_BxCxV = jax.nn.softmax(logits_BxCxV, axis=-1)
    onehot_BxCxV = jax.nn.one_hot(targets_BxC, V, dtype=jnp.float32)
    scale_BxC = grad_B[:, None] * mask_BxC
    dlogits_NxV = ((onehot_BxCxV - probs_BxCxV) * scale_BxC[..., None]).astype(
        unembed_DxV.dtype).reshape(B * C, V)
    grad_h_BxCxD = (dlogits_NxV @ unembed_DxV.T).reshape(B, C, D).astype(h_BxCxD.dtype)
    grad_unembed_DxV = grad_unembed_DxV + jnp.matmul(
        h_BxCxD.reshape(B * C, D).T, dlogits_NxV, preferred_element_type=jnp.float32)
    return grad_unembed_DxV, grad_h_BxCxD

  grad_unembed_DxV, grad_h_NxBxCxD = jax.lax.scan(
      body, jnp.zeros((D, V), jnp.float32), (h_NxBxCxD, targets_NxBxC, mask_NxBxC))
  return (grad_h_NxBxCxD, grad_unembed_DxV.astype(unembed_DxV.dtype),
          np.zeros(targets_NxBxC.shape, jax.dtypes.float0), jnp.zeros_like(mask_NxBxC))


_row_logps.defvjp(_row_logps_forward, _row_logps_backward)
