"""The train step and the train loop shared by every experiment that trains a decoder.

Shape letters: B global batch, A gradient-accumulation micro-steps, L length.

A batch is a dict of [B, L] arrays: inputs, targets, loss_mask, segment_ids, positions.
"""

import math
import time
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax import runio
from llmjax.errors import TrainingDivergedError, UserError
from llmjax.models import Decoder, ModelConfig, unembedding
from llmjax.parallel import Parallel
from llmjax.train.checkpoint import Checkpointer
from llmjax.train.flops import peak_flops_per_device
from llmjax.train.losses import chunked_cross_entropy, cross_entropy
from llmjax.train.optim import build_optimizer
from llmjax.train.preemption import SigtermFlag
from llmjax.train.state import TrainState, make_state_initializer

BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def lm_batch(rows: np.ndarray, num_inputs: int = 1) -> dict[str, np.ndarray]:
  """The batch dict of token rows [B, L + 1], one document per row: next-token targets, the
  loss on every position after the first `num_inputs` tokens (1: on all of them)."""
  B, length = rows.shape
  loss_mask = np.zeros((B, length - 1), np.int32)
  loss_mask[:, num_inputs - 1:] = 1
  return {"inputs": rows[:, :-1], "targets": rows[:, 1:], "loss_mask": loss_mask,
          "segment_ids": np.ones((B, length - 1), np.int32),
          "positions": np.broadcast_to(np.arange(length - 1, dtype=np.int32),
                                       (B, length - 1)).copy()}


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


class Trainer:
  """Owns the compiled train/eval steps and runs the loop.

  Args:
    model_config: the decoder's ModelConfig.
    train_config: `config.train` (steps, batch_size, seq_len, grad_accum_steps, log_every,
      eval_every, checkpoint_every, keep_checkpoints, z_loss, loss_chunk_len,
      stop_after_steps, ...).
    optim_config: `config.optim`.
    parallel: mesh and rules.
  """

  def __init__(self, model_config: ModelConfig, train_config, optim_config, parallel: Parallel):
    self.model_config, self.config, self.parallel = model_config, train_config, parallel
    self.model = Decoder(model_config)
    self.tx, self.schedule = build_optimizer(optim_config, train_config.steps)
    self._check_batch_shape()
    dummy_BxL = jnp.zeros((1, train_config.seq_len), jnp.int32)
    self.init_state, self.abstract_state = make_state_initializer(
        lambda rng: self.model.init(rng, dummy_BxL)["params"], self.tx, parallel)
    state_sharding = jax.tree.map(lambda s: s.sharding, self.abstract_state)
    batch_sharding = {k: parallel.batch_sharding() for k in BATCH_KEYS}
    self._train_step = jax.jit(self._step, in_shardings=(state_sharding, batch_sharding),
                               out_shardings=(state_sharding, parallel.replicated),
                               donate_argnums=0)
    self._eval_step = jax.jit(self._eval, in_shardings=(state_sharding.params, batch_sharding),
                              out_shardings=parallel.replicated)

  def _check_batch_shape(self):
    cfg, multiple = self.config, self.parallel.batch_size_multiple
    accum = cfg.grad_accum_steps
    if cfg.batch_size % accum or (cfg.batch_size // accum) % multiple:
      raise UserError(f"train.batch_size = {cfg.batch_size}: must split into "
                      f"grad_accum_steps={accum} micro-batches each divisible by the "
                      f"data*fsdp mesh size {multiple}")

  # ---- compiled steps ---------------------------------------------------------------------

  def _step(self, state: TrainState, batch):
    cfg = self.config
    accum = cfg.grad_accum_steps
    deterministic = self.model_config.dropout == 0.0
    total_weight = jnp.maximum(batch["loss_mask"].astype(jnp.float32).sum(), 1.0)
    step_rng = jax.random.fold_in(state.rng, state.step)

    def micro_grads(micro, rng):
      def loss_fn(params):
        loss_sum, sums = lm_loss_sums(self.model, params, micro, rng, deterministic, cfg.z_loss,
                                      cfg.loss_chunk_len)
        return loss_sum / total_weight, sums
      return jax.value_and_grad(loss_fn, has_aux=True)(state.params)

    if accum == 1:
      (loss, sums), grads = micro_grads(batch, step_rng)
    else:
      # [B, L] -> [A, B/A, L]; scan keeps one micro-batch of activations alive at a time.
      micros = jax.tree.map(lambda x: x.reshape(accum, -1, *x.shape[1:]), batch)

      def body(carry, xs):
        micro, index = xs
        out = micro_grads(micro, jax.random.fold_in(step_rng, index))
        return jax.tree.map(jnp.add, carry, out), None

      first = jax.tree.map(lambda x: x[0], micros)
      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(micro_grads, first, step_rng))
      ((loss, sums), grads), _ = jax.lax.scan(body, zeros, (micros, jnp.arange(accum)))

    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": sums["correct_sum"] / jnp.maximum(sums["weight_sum"], 1.0),
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": self.schedule(state.step),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _eval(self, params, batch):
    _, sums = lm_loss_sums(self.model, params, batch, None, True, 0.0,
                           self.config.loss_chunk_len)
    return sums

  # ---- host side --------------------------------------------------------------------------

  def to_device(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles global arrays from this process's share of the batch."""
    return {k: jax.make_array_from_process_local_data(self.parallel.batch_sharding(),
                                                      np.asarray(host_batch[k]))
            for k in BATCH_KEYS}

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
    with self.parallel.context():
      return self._train_step(state, batch)

  def evaluate(self, params, batches: Sequence[dict[str, jax.Array]]) -> dict[str, float]:
    """Token-weighted loss and accuracy over `batches` (already on device)."""
    totals = None
    with self.parallel.context():
      for batch in batches:
        sums = self._eval_step(params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    weight = max(float(totals["weight_sum"]), 1.0)
    return {"loss": float(totals["nll_sum"]) / weight,
            "accuracy": float(totals["correct_sum"]) / weight}

  def fit(self, workdir: str, train_iter: Iterator[dict[str, np.ndarray]],
          eval_batches: Sequence[dict[str, np.ndarray]] = (), seed: int = 0,
          resume: bool = True) -> dict[str, Any]:
    """Runs (or resumes) training to `train.steps`; returns the final metrics.

    Each 'train' row of metrics.jsonl averages loss, accuracy and grad norm over the steps since
    the previous row (learning_rate is the current one); 'eval' rows cover `eval_batches`.

    Writes metrics.jsonl and tensorboard/ (process 0) and checkpoints/ (all processes) under
    `workdir`. SIGTERM or `train.stop_after_steps` saves a checkpoint and returns early with
    'stopped_early' set; a NaN/inf loss raises TrainingDivergedError and keeps the last good
    checkpoint.
    """
    cfg = self.config
    checkpointer = Checkpointer(f"{workdir}/checkpoints", cfg.keep_checkpoints,
                                cfg.async_checkpoint)
    # A grain iterator's position is checkpointed with the state; other iterators restart.
    data_iter = train_iter if hasattr(train_iter, "get_state") else None
    state = self.init_state(seed)
    latest = checkpointer.latest_step() if resume else None
    if latest is not None:
      state = checkpointer.restore(latest, self.abstract_state, data_iter)
    start = int(jax.device_get(state.step))
    eval_device = [self.to_device(b) for b in eval_batches]
    writer = runio.MetricsWriter(workdir, keep_through_step=start)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    flops_per_token = self.model_config.flops_per_token(cfg.seq_len)
    peak = peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
    stop_at = cfg.steps if not cfg.stop_after_steps else min(cfg.steps,
                                                             start + cfg.stop_after_steps)
    result = {"resumed_from_step": start, "stopped_early": False}
    progress = runio.progress_bar(cfg.steps, start, cfg.progress, "train")
    last_good_checkpoint = latest
    with SigtermFlag() as sigterm:
      try:
        step, tick, tick_step = start, time.perf_counter(), start
        window = None  # metrics summed on device since the last log, averaged when logged
        while step < stop_at:
          state, metrics = self.train_step(state, self.to_device(next(train_iter)))
          window = metrics if window is None else jax.tree.map(jnp.add, window, metrics)
          step += 1
          progress.update(1)
          stopping_early = sigterm.is_set() or (step == stop_at and stop_at < cfg.steps)
          log_now = step % cfg.log_every == 0 or step == stop_at
          save_now = step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping_early
          if log_now or save_now:
            host = {k: float(v) / (step - tick_step) for k, v in jax.device_get(window).items()}
            host["learning_rate"] = float(metrics["learning_rate"])  # the current one
            if not math.isfinite(host["loss"]):
              raise TrainingDivergedError(
                  f"loss is {host['loss']} at step {step}; training stopped. The last "
                  f"good checkpoint (step {last_good_checkpoint}) is kept in "
                  f"{checkpointer.directory}")
            if log_now:
              elapsed = time.perf_counter() - tick
              tokens_per_s = tokens_per_step * (step - tick_step) / max(elapsed, 1e-9)
              host.update(tokens_per_s=tokens_per_s,
                          step_time_s=elapsed / max(step - tick_step, 1),
                          mfu=tokens_per_s * flops_per_token / peak)
              writer.write(step, "train", host)
              progress.set_postfix(loss=f"{host['loss']:.4f}",
                                   tok_s=f"{tokens_per_s:,.0f}")
              result["train"] = host
          if eval_device and (step % cfg.eval_every == 0 or step == stop_at):
            result["eval"] = self.evaluate(state.params, eval_device)
            writer.write(step, "eval", result["eval"])
          if save_now:
            checkpointer.save(step, state, data_iter)
            last_good_checkpoint = step
          if stopping_early:
            result["stopped_early"] = True
            break
          if log_now:  # restart the clock after eval and saving, which are not step time
            tick, tick_step, window = time.perf_counter(), step, None
      finally:
        progress.close()
        writer.close()
        checkpointer.close()
    result.update(step=step, state=state)
    return result

