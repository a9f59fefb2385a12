"""Local alignment (Smith-Waterman, linear gap cost) of two symbol sequences.

Every module aligns its own sequences (intervals, rhythm ratios, Roman numerals) with this one
routine and a similarity function of its own. A row of the dynamic programme is computed at once
with numpy: with a linear gap cost g, H[i, j] = max(T[j], H[i, j-1] - g) is a running maximum,
H[i, j] = max_{k<=j}(T[k] + g k) - g j, where T holds the diagonal and vertical moves.
"""

import dataclasses
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Alignment:
  """The best local alignment. `pairs`: aligned (i, j) positions, matched or not, in order;
  `matches`: how many aligned pairs are similar enough to count as the same symbol."""

  score: float
  pairs: tuple[tuple[int, int], ...]
  matches: int


def local_align(a: Sequence, b: Sequence, similarity: Callable[[np.ndarray], np.ndarray],
                gap: float = 1.0, match_at: float = 0.0) -> Alignment:
  """Smith-Waterman alignment of `a` against `b`.

  Args:
    similarity: S_AxB (an array of a[i] against b[j]) -> the score of aligning them (positive
      for alike symbols, negative for unlike ones); built by the caller from numpy arrays.
    gap: the cost of skipping one symbol on either side.
    match_at: an aligned pair with a score above this counts in `matches`.
  """
  n, m = len(a), len(b)
  if n == 0 or m == 0:
    return Alignment(0.0, (), 0)
  s_AxB = np.asarray(similarity(np.arange(n)[:, None], np.arange(m)[None, :]), np.float64)
  h = np.zeros((n + 1, m + 1))
  ramp = gap * np.arange(m + 1)
  for i in range(1, n + 1):
    t = np.zeros(m + 1)
    t[1:] = np.maximum(h[i - 1, :-1] + s_AxB[i - 1], h[i - 1, 1:] - gap)
    t = np.maximum(t, 0.0)
    h[i] = np.maximum.accumulate(t + ramp) - ramp
  i, j = np.unravel_index(int(np.argmax(h)), h.shape)
  best = float(h[i, j])
  pairs, matches = [], 0
  while i > 0 and j > 0 and h[i, j] > 0:
    if np.isclose(h[i, j], h[i - 1, j - 1] + s_AxB[i - 1, j - 1]):
      pairs.append((i - 1, j - 1))
      matches += int(s_AxB[i - 1, j - 1] > match_at)
      i, j = i - 1, j - 1
    elif np.isclose(h[i, j], h[i - 1, j] - gap):
      i -= 1
    else:
      j -= 1
  return Alignment(best, tuple(reversed(pairs)), matches)
