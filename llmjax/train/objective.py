"""What an experiment supplies to the engine's train step: a loss and the shape of its batches.

  loss_fn(params, batch, rng, frozen) -> (loss_sum, sums)

`loss_sum` is a scalar summed (not averaged) over the examples or tokens of the (micro-)batch,
and `sums` a dict of scalars summed the same way; the step divides by the whole batch's weight
(`BatchSpec.weight`), so gradient accumulation over micro-batches is exact. `rng` is the step's
dropout/sampling key (None in evaluation); `frozen` is whatever params the experiment holds fixed
beside the trained ones (a reference model, a teacher), or None.

An objective that carries a statistic from step to step (bco_pair's running reward mean) says
so with `carry_init` and `carry_update`; its loss_fn then takes the carry as a fifth argument,
and the carry lives in the train state, so it is checkpointed and resumed with it.
"""

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

LossFn = Callable[[Any, Mapping[str, jax.Array], Any, Any], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """The keys of a train batch and how they are laid out.

  Attributes:
    keys: every key of the batch dict.
    replicated: keys every device holds whole (e.g. a shared table); all others are [B, ...]
      arrays split along B over the mesh's batch axes (data, fsdp).
    weight_key: the key whose sum over the whole batch normalises the summed loss (e.g. the
      LM's loss_mask: a mean over target tokens); None: the number of rows B.
    token_keys: keys whose sums count the tokens the loss covers, for throughput (tokens/s).
  """

  keys: tuple[str, ...]
  replicated: tuple[str, ...] = ()
  weight_key: str | None = None
  token_keys: tuple[str, ...] = ()

  def __post_init__(self):
    unknown = [k for k in (*self.replicated, *self.token_keys,
                           *([self.weight_key] if self.weight_key else [])) if k not in self.keys]
    if unknown:
      raise ValueError(f"BatchSpec names {unknown[0]!r}, which is not one of its keys "
                       f"{self.keys}")
    if len(self.replicated) == len(self.keys):
      raise ValueError("BatchSpec: at least one key must be split along the batch")

  @property
  def sharded(self) -> tuple[str, ...]:
    return tuple(k for k in self.keys if k not in self.replicated)

  def weight(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    """The whole batch's normaliser (at least 1)."""
    if self.weight_key is None:
      return jnp.float32(batch[self.sharded[0]].shape[0])
    return jnp.maximum(batch[self.weight_key].astype(jnp.float32).sum(), 1.0)

  def tokens(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    return sum((batch[k].astype(jnp.float32).sum() for k in self.token_keys), jnp.float32(0))


def mean_per_weight(sums: Mapping[str, jax.Array], weight: jax.Array) -> dict[str, jax.Array]:
  """Every summed metric divided by the batch's weight."""
  return {k: v / weight for k, v in sums.items()}


@dataclasses.dataclass(frozen=True)
class Objective:
  """The parts of a train step an experiment supplies.

  Attributes:
    loss_fn: see the module docstring.
    batch_spec: the batch's keys and layout.
    train_metrics: (sums over the batch, the batch's weight) -> metrics logged per step
      (default: each sum per unit of weight).
    eval_metrics: host sums over all evaluation batches -> the logged evaluation metrics
      (default: each sum per unit of `weight_sum` if the sums carry one, else as they are).
    carry_init: () -> the carry at step 0 (a pytree of arrays), or None for no carry.
    carry_update: (carry, the step's sums over the whole batch) -> the next step's carry.
  """

  loss_fn: LossFn
  batch_spec: BatchSpec
  train_metrics: Callable[[Mapping[str, jax.Array], jax.Array], dict] = mean_per_weight
  eval_metrics: Callable[[Mapping[str, float]], dict] | None = None
  carry_init: Callable[[], Any] | None = None
  carry_update: Callable[[Any, Mapping[str, jax.Array]], Any] | None = None

  def loss(self, params, batch, rng, frozen, carry):
    """loss_fn, given the carry when the objective has one."""
    if self.carry_init is None:
      return self.loss_fn(params, batch, rng, frozen)
    return self.loss_fn(params, batch, rng, frozen, carry)

  def summarise_eval(self, sums: Mapping[str, float]) -> dict[str, float]:
    if self.eval_metrics is not None:
      return self.eval_metrics(sums)
    weight = max(float(sums.get("weight_sum", 1.0)), 1.0)
    return {k: float(v) / weight for k, v in sums.items() if k != "weight_sum"}
