"""What an attribute module returns: numbers, the matched notes, and a sentence."""

import dataclasses

from llmjax.experiments.music_judge.alignment import Alignment
from llmjax.experiments.music_judge.piece import Piece, describe_passage


@dataclasses.dataclass(frozen=True)
class Finding:
  """One module's evidence about a pair (A, B).

  Attributes:
    module: "melody", "rhythm" or "harmony".
    score: the module's similarity in [0, 1] (its share of A found in B).
    features: named numbers for the learned baseline (each in [0, 1]).
    text: the finding in words, for a person or an LM judge.
    matched_a, matched_b: indices of A's and B's melody notes in the matched passage that
      match (melody and rhythm; empty for harmony).
  """

  module: str
  score: float
  features: dict[str, float]
  text: str
  matched_a: tuple[int, ...] = ()
  matched_b: tuple[int, ...] = ()


def matched_notes(matched: list[tuple[int, int]], width: int) -> tuple[tuple[int, ...], ...]:
  """The melody notes of A and of B under matched symbols, each symbol spanning `width` notes
  (an interval spans 2, a ratio of two inter-onset intervals 3)."""
  return tuple(tuple(sorted({k for pair in matched for k in range(pair[side],
                                                                  pair[side] + width)}))
               for side in (0, 1))


def passages(a: Piece, b: Piece, alignment: Alignment, width: int) -> tuple[str, str]:
  """Where the aligned passage lies in A and in B ("bar 3 beat 1 to bar 6 beat 2")."""
  (i0, j0), (i1, j1) = alignment.pairs[0], alignment.pairs[-1]
  return (describe_passage(a, a.melody[i0].onset, a.melody[i1 + width - 1].onset),
          describe_passage(b, b.melody[j0].onset, b.melody[j1 + width - 1].onset))
