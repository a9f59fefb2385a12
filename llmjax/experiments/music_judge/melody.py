"""The melody module: transposition-invariant pitch intervals and contour, locally aligned.

A melody of n notes is read as its n-1 intervals in semitones (the same under any
transposition) and its contour (up, down, repeat). Intervals are aligned with Smith-Waterman
(equal interval +2, different -1, a skipped interval -1.5: an inserted passing or neighbour
note costs about one and a half matches, so an ornamented copy still aligns end to end). The
transposition is the median pitch difference of the matched notes.
"""

import numpy as np

from llmjax.experiments.music_judge.alignment import local_align
from llmjax.experiments.music_judge.finding import Finding, matched_notes, passages
from llmjax.experiments.music_judge.piece import Piece, interval_name

MATCH, MISMATCH, GAP = 2.0, -1.0, 1.5


def intervals(piece: Piece) -> np.ndarray:
  """I_(N-1): semitone steps between successive melody notes."""
  return np.diff(np.array([n.pitch for n in piece.melody], np.int64))


def contour(piece: Piece) -> np.ndarray:
  """C_(N-1): the sign of each step (+1 up, -1 down, 0 repeat)."""
  return np.sign(intervals(piece))


def _equal_scores(a: np.ndarray, b: np.ndarray):
  return lambda i, j: np.where(a[i] == b[j], MATCH, MISMATCH)


def shared_share(a: Piece, b: Piece) -> float:
  """The share of the shorter melody's intervals that the other repeats in order (one
  alignment, no contour): how tunes are grouped into families for the benchmark's splits."""
  ia, ib = intervals(a), intervals(b)
  if not len(ia) or not len(ib):
    return 0.0
  return local_align(ia, ib, _equal_scores(ia, ib), gap=GAP).matches / min(len(ia), len(ib))


def compare_melody(a: Piece, b: Piece) -> Finding:
  """How much of A's melody B contains, wherever and in whatever key."""
  ia, ib = intervals(a), intervals(b)
  alignment = local_align(ia, ib, _equal_scores(ia, ib), gap=GAP)
  ca, cb = contour(a), contour(b)
  contour_alignment = local_align(ca, cb, _equal_scores(ca, cb), gap=GAP)
  matched = [(i, j) for i, j in alignment.pairs if ia[i] == ib[j]]
  notes_a, notes_b = matched_notes(matched, 2)
  shift = (int(round(float(np.median([b.melody[j].pitch - a.melody[i].pitch
                                        for i, j in matched])))) if matched else 0)
  share_a, share_b = alignment.matches / len(ia), alignment.matches / len(ib)
  features = {"melody_share_a": share_a, "melody_share_b": share_b,
              "melody_score": alignment.score / (MATCH * min(len(ia), len(ib))),
              "melody_contour_share_a": contour_alignment.matches / len(ca)}
  if matched:
    where_a, where_b = passages(a, b, alignment, 2)
    text = (f"melody: {alignment.matches} of {len(ia)} intervals of A match ({share_a:.0%}), "
            f"{where_a} of A against {where_b} of B, {interval_name(shift)}; contour agrees "
            f"on {contour_alignment.matches} of {len(ca)} steps")
  else:
    text = f"melody: no interval of A's {len(ia)} recurs in B in order"
  return Finding("melody", share_a, features, text, notes_a, notes_b)
