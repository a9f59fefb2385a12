"""Orbax checkpoints of the train state and the grain iterator, saved together.

A checkpoint step holds two items: `state` (params, optimizer state, step, rng; every array saved
and restored collectively in its own sharding) and `data` (each process's grain iterator
position). Restoring both gives an exact resume: the next batch and the next update are the ones
the interrupted run would have made.
"""

import contextlib
import logging
import os
import sys
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from llmjax import runio
from llmjax.errors import CheckpointMismatchError, StorageError, UserError


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


class _DropOrbaxErrors(logging.Filter):
  """Orbax logs a failed save with its traceback before raising it; the Checkpointer turns the
  raised error into one line, so the log would only repeat it, at length."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


logging.getLogger("absl").addFilter(_DropOrbaxErrors())


def _drop_closed_loop_errors(unraisable, default=sys.unraisablehook):
  """When a save fails, tensorstore's completion callbacks of the other pending writes find
  orbax's event loop closed and report it, one traceback each; the save's own error is the one
  that says what happened."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and "Event loop is closed" in str(unraisable.exc_value)):
    default(unraisable)


sys.unraisablehook = _drop_closed_loop_errors


@contextlib.contextmanager
def _quiet_absl():
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


# What a failed checkpoint write says, whichever layer (OS, tensorstore, orbax) reports it.
_FILESYSTEM_ERRORS = ("No space left on device", "Read-only file system", "Permission denied",
                      "Disk quota exceeded")


class Checkpointer:
  """Keep-N, asynchronous checkpoints under `directory` (one subfolder per step)."""

  def __init__(self, directory: os.PathLike, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self._started: list[int] = []  # steps whose save began in this process
    self._failure: StorageError | None = None
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
    self._started.append(step)
    self._write(lambda: self._manager.save(step, args=ocp.args.Composite(**items), force=True))

  def _write(self, write) -> None:
    """write(), with a filesystem failure (full disk, read-only, no permission) as one
    UserError naming the step whose save failed and the last complete checkpoint. An
    asynchronous save's failure surfaces at the next save or at close; once one is reported,
    what follows from it is not reported again."""
    try:
      write()
    except Exception as e:  # noqa: BLE001 - orbax re-raises the writer thread's errors
      if self._failure is not None:
        raise self._failure from None
      text = f"{type(e).__name__}: {e}"
      reason = next((r for r in _FILESYSTEM_ERRORS if r in text), None)
      if reason is None and not isinstance(e, OSError):
        raise
      complete = self._complete_steps()
      pending = [s for s in self._started if s not in complete]
      failed = pending[0] if pending else self._started[-1]
      done = [s for s in complete if s < failed]
      last = (f"the last complete checkpoint is step {done[-1]}" if done
              else "no checkpoint is complete")
      self._failure = StorageError(f"cannot save checkpoint step {failed} in {self.directory} "
                                f"({reason or str(e).splitlines()[0]}); {last}")
      # The writer's background threads (Python and tensorstore's C++) now fail on the same
      # disk, one traceback each; the error already says what happened.
      runio.mute_stderr()
      raise self._failure from None

  def _complete_steps(self) -> list[int]:
    """Steps whose save finished (orbax renames a step's folder only when it is whole)."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Any:
    """Restores `state` into the shardings of `abstract_state` and rewinds `data_iterator`.

    Args:
      step: a step in `all_steps()`.
      abstract_state: a pytree of jax.ShapeDtypeStruct with shardings, shaped like the state.
      data_iterator: a grain iterator to set to the saved position, or None.
    Returns:
      The restored state pytree.
    """
    self._require(step)
    metadata = self._read(step, lambda: self._manager.item_metadata(step)["state"])
    check_compatible(getattr(metadata, "tree", metadata), abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._read(step, lambda: self._manager.restore(
        step, args=ocp.args.Composite(**items))["state"])

  def _require(self, step: int) -> None:
    if step not in self.all_steps():
      raise UserError(f"checkpoint step {step} not found in {self.directory}; "
                      f"available: {self.all_steps()}")

  def _read(self, step: int, read):
    """read(), with a damaged checkpoint as one UserError: which step, the intact earlier
    ones, and how to resume from them."""
    try:
      with _quiet_absl():  # orbax logs each unreadable file before raising; we say it once
        return read()
    except UserError:
      raise
    except Exception as e:  # noqa: BLE001 - tensorstore, orbax and OS errors alike
      readable = [s for s in self.all_steps() if s < step and self._readable(s)]
      how = (f"move {self.directory}/{step} aside and rerun to resume from step {readable[-1]}"
             if readable else "no earlier step is readable: start a new run")
      raise UserError(f"checkpoint step {step} in {self.directory} cannot be read "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                      f"earlier steps whose metadata reads: {readable}; {how}") from None

  def _readable(self, step: int) -> bool:
    try:
      with _quiet_absl():
        self._manager.item_metadata(step)
      return True
    except Exception:  # noqa: BLE001
      return False

  def saved_params(self, step: int) -> Any:
    """The tree of `params` saved at `step`, as metadata (shapes and dtypes, no values)."""
    self._require(step)
    metadata = self._read(step, lambda: self._manager.item_metadata(step)["state"])
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
    restored = self._read(step, lambda: ocp.PyTreeCheckpointer().restore(
        os.path.join(self.directory, str(step), "state"),
        args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))
    return restored["params"] if under is None else restored["params"][under]

  def close(self) -> None:
    """Waits for pending saves; a failed one raises (once) as in `save`."""
    try:
      self._write(self._manager.wait_until_finished)
    finally:
      try:
        self._manager.close()
      except Exception:  # noqa: BLE001 - a failure already reported, or reported above
        if self._failure is None:
          raise
