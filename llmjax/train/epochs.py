"""Training lengths stated as the papers state them: `train.epochs` passes over the training
data, turned into `train.steps` once the data is read (0 epochs: `train.steps` as given)."""

import copy
import math
import sys

from llmjax import runio


def steps_from_epochs(train_config, steps_per_epoch: float, what: str):
  """`train_config` with `steps` = ceil(epochs * steps_per_epoch) when `train.epochs` > 0
  (itself otherwise); one stderr line says how the steps were derived.

  Args:
    steps_per_epoch: optimizer steps in one pass over the data (e.g. examples / batch size,
      or the packed batches of one ordered pass).
    what: the data, for that line ("1,234 pairs").
  """
  epochs = float(train_config.get("epochs", 0.0) or 0.0)
  if epochs <= 0:
    return train_config
  steps = max(1, math.ceil(epochs * steps_per_epoch - 1e-9))
  resolved = copy.deepcopy(train_config)
  resolved.steps = steps
  if runio.is_writer():
    print(f"train.epochs = {epochs:g} over {what} ({steps_per_epoch:.4g} steps per epoch): "
          f"{steps} steps", file=sys.stderr, flush=True)
  return resolved
