"""Many seeds of one small full-batch experiment, trained at once, on the engine's loop.

Parameters, optimizer states and per-seed data (e.g. each seed's train/test split) carry a
leading seed axis S; one compiled call runs K optimizer steps for every seed (vmap over seeds
inside a lax.scan over steps). On a CPU this turns a sweep of S small runs into a few large
matrix multiplies and removes per-step dispatch and host synchronisation, which dominate the
cost of small models.

  loss_fn(params, batch, rng, frozen) -> (loss, aux)   one seed, one step (the Objective form;
                                                       frozen is None here)
  eval_fn(params, batch)              -> {name: scalar} one seed
`batch` is one dict; the keys in `seed_keys` have the seed axis, the others are shared by all
seeds (e.g. the whole task table).
"""

from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax


@flax.struct.dataclass
class SeedsState:
  step: jax.Array  # scalar: all seeds step together
  params: Any  # leaves [S, ...]
  opt_state: Any  # leaves [S, ...]
  rng: jax.Array  # [S, 2]


class MultiSeedTrainer:
  """Compiled init, K-step training and evaluation for S seeds at once."""

  def __init__(self, init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
               loss_fn: Callable, eval_fn: Callable, seed_keys: Sequence[str]):
    self.tx, self.seed_keys = tx, tuple(seed_keys)
    self._loss_fn, self._eval_fn = loss_fn, eval_fn

    def init_one(seed):
      params_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
      params = init_params(params_rng)
      return params, tx.init(params), train_rng

    def init(seeds_S):
      params, opt_state, rng = jax.vmap(init_one)(seeds_S)
      return SeedsState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                        rng=rng)

    self._init = jax.jit(init)
    self._train = jax.jit(self._train_steps, static_argnums=2, donate_argnums=0)
    self._evaluate = jax.jit(lambda params, batch: jax.vmap(
        eval_fn, in_axes=(0, self._batch_axes(batch)))(params, batch))

  def _batch_axes(self, batch) -> dict[str, int | None]:
    return {k: 0 if k in self.seed_keys else None for k in batch}

  def _one_step(self, params, opt_state, rng, step, batch):
    (loss, aux), grads = jax.value_and_grad(
        lambda p: self._loss_fn(p, batch, jax.random.fold_in(rng, step), None),
        has_aux=True)(params)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss, **aux}

  def _train_steps(self, state: SeedsState, batch, num_steps: int):
    all_seeds = jax.vmap(self._one_step, in_axes=(0, 0, 0, None, self._batch_axes(batch)))

    def body(carry, _):
      params, opt_state, step, sums = carry
      params, opt_state, metrics = all_seeds(params, opt_state, state.rng, step, batch)
      return (params, opt_state, step + 1, jax.tree.map(jnp.add, sums, metrics)), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        all_seeds, state.params, state.opt_state, state.rng, state.step, batch)[2])
    (params, opt_state, step, sums), _ = jax.lax.scan(
        body, (state.params, state.opt_state, state.step, zeros), None, length=num_steps)
    return state.replace(step=step, params=params, opt_state=opt_state), sums

  def init(self, seeds) -> SeedsState:
    """Initialises one replica per seed; `seeds` is a length-S sequence of ints."""
    return self._init(jnp.asarray(np.asarray(seeds), jnp.int32))

  def abstract_state(self, num_seeds: int) -> SeedsState:
    """The state's shapes and dtypes on the default device (a checkpoint restore's target)."""
    shapes = jax.eval_shape(self._init, jax.ShapeDtypeStruct((num_seeds,), jnp.int32))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                        shapes)

  def train(self, state: SeedsState, batch, num_steps: int):
    """Runs `num_steps` steps for every seed; returns (state, {metric: [S]} summed over the
    steps: 'loss' and the loss_fn's aux)."""
    return self._train(state, batch, num_steps)

  def evaluate(self, state: SeedsState, batch) -> dict[str, jax.Array]:
    """eval_fn for every seed: {name: [S]}."""
    return self._evaluate(state.params, batch)


class MultiSeedProgram:
  """S seeds trained full-batch as the loop's TrainProgram (llmjax.train.loop): each call runs
  up to the next log/eval/checkpoint boundary; metrics are logged per seed.

  Args:
    trainer: the compiled seeds.
    seeds: the S seed values.
    batch: the full batch (device arrays; `trainer.seed_keys` with the seed axis).
    evaluate_rows: (state, step) -> the 'eval' rows to log (one per seed, with 'seed').
  """

  data_iterator = None
  flops_per_step = None
  max_steps_per_call = 1 << 30

  def __init__(self, trainer: MultiSeedTrainer, seeds: Sequence[int], batch,
               evaluate_rows: Callable[[SeedsState, int], list[dict]]):
    self.trainer, self.seeds, self.batch = trainer, list(seeds), batch
    self.evaluate_rows = evaluate_rows
    self.replicas = len(self.seeds)
    self.abstract_state = trainer.abstract_state(len(self.seeds))

  def init_state(self) -> SeedsState:
    return self.trainer.init(self.seeds)

  def train(self, state: SeedsState, num_steps: int):
    return self.trainer.train(state, self.batch, num_steps)

  def evaluate(self, state: SeedsState, step: int) -> list[dict]:
    return self.evaluate_rows(state, step)
