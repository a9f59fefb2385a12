"""Orbax checkpoints of the train state and the grain iterator, saved together.

A checkpoint step holds two items: `state` (params, optimizer state, step, rng; every array saved
and restored collectively in its own sharding) and `data` (each process's grain iterator
position). Restoring both gives an exact resume: the next batch and the next update are the ones
the interrupted run would have made.
"""

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from llmjax.errors import CheckpointMismatchError, UserError


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_compatible(saved_tree, abstract_tree) -> None:
  """Raises CheckpointMismatchError naming the first parameter whose shape or presence differs."""
  saved = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
  wanted = {_path_str(p): leaf
            for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_tree)[0]}
  for name, leaf in wanted.items():
    if name not in saved:
      raise CheckpointMismatchError(
          f"checkpoint has no parameter {name!r} that the configured model needs")
    saved_shape, wanted_shape = tuple(saved[name].shape), tuple(leaf.shape)
    if saved_shape != wanted_shape:
      raise CheckpointMismatchError(
          f"checkpoint parameter {name!r} has shape {saved_shape}; the configured model "
          f"expects {wanted_shape}")
  extra = sorted(set(saved) - set(wanted))
  if extra:
    raise CheckpointMismatchError(
        f"checkpoint parameter {extra[0]!r} does not exist in the configured model")


class Checkpointer:
  """Keep-N, asynchronous checkpoints under `directory` (one subfolder per step)."""

  def __init__(self, directory: os.PathLike, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None = None) -> None:
    """Starts saving (asynchronously); returns once the arrays are safe to mutate."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Any:
    """Restores `state` into the shardings of `abstract_state` and rewinds `data_iterator`.

    Args:
      step: a step in `all_steps()`.
      abstract_state: a pytree of jax.ShapeDtypeStruct with shardings, shaped like the state.
      data_iterator: a grain iterator to set to the saved position, or None.
    Returns:
      The restored state pytree.
    """
    if step not in self.all_steps():
      raise UserError(f"checkpoint step {step} not found in {self.directory}; "
                      f"available: {self.all_steps()}")
    metadata = self._manager.item_metadata(step)["state"]
    check_compatible(getattr(metadata, "tree", metadata), abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def saved_params(self, step: int) -> Any:
    """The tree of `params` saved at `step`, as metadata (shapes and dtypes, no values)."""
    if step not in self.all_steps():
      raise UserError(f"checkpoint step {step} not found in {self.directory}; "
                      f"available: {self.all_steps()}")
    metadata = self._manager.item_metadata(step)["state"]
    saved = getattr(metadata, "tree", metadata)
    if not isinstance(saved, dict) or "params" not in saved:
      raise UserError(f"checkpoint {self.directory}/{step} holds no 'params' (not a train state "
                      "of llmjax.train)")
    return saved["params"]

  def restore_params(self, step: int, abstract_params: Any, under: str | None = None) -> Any:
    """Restores only `params` of a train-state checkpoint (the optimizer state stays on disk).

    Args:
      step: a step in `all_steps()`.
      abstract_params: jax.ShapeDtypeStruct pytree with shardings, shaped like the params (or
        like their sub-tree `under`).
      under: restore only `params[under]` (e.g. the decoder inside a wrapper's params).
    """
    saved = self.saved_params(step)
    if under is not None:
      if not isinstance(saved, dict) or under not in saved:
        raise CheckpointMismatchError(
            f"checkpoint {self.directory}/{step} has no parameter sub-tree {under!r}")
      saved = saved[under]
    check_compatible(saved, abstract_params)
    target = {"params": abstract_params if under is None else {under: abstract_params}}
    restored = ocp.PyTreeCheckpointer().restore(
        os.path.join(self.directory, str(step), "state"),
        args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    return restored["params"] if under is None else restored["params"][under]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
