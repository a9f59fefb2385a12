"""The three stages of grokking, read off a run's curves.

The rules (each gives the first logged step at which it holds, or None when the run never
reaches it; a stage not reached is None, never a step number):

  memorized          train accuracy >= 0.99.
  symmetry acquired  at or after memorization, the violation falls below `threshold` times its
                     peak since memorization. The caller picks the curve; the grokking
                     experiment's default is the *maximum* instance-level violation, as in the
                     paper's soft threshold, of the task's invariances (the identities that
                     compare two inputs' answers, symmetry.py): the worst instance of
                     the identities that compose answers (associativity of x+y) waited, in our
                     runs, for the last wrong test answer, after generalization. The mean over
                     instances (llmjax's earlier rule) and every identity are options
                     (`analysis.violation_statistic`, `analysis.stage_identities`). Before
                     memorization a near-uniform model violates nothing, so the crossing that
                     matters is the fall that follows the rise during memorization; relative to
                     the peak, one threshold serves task families whose answer spaces give
                     violations of different scales.
  generalized        test accuracy >= 0.99.
  organized          at or after every earlier stage (memorized, symmetry, generalized: all must
                     be reached), the effective dimension has fallen by at least `min_drop` (a
                     fraction) from its peak since memorization, and from that step to the end of
                     the run it stays within 10% of its final value, over at least
                     `ORGANIZED_PLATEAU_EVALS` evaluations (so the last logged step alone,
                     trivially "close to the final value", never counts). A run whose dimension
                     never fell is not organized, however long it ran.

Stage (i) memorization runs from the start to `memorized`; stage (ii) symmetry acquisition from
`memorized` to `symmetry`; stage (iii) geometric organization from `symmetry` to `organized`.
The symmetry crossing is not forced before generalization: whether it comes first is what the
diagnostic measures (benchmarks/grokking_diagnostic.py); `ordered` says whether
memorized <= symmetry <= generalized <= organized held, all reached.
"""

from typing import Sequence

import numpy as np

ACCURACY_LEVEL = 0.99
ORGANIZED_TOLERANCE = 0.10
ORGANIZED_MIN_DROP = 0.25
ORGANIZED_PLATEAU_EVALS = 3  # the organized evaluation and at least two after it
STATISTICS = ("max", "mean")


def _first(steps: np.ndarray, condition: np.ndarray) -> int | None:
  hits = np.flatnonzero(condition)
  return int(steps[hits[0]]) if len(hits) else None


def detect_stages(steps: Sequence[int], train_accuracy: Sequence[float],
                  test_accuracy: Sequence[float], violation: Sequence[float],
                  effective_dimension: Sequence[float], threshold: float = 0.1,
                  min_drop: float = ORGANIZED_MIN_DROP) -> dict:
  """Stage boundaries of one run (one seed); see the module docstring for the rules.

  Args:
    steps, train_accuracy, test_accuracy, violation, effective_dimension: the logged curves,
      one value per evaluation, in step order. `violation` is the statistic the caller chose
      (the maximum instance violation by default in the grokking experiment).
    threshold: the symmetry crossing, as a fraction of the post-memorization peak.
    min_drop: the fraction by which the effective dimension must fall from its
      post-memorization peak for the run to count as organized.
  Returns:
    {"step_memorized", "step_symmetry", "step_generalized", "step_organized": int | None,
     "ordered": bool}
  """
  steps = np.asarray(steps)
  train_accuracy, test_accuracy = np.asarray(train_accuracy), np.asarray(test_accuracy)
  violation, dims = np.asarray(violation), np.asarray(effective_dimension, np.float64)
  memorized = _first(steps, train_accuracy >= ACCURACY_LEVEL)
  generalized = _first(steps, test_accuracy >= ACCURACY_LEVEL)
  symmetry = organized = None
  if memorized is not None:
    after = steps >= memorized
    running_peak = np.maximum.accumulate(np.where(after, violation, 0.0))
    symmetry = _first(steps, after & (violation < threshold * running_peak))
    dims_peak = np.maximum.accumulate(np.where(after, dims, 0.0))
    if symmetry is not None and generalized is not None:
      final = dims[-1]
      close = np.abs(dims - final) <= ORGANIZED_TOLERANCE * max(final, 1.0)
      stays = np.flip(np.cumprod(np.flip(close))).astype(bool)  # close from here to the end
      fell = dims <= (1.0 - min_drop) * dims_peak
      plateau = np.arange(len(steps)) <= len(steps) - ORGANIZED_PLATEAU_EVALS
      organized = _first(steps, (steps >= max(symmetry, generalized)) & fell & stays & plateau)
  found = [memorized, symmetry, generalized, organized]
  return {
      "step_memorized": memorized,
      "step_symmetry": symmetry,
      "step_generalized": generalized,
      "step_organized": organized,
      "ordered": all(s is not None for s in found) and found == sorted(found),
  }
