"""A procedurally generated English-like corpus, so language-model runs need no download.

Documents mix three kinds of line, each with structure a small model can learn quickly:
arithmetic facts ("17 plus 25 is 42."), counting runs ("count: 4 5 6 7 8.") and sentences from a
small grammar ("the red fox sees a small dog."). Fully determined by the seed.
"""

import numpy as np

_ADJECTIVES = ("red", "small", "quiet", "old", "green", "bright", "heavy", "lazy")
_NOUNS = ("fox", "dog", "cat", "bird", "river", "tree", "house", "child")
_VERBS = ("sees", "follows", "finds", "likes", "hears", "moves")


def _arithmetic(rng: np.random.Generator) -> str:
  a, b = rng.integers(0, 50, size=2)
  if rng.random() < 0.5:
    return f"{a} plus {b} is {a + b}."
  a, b = max(a, b), min(a, b)
  return f"{a} minus {b} is {a - b}."


def _counting(rng: np.random.Generator) -> str:
  start, length = rng.integers(0, 90), rng.integers(4, 9)
  return "count: " + " ".join(str(start + i) for i in range(length)) + "."


def _sentence(rng: np.random.Generator) -> str:
  def phrase():
    return f"{rng.choice(('the', 'a'))} {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
  return f"{phrase()} {rng.choice(_VERBS)} {phrase()}."


def procedural_documents(num_docs: int, seed: int, lines_per_doc: tuple[int, int] = (2, 6)):
  """Yields `num_docs` documents (strings) determined by `seed`."""
  rng = np.random.default_rng(seed)
  makers = (_arithmetic, _counting, _sentence)
  for _ in range(num_docs):
    n_lines = rng.integers(lines_per_doc[0], lines_per_doc[1] + 1)
    yield " ".join(makers[rng.integers(len(makers))](rng) for _ in range(n_lines))
