"""The programs a run compiles, as an experiment describes them for an ahead-of-time compile:
each a name, the count of the params it runs, and how to lower it with abstract arguments
(shapes, dtypes and shardings; no array is ever allocated).

Experiments build them from the engine's own jitted functions (the Trainer's step and
evaluation, the generator's loop, the reference log-prob pass), so what is compiled is what the
run executes: the same shardings, remat, attention implementation, dtypes and micro-batches.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from llmjax.data.batches import BATCH_KEYS


@dataclasses.dataclass(frozen=True)
class Program:
  """A compiled program of a run.

  Attributes:
    name: what the row is called ('train_step', 'eval', 'reference_logprobs', ...).
    params: how many parameters it runs.
    lower: () -> jax.stages.Lowered.
    per: what one call is ('step', 'batch').
    repeats: how many times the body of its main loop runs per call (a step's micro-batches):
      XLA's cost analysis counts a loop's body once, so its FLOPs and bytes are scaled by this.
    model_flops: the model FLOPs of one call by the usual count (6N per token plus attention,
      as MFU is reckoned), where the engine knows it.
  """

  name: str
  params: int
  lower: Callable[[], Any]
  per: str = "step"
  repeats: int = 1
  model_flops: float | None = None


def param_count(abstract_params: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params))


def lm_batch_shapes(rows: int, length: int) -> dict[str, tuple]:
  """The LM batch's keys (llmjax.data.batches): int32 [rows, length] each."""
  return {key: ((rows, length), jnp.int32) for key in BATCH_KEYS}


def pair_batch_shapes(pairs: int, length: int, precomputed_reference: bool) -> dict[str, tuple]:
  """A preference batch's keys (llmjax.train.dpo): both sides' LM keys, the pair index and,
  with precomputed reference log-probs, those."""
  shapes = {"pair_index": ((pairs,), jnp.int32)}
  for side in ("chosen", "rejected"):
    shapes.update({f"{side}_{key}": shape for key, shape in
                   lm_batch_shapes(pairs, length).items()})
  if precomputed_reference:
    shapes.update({key: ((pairs,), jnp.float32)
                   for key in ("ref_chosen_logps", "ref_rejected_logps")})
  return shapes


def abstract_batch(shapes: dict[str, tuple], shardings: dict[str, Any]) -> dict[str, Any]:
  return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[key])
          for key, (shape, dtype) in shapes.items()}


def trainer_programs(trainer, batch_shapes: dict[str, tuple], frozen: Any = None,
                     prefix: str = "") -> list[Program]:
  """The Trainer's train step (with its optimizer state, donated) and its evaluation, on
  batches of `batch_shapes` ({key: (shape, dtype)}); `frozen`: abstract frozen params."""
  batch = abstract_batch(batch_shapes, trainer.batch_shardings)
  count = param_count(trainer.abstract_state.params)
  micro = micro_batches(trainer)
  return [Program(f"{prefix}train_step", count, lambda: trainer.lower_step(batch, frozen),
                  repeats=micro, model_flops=trainer.flops_per_step),
          Program(f"{prefix}eval", count, lambda: trainer.lower_eval(batch, frozen),
                  per="batch", repeats=micro)]


def micro_batches(trainer) -> int:
  """The micro-batches a step of `trainer` runs in a loop (llmjax.train.step)."""
  accum = trainer.config.grad_accum_steps
  return accum if accum > 1 and trainer.config.batch_size % accum == 0 else 1


def lowered(parallel, jitted: Callable, *abstract_args):
  """jitted.lower(*abstract_args) inside the mesh and its logical rules, as the run calls it."""
  with parallel.context():
    return jitted.lower(*abstract_args)
