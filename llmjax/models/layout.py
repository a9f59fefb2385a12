"""Where parameters live: the abstract layout (shape, dtype, sharding) of any Flax module's
params on a mesh, and where a decoder's params sit inside a wrapper's.

Every leaf gets its sharding from the logical axis names the model attached to it
(`nn.with_logical_partitioning`) and the mesh rules; leaves without names are replicated. One
helper serves training (the train state's target layout), inference (a restore's target) and
interop (where each imported tensor is placed).

A wrapper module (e.g. `DecoderWithHeads`) keeps its decoder's params under the sub-tree
`DECODER_KEY`; `decoder_params` finds them in either layout, so the unembedding, Hugging Face
export and the runners accept a wrapper's params as they are.
"""

import math
from typing import Any, Callable

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec

from llmjax.errors import UserError
from llmjax.parallel import Parallel

DECODER_KEY = "decoder"


def _is_box(x) -> bool:
  return isinstance(x, nn.LogicallyPartitioned)


def unbox(tree: Any) -> Any:
  """The tree with every LogicallyPartitioned box replaced by its value."""
  return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


def logical_shardings(parallel: Parallel, boxed_tree: Any) -> Any:
  """NamedShardings for a (possibly abstract) tree whose parameter leaves are
  LogicallyPartitioned; other leaves (steps, rngs, factored statistics) are replicated."""

  def leaf_sharding(leaf):
    if _is_box(leaf) and len(leaf.names) == leaf.value.ndim:
      return nn.logical_to_mesh_sharding(PartitionSpec(*leaf.names), parallel.mesh,
                                         parallel.rules)
    return parallel.replicated

  return jax.tree.map(leaf_sharding, boxed_tree, is_leaf=_is_box)


def check_divisible(parallel: Parallel, boxed_tree: Any) -> None:
  """Raises UserError naming the first param whose dimension the mesh cannot split evenly."""
  rules = dict(parallel.rules)
  for path, leaf in jax.tree_util.tree_flatten_with_path(boxed_tree, is_leaf=_is_box)[0]:
    if not _is_box(leaf) or len(leaf.names) != leaf.value.ndim:
      continue
    for size, name in zip(leaf.value.shape, leaf.names):
      axes = rules.get(name)
      axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
      ways = math.prod(parallel.mesh.shape[a] for a in axes if a is not None)
      if size % ways:
        where = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                         for k in path)
        split = " x ".join(f"mesh.{a}={parallel.mesh.shape[a]}" for a in axes if a)
        raise UserError(f"parameter {where} has {size} along its '{name}' axis, which {split} "
                        f"cannot split evenly: choose mesh sizes that divide the model's "
                        "dimensions (heads, kv heads, vocab, d_ff, d_model)")


def abstract_with_shardings(init: Callable[..., Any], parallel: Parallel, *args) -> Any:
  """What `init(*args)` would return (a tree with boxed params), as jax.ShapeDtypeStructs that
  carry their shardings: the target layout of an initialisation, a restore or an import. A
  dimension the mesh cannot split evenly is a UserError naming the param."""
  with parallel.context():
    boxed = jax.eval_shape(init, *args)
  check_divisible(parallel, boxed)
  shardings = unbox(logical_shardings(parallel, boxed))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      unbox(boxed), shardings)


def params_layout(model: nn.Module, parallel: Parallel, *example_args, **example_kwargs) -> Any:
  """Abstract params (shape, dtype, sharding) of `model.init(rng, *example_args)`."""
  return abstract_with_shardings(
      lambda rng: model.init(rng, *example_args, **example_kwargs)["params"], parallel,
      jax.random.PRNGKey(0))


def decoder_params(params: Any) -> Any:
  """A decoder's params, found at the top of `params` or under a wrapper's DECODER_KEY."""
  if isinstance(params, dict) and DECODER_KEY in params and "embed" not in params:
    return params[DECODER_KEY]
  return params


def with_decoder_params(params: Any, new_decoder_params: Any) -> Any:
  """`params` with its decoder's params (top level or under DECODER_KEY) replaced."""
  if isinstance(params, dict) and DECODER_KEY in params and "embed" not in params:
    return {**params, DECODER_KEY: new_decoder_params}
  return new_decoder_params
