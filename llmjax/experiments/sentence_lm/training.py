"""The losses of the sentence-space stages, as engine Objectives (llmjax.train.objective).

Autoencoder (semantic, CTX-B, CTX-C), one shared-weight Decoder:
  z = encode(encoder input); the decoder reads [dropout(z)] + the target sentence and is
  trained by token cross-entropy on the sentence and its EOS. CTX-C adds
  weight x InfoNCE(z, z_semantic) with z_semantic from the frozen semantic autoencoder on the
  target sentence alone (cosine / temperature, in-batch negatives, the undropped z; the
  semantic vectors are the queries, as in the released code).
Latent model:
  from the question and the teacher embeddings of the sentences so far, predict the next
  sentence's embedding z_hat; loss = the frozen decoder's cross-entropy on the next sentence
  given z_hat + nce_weight x InfoNCE(z_hat, teacher) + stop_weight x the stop head's binary
  cross-entropy (is the next sentence the answer?). The InfoNCE pairs z_hat (after the output
  projection) with the fixed teacher embedding; the released code pairs the latent hidden state
  with the next input after the input projection and dropout, not detached. There, inference
  runs a fixed 10 steps; here the stop head or the decoder's "###" ends the rollout.
Token losses are means over target tokens, InfoNCE and stop losses means over rows: the summed
loss the step divides by the row count is rows x (token mean) + the row sums (exact without
gradient accumulation; with it, each micro-batch's token mean).
"""

import jax
import jax.numpy as jnp
import optax

from llmjax.experiments.sentence_lm.data import latent_vectors
from llmjax.experiments.sentence_lm.model import LatentModel, encode, info_nce_sum, prefix_logits
from llmjax.models import Decoder
from llmjax.train.losses import cross_entropy
from llmjax.train.objective import BatchSpec, Objective

AUTOENCODER_KEYS = ("enc_tokens", "enc_lengths", "dec_inputs", "dec_targets", "dec_mask")
CONTRASTIVE_KEYS = ("sem_tokens", "sem_lengths")
LATENT_KEYS = ("tokens", "segments", "vector_mask", "predict_at", "predict_mask",
               "target_vectors", "stop_labels", "next_inputs", "next_targets", "next_mask")


def _dropout(x, rate: float, rng):
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def _token_metrics(sums):
  weight = jnp.maximum(sums["weight_sum"], 1.0)
  return sums["nll_sum"] / weight, sums["correct_sum"] / weight


def autoencoder_objective(decoder: Decoder, prefix_dropout: float = 0.0,
                          contrastive_weight: float = 0.0,
                          temperature: float = 0.1) -> Objective:
  """The autoencoder loss (module docstring); with `contrastive_weight` > 0 the batch has the
  semantic inputs too and `frozen` is the semantic autoencoder's params."""
  contrastive = contrastive_weight > 0

  def loss_fn(params, batch, rng, frozen):
    B = batch["enc_tokens"].shape[0]
    z_BxD = encode(decoder, params, batch["enc_tokens"], batch["enc_lengths"])
    dropout_rng = None if rng is None else jax.random.fold_in(rng, 1)
    logits = prefix_logits(decoder, params, _dropout(z_BxD, prefix_dropout, dropout_rng),
                           batch["dec_inputs"], deterministic=rng is None or
                           decoder.config.dropout == 0.0, rng=rng)
    _, sums = cross_entropy(logits, batch["dec_targets"], batch["dec_mask"])
    token_nll, token_accuracy = _token_metrics(sums)
    exact_B = jnp.all((jnp.argmax(logits, -1) == batch["dec_targets"])
                      | (batch["dec_mask"] == 0), axis=1)
    loss = B * token_nll
    out = {"nll_sum": B * token_nll, "accuracy_sum": B * token_accuracy,
           "exact_sum": exact_B.sum().astype(jnp.float32)}
    if contrastive:
      z_sem_BxD = jax.lax.stop_gradient(
          encode(decoder, frozen, batch["sem_tokens"], batch["sem_lengths"]))
      # The semantic vectors are the queries, softmaxed over the batch's contextual vectors
      # (the released code's rep_semantic @ rep_contextual^T).
      nce, correct = info_nce_sum(z_sem_BxD, z_BxD, jnp.ones((B,), jnp.int32), temperature)
      loss = loss + contrastive_weight * nce
      out.update(nce_sum=nce, retrieval_sum=correct.astype(jnp.float32))
    return loss, out

  keys = AUTOENCODER_KEYS + (CONTRASTIVE_KEYS if contrastive else ())

  def train_metrics(sums, weight):
    return {k[:-4]: v / weight for k, v in sums.items() if k != "rows_sum"}

  def eval_metrics(sums):
    rows = max(float(sums["rows_sum"]), 1.0) if "rows_sum" in sums else 1.0
    return {k[:-4]: float(v) / rows for k, v in sums.items() if k != "rows_sum"}

  def eval_loss(params, batch, rng, frozen):
    loss, out = loss_fn(params, batch, rng, frozen)
    return loss, {**out, "rows_sum": jnp.float32(batch["enc_tokens"].shape[0])}

  return Objective(eval_loss, BatchSpec(keys=keys), train_metrics, eval_metrics)


def latent_objective(model: LatentModel, decoder: Decoder, nce_weight: float = 1.0,
                     temperature: float = 0.1, stop_weight: float = 1.0) -> Objective:
  """The latent model's loss (module docstring); `frozen` is the decoder's params."""

  def loss_fn(params, batch, rng, frozen):
    deterministic = rng is None
    vectors_BxLxD = latent_vectors(batch, batch["tokens"].shape[1])
    pred_BxLxD, stop_BxL = model.apply(
        {"params": params}, batch["tokens"], vectors_BxLxD, batch["vector_mask"],
        segment_ids_BxL=batch["segments"], deterministic=deterministic,
        rngs=None if deterministic else {"dropout": rng})
    at_BxS, mask_BxS = batch["predict_at"], batch["predict_mask"]
    B, S = at_BxS.shape
    z_hat_BxSxD = jnp.take_along_axis(pred_BxLxD, at_BxS[..., None], axis=1)
    stop_BxS = jnp.take_along_axis(stop_BxL, at_BxS, axis=1)
    D, Ls = z_hat_BxSxD.shape[-1], batch["next_inputs"].shape[-1]
    logits = prefix_logits(decoder, frozen, z_hat_BxSxD.reshape(B * S, D),
                           batch["next_inputs"].reshape(B * S, Ls))
    token_mask = batch["next_mask"].reshape(B * S, Ls) * mask_BxS.reshape(B * S, 1)
    _, sums = cross_entropy(logits, batch["next_targets"].reshape(B * S, Ls), token_mask)
    token_nll, token_accuracy = _token_metrics(sums)
    rows = jnp.maximum(mask_BxS.sum().astype(jnp.float32), 1.0)
    nce, retrieved = info_nce_sum(z_hat_BxSxD.reshape(B * S, D),
                                  batch["target_vectors"].reshape(B * S, D),
                                  mask_BxS.reshape(B * S), temperature)
    stop_loss = jnp.sum(optax.sigmoid_binary_cross_entropy(stop_BxS, batch["stop_labels"])
                        * mask_BxS)
    stop_right = jnp.sum(((stop_BxS > 0) == (batch["stop_labels"] > 0.5)) * mask_BxS)
    loss = rows * token_nll + nce_weight * nce + stop_weight * stop_loss
    return loss, {"nll_sum": rows * token_nll, "accuracy_sum": rows * token_accuracy,
                  "nce_sum": nce, "retrieval_sum": retrieved.astype(jnp.float32),
                  "stop_sum": stop_loss, "stop_accuracy_sum": stop_right.astype(jnp.float32),
                  "rows_sum": rows}

  def train_metrics(sums, weight):
    del weight
    rows = jnp.maximum(sums["rows_sum"], 1.0)
    return {k[:-4]: v / rows for k, v in sums.items() if k != "rows_sum"}

  def eval_metrics(sums):
    rows = max(float(sums["rows_sum"]), 1.0)
    return {k[:-4]: float(v) / rows for k, v in sums.items() if k != "rows_sum"}

  return Objective(loss_fn, BatchSpec(keys=LATENT_KEYS, weight_key="predict_mask"),
                   train_metrics, eval_metrics)
