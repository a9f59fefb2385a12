"""The rhythm module: tempo-invariant inter-onset-interval ratios and duration patterns.

Inter-onset intervals (IOIs) change with tempo; the ratio of each IOI to the one before does
not, and neither does the ratio of successive durations. Both are compared in log2 (a dotted
rhythm is log2 3 = 1.58 either way) and aligned with Smith-Waterman (equal ratio +2, other -1,
skip -1.5). Where the ratios align, the metric agreement is the share of aligned notes that fall
at the same position in their bars (a copy shifted against the barline keeps its ratios and
loses this).
"""

import numpy as np

from llmjax.experiments.music_judge.alignment import local_align
from llmjax.experiments.music_judge.finding import Finding, matched_notes, passages
from llmjax.experiments.music_judge.piece import Piece

MATCH, MISMATCH, GAP, TOLERANCE = 2.0, -1.0, 1.5, 0.05


def ioi_ratios(piece: Piece) -> np.ndarray:
  """R_(N-2): log2 of each inter-onset interval over the one before."""
  onsets = np.array([n.onset for n in piece.melody])
  ioi = np.diff(onsets)
  return np.log2(ioi[1:] / ioi[:-1])


def duration_ratios(piece: Piece) -> np.ndarray:
  """D_(N-1): log2 of each note's duration over the one before."""
  durations = np.array([n.duration for n in piece.melody])
  return np.log2(durations[1:] / durations[:-1])


def bar_phase(piece: Piece, index: int) -> float:
  """Where note `index` starts within its bar, as a fraction of the bar (0 = the downbeat)."""
  return ((piece.melody[index].onset - piece.pickup) / piece.bar_quarters) % 1.0


def _close_scores(a: np.ndarray, b: np.ndarray):
  return lambda i, j: np.where(np.abs(a[i] - b[j]) < TOLERANCE, MATCH, MISMATCH)


def compare_rhythm(a: Piece, b: Piece) -> Finding:
  """How much of A's rhythm B contains, at any tempo."""
  ra, rb = ioi_ratios(a), ioi_ratios(b)
  if len(ra) == 0 or len(rb) == 0:
    return Finding("rhythm", 0.0, {"rhythm_share_a": 0.0, "rhythm_share_b": 0.0,
                                   "rhythm_duration_share_a": 0.0, "rhythm_metric": 0.0},
                   "rhythm: too few notes to compare")
  alignment = local_align(ra, rb, _close_scores(ra, rb), gap=GAP)
  da, db = duration_ratios(a), duration_ratios(b)
  durations = local_align(da, db, _close_scores(da, db), gap=GAP)
  matched = [(i, j) for i, j in alignment.pairs if abs(ra[i] - rb[j]) < TOLERANCE]
  # ratio k spans notes k, k+1, k+2: its middle note is where both rhythms agree in time.
  notes_a, notes_b = matched_notes(matched, 3)
  offsets = [(bar_phase(b, j + 1) - bar_phase(a, i + 1)) % 1.0 for i, j in matched]
  same_place = sum(1 for o in offsets if min(o, 1 - o) < 1e-3)
  metric = same_place / len(matched) if matched else 0.0
  share_a, share_b = alignment.matches / len(ra), alignment.matches / len(rb)
  features = {"rhythm_share_a": share_a, "rhythm_share_b": share_b,
              "rhythm_duration_share_a": durations.matches / len(da), "rhythm_metric": metric}
  if matched:
    shift = float(np.median(offsets)) * b.bar_quarters  # in B's own quarter notes
    shift = shift - b.bar_quarters if shift > b.bar_quarters / 2 else shift
    placed = ("on the same beats" if same_place == len(matched) else
              f"{same_place} of {len(matched)} on the same beat position"
              + (f" (B displaced by {shift:+g} quarter notes)" if abs(shift) > 1e-3 else ""))
    where_a, where_b = passages(a, b, alignment, 3)
    text = (f"rhythm: {alignment.matches} of {len(ra)} inter-onset ratios of A match "
            f"({share_a:.0%}), {where_a} of A against {where_b} of B; {placed}; durations "
            f"agree on {durations.matches} of {len(da)}")
  else:
    text = f"rhythm: none of A's {len(ra)} inter-onset ratios recurs in B in order"
  return Finding("rhythm", share_a, features, text, notes_a, notes_b)
