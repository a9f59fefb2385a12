"""The language-model objective: next-token cross-entropy on the engine's batch contract
(llmjax.data.batches), and the Trainer that pretraining and the task experiments use."""

import flax.linen as nn
import jax.numpy as jnp

from llmjax.data.batches import BATCH_KEYS
from llmjax.errors import UserError
from llmjax.models import Decoder, ModelConfig, unembedding
from llmjax.parallel import Parallel
from llmjax.train.losses import chunked_cross_entropy, cross_entropy
from llmjax.train.objective import BatchSpec, Objective
from llmjax.train.trainer import Trainer

def require_causal(model_config: ModelConfig, what: str) -> None:
  if model_config.mask_mode != "causal":
    raise UserError(f"model.mask_mode = {model_config.mask_mode!r}: {what} needs 'causal'")


LM_BATCH = BatchSpec(keys=BATCH_KEYS, weight_key="loss_mask", token_keys=("loss_mask",))


def lm_loss_sums(model: nn.Module, params, batch, rng, deterministic: bool, z_loss: float,
                 loss_chunk_len: int = 0):
  """Summed (not averaged) LM loss of one (micro-)batch, so micro-batches add up exactly.

  With `loss_chunk_len` (0 < it < L), the logits are computed that many positions at a time
  inside the loss (`chunked_cross_entropy`) and never held whole."""
  chunked = 0 < loss_chunk_len < batch["inputs"].shape[1]
  out = model.apply({"params": params}, batch["inputs"], batch["positions"],
                    batch["segment_ids"], deterministic=deterministic,
                    rngs=None if deterministic else {"dropout": rng}, return_hidden=chunked)
  if chunked:
    mean_loss, sums = chunked_cross_entropy(out, unembedding(params, model.config),
                                            batch["targets"], batch["loss_mask"],
                                            loss_chunk_len, z_loss)
  else:
    mean_loss, sums = cross_entropy(out, batch["targets"], batch["loss_mask"], z_loss)
  return mean_loss * jnp.maximum(sums["weight_sum"], 1.0), sums


def lm_objective(model: nn.Module, z_loss: float = 0.0, loss_chunk_len: int = 0) -> Objective:
  """Next-token cross-entropy of `model` (a Decoder) on LM batches; the step logs accuracy,
  evaluation logs loss and accuracy per target token. The model must be causal: with a
  bidirectional mask a position would see the token it predicts."""
  require_causal(model.config, "the LM objective (next-token prediction)")

  def loss_fn(params, batch, rng, frozen):
    del frozen
    deterministic = rng is None or model.config.dropout == 0.0
    # Evaluation (no rng) reports the plain cross-entropy, without the z-loss.
    return lm_loss_sums(model, params, batch, rng, deterministic,
                        z_loss if rng is not None else 0.0, loss_chunk_len)

  def train_metrics(sums, weight):
    del weight
    return {"accuracy": sums["correct_sum"] / jnp.maximum(sums["weight_sum"], 1.0)}

  def eval_metrics(sums):
    weight = max(float(sums["weight_sum"]), 1.0)
    return {"loss": float(sums["nll_sum"]) / weight,
            "accuracy": float(sums["correct_sum"]) / weight}

  return Objective(loss_fn, LM_BATCH, train_metrics, eval_metrics)


def lm_trainer(model_config: ModelConfig, train_config, optim_config,
               parallel: Parallel) -> Trainer:
  """A Trainer of the Decoder `model_config` builds, on the LM objective of `train_config`
  (z_loss, loss_chunk_len), with MFU from the model's FLOPs per token."""
  model = Decoder(model_config)
  objective = lm_objective(model, train_config.z_loss, train_config.loss_chunk_len)
  tokens_per_step = train_config.batch_size * train_config.seq_len
  return Trainer(model, objective, train_config, optim_config, parallel,
                 flops_per_step=model_config.flops_per_token(train_config.seq_len)
                 * tokens_per_step)
