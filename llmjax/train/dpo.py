"""Preference training on the engine's loop: the pairwise objective for any PreferenceLoss.

Shape letters: B pairs, L length, V vocab.

A batch holds both completions of each pair (llmjax.data.examples.pair_batch: the LM batch keys
prefixed 'chosen_' and 'rejected_', and 'pair_index'); one forward pass runs the 2B sequences.
The reference's log-probs come from frozen reference params passed to every step (`frozen`),
or were computed once before training and ride in the batch ('ref_chosen_logps',
'ref_rejected_logps': `reference_logprobs`), so the reference need not stay in memory.

Metrics, per pair unless said otherwise:
  reward_accuracy    share of pairs whose chosen reward beats the rejected one
  reward_margin      chosen minus rejected reward; chosen_reward, rejected_reward
  chosen_logps, rejected_logps      the policy's summed log-probs
  chosen_drift, rejected_drift      log pi - log pi_ref: with the reference at the initial
                     params (the default) the drift from step 0; a falling chosen_drift while
                     the margin grows is likelihood displacement. A reference-free loss
                     (simpo, orpo, reference_free) reports it when the initial params'
                     log-probs ride in the batch as precomputed ones (the loss ignores them)
  kl                 per completion token, KL(pi || pi_ref) of the next-token distributions
                     (only with frozen reference params: precomputed log-probs hold no logits)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llmjax.data.batches import BATCH_KEYS
from llmjax.data.examples import pair_batch
from llmjax.models import unembedding
from llmjax.train.losses import chunked_sequence_logps, chunked_token_kl
from llmjax.train.objective import BatchSpec, Objective
from llmjax.train.preference import PreferenceLoss, running_mean_update
from llmjax.train.step import sum_over_micro_batches

SIDES = ("chosen", "rejected")
PAIR_KEYS = ("pair_index",) + tuple(f"{side}_{key}" for side in SIDES for key in BATCH_KEYS)
REFERENCE_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


def pair_batch_spec(precomputed_reference: bool) -> BatchSpec:
  """Pairs split along B; the loss is a sum over pairs, normalised by their number."""
  keys = PAIR_KEYS + (REFERENCE_KEYS if precomputed_reference else ())
  return BatchSpec(keys=keys, weight_key=None,
                   token_keys=("chosen_loss_mask", "rejected_loss_mask"))


def both_sides(batch, key: str) -> jax.Array:
  """[2B, ...]: the chosen rows, then the rejected ones."""
  return jnp.concatenate([batch[f"chosen_{key}"], batch[f"rejected_{key}"]], axis=0)


def sequence_logps(model: nn.Module, params, batch, rng=None, chunk_len: int = 0):
  """(outputs, summed completion log-probs [2B], completion tokens [2B]); `outputs` are the
  f32 logits [2B, L, V], or with `chunk_len` (0 < it < L) the hidden states and unembedding
  from which the log-probs were taken `chunk_len` positions at a time (the [2B, L, V] logits
  are never held: llmjax.train.losses.chunked_sequence_logps)."""
  deterministic = rng is None or model.config.dropout == 0.0
  inputs = both_sides(batch, "inputs")
  chunked = 0 < chunk_len < inputs.shape[1]
  out = model.apply({"params": params}, inputs, both_sides(batch, "positions"),
                    both_sides(batch, "segment_ids"), deterministic=deterministic,
                    rngs=None if deterministic else {"dropout": rng}, return_hidden=chunked)
  mask = both_sides(batch, "loss_mask").astype(jnp.float32)
  targets = both_sides(batch, "targets")
  if chunked:
    unembed = unembedding(params, model.config)
    return (out, unembed), chunked_sequence_logps(out, unembed, targets, mask, chunk_len), (
        mask.sum(-1))
  logits = out.astype(jnp.float32)
  token_logps = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  return logits, (token_logps * mask).sum(-1), mask.sum(-1)


def token_kl_sum(outputs, ref_outputs, mask_2BxL, chunk_len: int = 0):
  """Summed per-token KL(policy || reference) over the masked positions, from two
  `sequence_logps` outputs (logits, or hidden states and unembedding when chunked)."""
  if isinstance(outputs, tuple):
    return chunked_token_kl(*outputs, *ref_outputs, mask_2BxL, chunk_len)
  kl_2BxL = (jax.nn.softmax(outputs) * (jax.nn.log_softmax(outputs)
                                        - jax.nn.log_softmax(ref_outputs))).sum(-1)
  return (kl_2BxL * mask_2BxL).sum()


def params_fingerprint(params) -> str:
  """A digest of params' values (per leaf: path, shape, sum and sum of squares), to tell
  whether cached log-probs were computed from these params."""
  import hashlib
  import json
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  stats = []
  for path, x in leaves:
    x = jnp.asarray(x, jnp.float32)
    stats.append([jax.tree_util.keystr(path), list(x.shape), float(jnp.sum(x)),
                  float(jnp.sum(jnp.square(x)))])
  return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def needs_reference_params(loss: PreferenceLoss, precomputed_reference: bool) -> bool:
  """Whether each step needs the reference's params (as `frozen`)."""
  return loss.uses_reference and not precomputed_reference


def preference_objective(model: nn.Module, loss: PreferenceLoss,
                         precomputed_reference: bool = False,
                         loss_chunk_len: int = 0) -> Objective:
  """The pairwise objective of `loss` for `model` (a Decoder). `frozen` holds the reference's
  params when `needs_reference_params`; else it is not read. `loss_chunk_len` (train's): the
  log-probs (and the KL metric) `loss_chunk_len` positions at a time, never the whole
  sequences' logits."""
  carries = loss.loss_type == "bco_pair"

  def loss_fn(params, batch, rng, frozen, carry=None):
    logits, logps, counts = sequence_logps(model, params, batch, rng, loss_chunk_len)
    ref_logits = None
    if precomputed_reference:  # the reference's, or for a reference-free loss a baseline
      ref_logps = jnp.concatenate([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    elif not loss.uses_reference:
      ref_logps = jnp.zeros_like(logps)
    else:
      ref_logits, ref_logps, _ = sequence_logps(model, frozen, batch, None, loss_chunk_len)
      ref_logits, ref_logps = jax.lax.stop_gradient((ref_logits, ref_logps))
    # What the loss reads: summed log-probs, or token averages for ipo / simpo / orpo.
    per = jnp.maximum(counts, 1.0) if loss.averaged else 1.0
    seq, ref_seq = logps / per, ref_logps / per
    B = logps.shape[0] // 2
    delta = 0.0
    if carries:  # TRL updates the running mean with this batch before using it
      delta, _ = running_mean_update(carry["mean"], carry["count"],
                                     (loss.beta * (seq - ref_seq)).mean())
    losses_B, chosen_B, rejected_B = loss(seq[:B], seq[B:], ref_seq[:B], ref_seq[B:], delta)
    drift = logps - ref_logps
    sums = {
        "pairs": jnp.float32(B),
        "reward_accuracy": (chosen_B > rejected_B).sum(),
        "reward_margin": (chosen_B - rejected_B).sum(),
        "chosen_reward": chosen_B.sum(), "rejected_reward": rejected_B.sum(),
        "chosen_logps": logps[:B].sum(), "rejected_logps": logps[B:].sum(),
    }
    if loss.uses_reference or precomputed_reference:
      sums.update(chosen_drift=drift[:B].sum(), rejected_drift=drift[B:].sum())
    if ref_logits is not None:
      mask = both_sides(batch, "loss_mask").astype(jnp.float32)
      sums.update(kl_sum=token_kl_sum(logits, ref_logits, mask, loss_chunk_len),
                  kl_tokens=mask.sum())
    if carries:
      sums.update(reward_sum=(chosen_B.sum() + rejected_B.sum()), reward_count=jnp.float32(2 * B))
    return losses_B.sum(), sums

  def per_pair(sums):
    pairs = jnp.maximum(sums["pairs"], 1.0)
    out = {k: v / pairs for k, v in sums.items()
           if k not in ("pairs", "kl_sum", "kl_tokens", "reward_sum", "reward_count")}
    if "kl_sum" in sums:
      out["kl"] = sums["kl_sum"] / jnp.maximum(sums["kl_tokens"], 1.0)
    return out

  def eval_metrics(sums):
    return {k: float(v) for k, v in per_pair(sums).items()}

  def carry_update(carry, sums):
    mean, count = running_mean_update(carry["mean"], carry["count"],
                                      sums["reward_sum"] / sums["reward_count"])
    return {"mean": mean, "count": count}

  return Objective(
      loss_fn, pair_batch_spec(precomputed_reference),
      train_metrics=lambda sums, weight: per_pair(sums), eval_metrics=eval_metrics,
      carry_init=(lambda: {"mean": jnp.float32(0), "count": jnp.float32(0)}) if carries else None,
      carry_update=carry_update if carries else None)


def reference_logprobs(model: nn.Module, params, pairs, batch_size: int, length: int,
                       pad_id: int, to_device, parallel, micro_batches: int = 1,
                       chunk_len: int = 0) -> np.ndarray:
  """[N, 2] summed log-probs of each pair's chosen and rejected completion under `params` (the
  reference), computed once before training so that the reference need not stay in memory.

  Args:
    model: the Decoder; params: the reference's, placed on `parallel`'s mesh.
    pairs: llmjax.data.examples.Examples of pairs.
    batch_size, length, pad_id: the training batches' shape and padding.
    to_device: the Trainer's host-to-device function (each process passes its share).
    micro_batches: the batch goes through the model this many pairs' rows at a time (the
      training step's grad_accum_steps), so the [2B, L, V] logits are never held whole.
    chunk_len: with it, each micro-batch's log-probs `chunk_len` positions at a time.
  """
  compiled = reference_logprobs_fn(model, batch_size, parallel, micro_batches, chunk_len)
  share = batch_size // jax.process_count()
  mine = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
  out = np.zeros((len(pairs), 2), np.float32)
  for start in range(0, len(pairs), batch_size):
    indices = list(range(start, min(start + batch_size, len(pairs))))
    indices += indices[:1] * (batch_size - len(indices))  # a last, partial batch: repeats
    batch = pair_batch(pairs, indices[mine], length, pad_id)
    # The training batches' layout holds the reference's columns too; they are not read here.
    batch = with_reference(batch, np.zeros((len(pairs), 2), np.float32))
    with parallel.context():
      out[indices] = np.asarray(jax.device_get(compiled(params, to_device(batch))))
  return out


def reference_logprobs_fn(model: nn.Module, batch_size: int, parallel, micro_batches: int = 1,
                          chunk_len: int = 0):
  """The jitted pass of `reference_logprobs`: (params, a training-layout pair batch of
  `batch_size` pairs) -> [B, 2] summed log-probs, replicated."""
  spec = pair_batch_spec(True)

  def logps_of(p, batch):
    # each micro-batch's [chosen | rejected] log-probs, written into a [B, 2] table: the sum
    # over micro-batches of tables that are zero outside each one's rows
    def one(micro, index):
      rows = micro["chosen_inputs"].shape[0]
      logps_2M = sequence_logps(model, p, micro, None, chunk_len)[1]
      table_Mx2 = jnp.stack([logps_2M[:rows], logps_2M[rows:]], axis=1)
      return jax.lax.dynamic_update_slice(jnp.zeros((batch_size, 2), jnp.float32), table_Mx2,
                                          (index * rows, 0))
    return sum_over_micro_batches(one, batch, spec, micro_batches)

  return jax.jit(logps_of, out_shardings=parallel.replicated)


def with_reference(batch: dict[str, Any], ref_logps_Nx2: np.ndarray) -> dict[str, Any]:
  """The host batch with its pairs' precomputed reference log-probs."""
  rows = ref_logps_Nx2[np.asarray(batch["pair_index"])]
  return {**batch, "ref_chosen_logps": rows[:, 0], "ref_rejected_logps": rows[:, 1]}
