"""The three stages of grokking, read off a run's curves.

The rules (each returns the first logged step at which it holds, or None if it never does):

  memorized          train accuracy >= 0.99.
  symmetry acquired  at or after memorization, the violation falls below `threshold` times its
                     peak since memorization. (Before memorization a near-uniform model
                     violates nothing, so the crossing that matters is the fall that follows
                     the rise during memorization. Relative to the peak, one threshold serves
                     task families whose answer spaces give violations of different scales.)
  generalized        test accuracy >= 0.99.
  organized          the effective dimension is within 10% of its final value and stays there
                     until the end of the run.

Stage (i) memorization runs from the start to `memorized`; stage (ii) symmetry acquisition from
`memorized` to `symmetry`; stage (iii) geometric organization from `symmetry` to `organized`.
"""

from typing import Sequence

import numpy as np

ACCURACY_LEVEL = 0.99
ORGANIZED_TOLERANCE = 0.10


def _first(steps: np.ndarray, condition: np.ndarray) -> int | None:
  hits = np.flatnonzero(condition)
  return int(steps[hits[0]]) if len(hits) else None


def detect_stages(steps: Sequence[int], train_accuracy: Sequence[float],
                  test_accuracy: Sequence[float], violation: Sequence[float],
                  effective_dimension: Sequence[float], threshold: float = 0.1) -> dict:
  """Stage boundaries of one run (one seed); see the module docstring for the rules."""
  steps = np.asarray(steps)
  train_accuracy, test_accuracy = np.asarray(train_accuracy), np.asarray(test_accuracy)
  violation, dims = np.asarray(violation), np.asarray(effective_dimension, np.float64)
  memorized = _first(steps, train_accuracy >= ACCURACY_LEVEL)
  symmetry = None
  if memorized is not None:
    after = steps >= memorized
    running_peak = np.maximum.accumulate(np.where(after, violation, 0.0))
    symmetry = _first(steps, after & (violation < threshold * running_peak))
  final = dims[-1]
  close = np.abs(dims - final) <= ORGANIZED_TOLERANCE * max(final, 1.0)
  stays = np.flip(np.cumprod(np.flip(close))).astype(bool)  # close from here to the end
  return {
      "step_memorized": memorized,
      "step_symmetry": symmetry,
      "step_generalized": _first(steps, test_accuracy >= ACCURACY_LEVEL),
      "step_organized": _first(steps, stays),
  }
