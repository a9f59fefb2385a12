"""The train state and its sharded initialisation.

Every leaf of the state gets its sharding from the logical axis names the model attached to its
parameter: the optimizer's moments inherit them from the parameter they track, so Adam's `mu`
for an ('embed', 'mlp') kernel is split exactly like the kernel. Leaves without names (the step,
the rng, factored Adafactor statistics) are replicated.
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from llmjax.parallel import Parallel


@flax.struct.dataclass
class TrainState:
  """All that a step changes. `rng` is a raw key; step k uses fold_in(rng, k), so resumes are
  exact without saving a moving key."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def _is_box(x) -> bool:
  return isinstance(x, nn.LogicallyPartitioned)


def state_shardings(parallel: Parallel, boxed_abstract_state: Any) -> Any:
  """NamedShardings for an abstract state whose parameter leaves are LogicallyPartitioned."""

  def leaf_sharding(leaf):
    if _is_box(leaf) and len(leaf.names) == leaf.value.ndim:
      return nn.logical_to_mesh_sharding(PartitionSpec(*leaf.names), parallel.mesh,
                                         parallel.rules)
    return parallel.replicated

  return jax.tree.map(leaf_sharding, boxed_abstract_state, is_leaf=_is_box)


def abstract_with_shardings(init: Callable[..., Any], parallel: Parallel, *args) -> Any:
  """What `init(*args)` would return (a tree with boxed params), as jax.ShapeDtypeStructs that
  carry their shardings: the target layout of an initialisation, a restore or an import."""
  with parallel.context():
    boxed = jax.eval_shape(init, *args)
  shardings = _drop_boxes(state_shardings(parallel, boxed))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      _drop_boxes(boxed), shardings)


def _drop_boxes(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


def make_state_initializer(init_params: Callable[[jax.Array], Any],
                           tx: optax.GradientTransformation, parallel: Parallel):
  """Compiles a sharded initialiser.

  Args:
    init_params: rng -> boxed params (e.g. `lambda r: model.init(r, tokens)["params"]`).
    tx: the optimizer.
    parallel: the mesh and rules.
  Returns:
    (init_fn: seed -> TrainState placed in its shardings, abstract TrainState of
    jax.ShapeDtypeStruct with those shardings, for checkpoint restore).
  """

  def init_boxed(seed):
    params_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(params_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=state_rng)

  abstract = abstract_with_shardings(init_boxed, parallel, 0)
  shardings = jax.tree.map(lambda a: a.sharding, abstract)
  init_jit = jax.jit(lambda seed: nn.unbox(init_boxed(seed)), out_shardings=shardings)

  def init_fn(seed: int) -> TrainState:
    with parallel.context():
      return init_jit(seed)

  return init_fn, abstract
