"""What an attribute module returns: numbers, the matched notes, and a sentence."""

import dataclasses


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
