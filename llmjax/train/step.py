"""The train step built from an Objective: exact gradient accumulation, a trained param subset,
frozen params beside the trained ones.

Shape letters: B global batch, A gradient-accumulation micro-steps.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from llmjax.train.objective import Objective
from llmjax.train.state import TrainState, combine, partition


def make_train_step(objective: Objective, tx: optax.GradientTransformation,
                    schedule: Callable[[jax.Array], jax.Array], grad_accum_steps: int,
                    trainable_mask: Any) -> Callable:
  """Returns step(state, batch, frozen) -> (state, metrics), pure and jittable.

  The loss is the objective's summed loss divided by the whole batch's weight, so A micro-steps
  of B/A rows add up to the full batch's gradient; only the trainable params (the mask's True
  leaves) get gradients and optimizer updates. Metrics: loss, grad_norm, learning_rate,
  loss_tokens (tokens the loss covered) and the objective's train metrics.
  """
  spec = objective.batch_spec

  def step(state: TrainState, batch, frozen):
    total_weight = spec.weight(batch)
    step_rng = jax.random.fold_in(state.rng, state.step)
    trainable, fixed = partition(state.params, trainable_mask)

    def micro_grads(micro, rng):
      def loss_of(trainable_params):
        loss_sum, sums = objective.loss(combine(trainable_params, fixed), micro, rng, frozen,
                                        state.carry)
        return loss_sum / total_weight, sums
      return jax.value_and_grad(loss_of, has_aux=True)(trainable)

    (loss, sums), grads = sum_over_micro_batches(
        lambda micro, index: micro_grads(micro, jax.random.fold_in(step_rng, index)
                                         if grad_accum_steps > 1 else step_rng),
        batch, spec, grad_accum_steps)

    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    params = combine(optax.apply_updates(trainable, updates), fixed)
    carry = state.carry
    if objective.carry_update is not None:
      carry = objective.carry_update(carry, sums)
    metrics = {
        "loss": loss,
        **objective.train_metrics(sums, total_weight),
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
        "loss_tokens": spec.tokens(batch),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         carry=carry), metrics

  return step


def sum_over_micro_batches(fn: Callable[[Any, jax.Array], Any], batch, spec, micro_batches: int):
  """sum over i of fn(micro-batch i, i), the batch's rows ([B, ...] -> [A, B/A, ...]) split
  into `micro_batches` in order; a scan keeps one micro-batch's activations (and logits) alive
  at a time. `spec`'s replicated keys go whole to every micro-batch. With one micro-batch (or
  rows that do not split evenly, e.g. a short last batch) fn sees the whole batch."""
  sharded = [k for k in spec.sharded if k in batch]  # a pass may carry fewer than training
  rows = batch[sharded[0]].shape[0]
  if micro_batches <= 1 or rows % micro_batches:
    return fn(batch, jnp.int32(0))
  split = {k: batch[k].reshape(micro_batches, -1, *batch[k].shape[1:]) for k in sharded}
  whole = {k: v for k, v in batch.items() if k not in split}

  def body(carry, xs):
    micro, index = xs
    return jax.tree.map(jnp.add, carry, fn({**micro, **whole}, index)), None

  first = {**jax.tree.map(lambda x: x[0], split), **whole}
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, first, jnp.int32(0)))
  total, _ = jax.lax.scan(body, zeros, (split, jnp.arange(micro_batches)))
  return total
