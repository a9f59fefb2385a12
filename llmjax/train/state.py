"""The train state, its sharded initialisation, and training a subset of the params.

Every leaf of the state gets its sharding from the logical axis names the model attached to its
parameter (llmjax.models.layout): the optimizer's moments inherit them from the parameter they
track, so Adam's `mu` for an ('embed', 'mlp') kernel is split exactly like the kernel. Leaves
without names (the step, the rng, factored Adafactor statistics) are replicated.

A param subset is trained by partitioning the params into a trainable and a fixed tree (each with
None where the other has a leaf): gradients are taken and optimizer state is kept for the
trainable leaves only, and the fixed ones pass through every step untouched, bit for bit.
"""

import re
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from llmjax.errors import UserError
from llmjax.models.layout import abstract_with_shardings
from llmjax.parallel import Parallel


@flax.struct.dataclass
class TrainState:
  """All that a step changes. `rng` is a raw key; step k uses fold_in(rng, k), so resumes are
  exact without saving a moving key."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  carry: Any = None  # what an objective carries from step to step (llmjax.train.objective)


def _is_leaf(x) -> bool:
  return x is None or isinstance(x, nn.LogicallyPartitioned)


def param_path(path) -> str:
  """'layer_0/mlp/up/kernel' for a jax key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def trainable_mask(params: Any, pattern: str) -> Any:
  """A tree of bools: True where the param's path ('layer_0/mlp/up/kernel') fully matches the
  regular expression `pattern` ('' trains every param). A pattern that matches nothing, or
  does not compile, is a UserError."""
  if not pattern:
    return jax.tree.map(lambda _: True, params, is_leaf=_is_leaf)
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise UserError(f"train.trainable_params = {pattern!r}: not a regular expression ({e})") \
        from None
  mask = jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.fullmatch(param_path(p))),
                                          params, is_leaf=_is_leaf)
  if not any(jax.tree.leaves(mask)):
    some = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        params, is_leaf=_is_leaf)[0]][:3]
    raise UserError(f"train.trainable_params = {pattern!r} matches no parameter; paths look "
                    f"like {some}")
  return mask


def partition(params: Any, mask: Any) -> tuple[Any, Any]:
  """(trainable, fixed): `params` split by `mask`, each with None where the other has a leaf."""
  trainable = jax.tree.map(lambda p, m: p if m else None, params, mask, is_leaf=_is_leaf)
  fixed = jax.tree.map(lambda p, m: None if m else p, params, mask, is_leaf=_is_leaf)
  return trainable, fixed


def combine(trainable: Any, fixed: Any) -> Any:
  """The inverse of `partition`."""
  return jax.tree.map(lambda t, f: f if t is None else t, trainable, fixed,
                      is_leaf=lambda x: x is None)


def make_state_initializer(init_params: Callable[[jax.Array], Any],
                           tx: optax.GradientTransformation, parallel: Parallel,
                           trainable: str = "", carry_init: Callable[[], Any] | None = None):
  """Compiles a sharded initialiser.

  Args:
    init_params: rng -> boxed params (e.g. `lambda r: model.init(r, tokens)["params"]`).
    tx: the optimizer.
    parallel: the mesh and rules.
    trainable: regex of the trained param paths ('' = all; see `trainable_mask`).
    carry_init: the objective's carry at step 0, if it has one.
  Returns:
    (init_fn(seed, params=None) -> TrainState placed in its shardings, with the seed's params or
    the given ones (already in their shardings); abstract TrainState of jax.ShapeDtypeStruct
    with those shardings, for checkpoint restore; the trainable mask).
  """

  def boxed_state(seed, params):
    params_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    if params is None:
      params = init_params(params_rng)
    mask = trainable_mask(params, trainable)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(partition(params, mask)[0]), rng=state_rng,
                      carry=None if carry_init is None else carry_init())

  abstract = abstract_with_shardings(lambda seed: boxed_state(seed, None), parallel, 0)
  mask = trainable_mask(abstract.params, trainable)
  shardings = jax.tree.map(lambda a: a.sharding, abstract)
  fresh = jax.jit(lambda seed: nn.unbox(boxed_state(seed, None)), out_shardings=shardings)
  from_params = jax.jit(lambda seed, params: boxed_state(seed, params),
                        out_shardings=shardings)

  def init_fn(seed: int, params: Any = None) -> TrainState:
    with parallel.context():
      return fresh(seed) if params is None else from_params(seed, params)

  return init_fn, abstract, mask
