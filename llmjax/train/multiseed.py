"""Many seeds of one small full-batch experiment, trained at once.

Parameters, optimizer states and per-seed data (e.g. each seed's train/test split) carry a
leading seed axis S; one compiled call runs K optimizer steps for every seed (vmap over seeds
inside a lax.scan over steps). On a CPU this turns a sweep of S small runs into a few large
matrix multiplies and removes per-step dispatch and host synchronisation, which dominate the
cost of small models.

  loss_fn(params, shared, per_seed, rng) -> (loss, aux)   one seed, one step
  eval_fn(params, shared, per_seed)      -> {name: scalar} one seed
`shared` is the same for all seeds (e.g. the whole task table); `per_seed` has the seed axis.
"""

from typing import Any, Callable

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
               loss_fn: Callable, eval_fn: Callable):
    self.tx = tx
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
    self._train = jax.jit(self._train_steps, static_argnums=3, donate_argnums=0)
    self._evaluate = jax.jit(jax.vmap(eval_fn, in_axes=(0, None, 0)))

  def _one_step(self, params, opt_state, rng, step, shared, per_seed):
    grads, aux = jax.grad(
        lambda p: self._loss_fn(p, shared, per_seed, jax.random.fold_in(rng, step)),
        has_aux=True)(params)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux

  def _train_steps(self, state: SeedsState, shared, per_seed, num_steps: int):
    all_seeds = jax.vmap(self._one_step, in_axes=(0, 0, 0, None, None, 0))

    def body(carry, _):
      params, opt_state, step = carry
      params, opt_state, aux = all_seeds(params, opt_state, state.rng, step, shared, per_seed)
      return (params, opt_state, step + 1), aux

    (params, opt_state, step), aux = jax.lax.scan(
        body, (state.params, state.opt_state, state.step), None, length=num_steps)
    last_aux = jax.tree.map(lambda a: a[-1], aux)
    return state.replace(step=step, params=params, opt_state=opt_state), last_aux

  def init(self, seeds) -> SeedsState:
    """Initialises one replica per seed; `seeds` is a length-S sequence of ints."""
    return self._init(jnp.asarray(np.asarray(seeds), jnp.int32))

  def train(self, state: SeedsState, shared, per_seed, num_steps: int):
    """Runs `num_steps` steps for every seed; returns (state, aux of the last step [S, ...])."""
    return self._train(state, shared, per_seed, num_steps)

  def evaluate(self, state: SeedsState, shared, per_seed) -> dict[str, jax.Array]:
    """eval_fn for every seed: {name: [S]}."""
    return self._evaluate(state.params, shared, per_seed)
