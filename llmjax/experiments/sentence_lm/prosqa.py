"""ProsQA-style logical reasoning: a graph of invented concepts, and "is every X a Y or a Z?".

A problem states facts "Every A is a B." (edges of a directed acyclic graph over invented
concept names, shuffled) and asks which of two concepts every X is. Exactly one of them is
reachable from X; the proof is the path, one fact per step, and the answer sentence begins with
"###":

  facts:    Every wumpus is a yerpus. Every borpus is a zhumpus. Every yerpus is a gorpus. ...
  question: Is every wumpus a gorpus or a zhumpus?
  steps:    Every wumpus is a yerpus.
            Every yerpus is a gorpus.
  answer:   ### Every wumpus is a gorpus.

The graph (as in ProsQA) makes the question a search: the path from X to the answer Y, dead-end
branches hanging off the path (reachable, but neither Y nor Z), and a separate component in
which a chain of concepts leads to the distractor Z. The path is the only route from X to Y, so
every proof is the same sequence of steps, and `is_correct` checks the answer sentence names Y.
"""

import dataclasses
import re

import numpy as np

ANSWER_MARK = "###"
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "sh", "zh", "gr", "br", "st")
_VOWELS = ("a", "e", "i", "o", "u")
_ENDINGS = ("mpus", "rpus", "lpus", "ffin", "nkle", "zzle", "ndor", "mbo")


def concept_names(count: int, seed: int = 0) -> list[str]:
  """`count` distinct invented concept names ("wumpus", "brelpus", ...), seeded."""
  rng = np.random.default_rng(seed)
  names: list[str] = []
  seen = set()
  if count > len(_ONSETS) * len(_VOWELS) * len(_ENDINGS):
    raise ValueError(f"at most {len(_ONSETS) * len(_VOWELS) * len(_ENDINGS)} concept names")
  while len(names) < count:
    name = (_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            + _ENDINGS[rng.integers(len(_ENDINGS))])
    if name not in seen:
      seen.add(name)
      names.append(name)
  return names


@dataclasses.dataclass(frozen=True)
class Problem:
  """One question: its facts (shuffled), the proof path's concepts X..Y, and the distractor."""

  facts: tuple[tuple[str, str], ...]  # (A, B): "Every A is a B."
  path: tuple[str, ...]  # X, ..., Y
  distractor: str  # Z, not reachable from X
  y_first: bool  # the question names Y before Z
  stated: bool = True  # the facts are stated in the question (False: a fixed ontology's)

  @property
  def subject(self) -> str:
    return self.path[0]

  @property
  def answer(self) -> str:
    return self.path[-1]

  def question(self) -> str:
    first, second = ((self.answer, self.distractor) if self.y_first
                     else (self.distractor, self.answer))
    facts = " ".join(fact(a, b) for a, b in self.facts) + " " if self.stated else ""
    return f"{facts}Question: Is every {self.subject} a {first} or a {second}?"

  def steps(self) -> list[str]:
    """The proof, one fact per step."""
    return [fact(a, b) for a, b in zip(self.path[:-1], self.path[1:])]

  def answer_sentence(self) -> str:
    return f"{ANSWER_MARK} {fact(self.subject, self.answer)}"

  def sentences(self) -> list[str]:
    """The steps, then the answer sentence: what a sentence-level model produces in order."""
    return self.steps() + [self.answer_sentence()]

  def to_row(self) -> dict:
    return {"question": self.question(), "steps": self.steps(),
            "answer": self.answer_sentence(), "label": self.answer}


def fact(a: str, b: str) -> str:
  return f"Every {a} is a {b}."


def make_problem(rng: np.random.Generator, names: list[str], hops=(2, 3, 4),
                 branches=(2, 3), distractor_hops=(2, 3)) -> Problem:
  """A random problem over concepts drawn from `names` (module docstring)."""
  k = int(rng.choice(hops))
  n_branches = int(rng.choice(branches))
  d = int(rng.choice(distractor_hops))
  needed = (k + 1) + 2 * n_branches + (d + 1) + 1
  if needed > len(names):
    raise ValueError(f"a problem needs {needed} concept names; the pool has {len(names)}")
  chosen = [names[i] for i in rng.choice(len(names), needed, replace=False)]
  path, rest = chosen[:k + 1], chosen[k + 1:]
  facts = list(zip(path[:-1], path[1:]))
  for _ in range(n_branches):  # a dead end of one or two concepts off a path node (not Y)
    at = path[int(rng.integers(k))]
    first, second = rest.pop(), rest.pop()
    facts.append((at, first))
    if rng.random() < 0.5:
      facts.append((first, second))
  chain = [rest.pop() for _ in range(d + 1)]  # the distractor's component: ... -> Z
  facts += list(zip(chain[:-1], chain[1:]))
  facts.append((rest.pop(), chain[int(rng.integers(d))]))  # a second way into that chain
  order = rng.permutation(len(facts))
  return Problem(tuple(facts[i] for i in order), tuple(path), chain[-1],
                 bool(rng.random() < 0.5))


def problems(count: int, seed: int, names: list[str], **shape) -> list[Problem]:
  """`count` distinct problems (distinct questions), seeded."""
  rng = np.random.default_rng(seed)
  out, seen = [], set()
  while len(out) < count:
    problem = make_problem(rng, names, **shape)
    if problem.question() not in seen:
      seen.add(problem.question())
      out.append(problem)
  return out


def ontology(names: list[str], seed: int, roots: int = 4) -> dict[str, str]:
  """A fixed is-a tree over `names` ({concept: its parent}; the first `roots` have none): each
  later concept's parent is a random earlier one (a random recursive tree), seeded."""
  rng = np.random.default_rng(seed)
  return {name: names[int(rng.integers(i))] for i, name in enumerate(names) if i >= roots}


def ancestors(tree: dict[str, str], concept: str) -> list[str]:
  """The concept's parent, grandparent, ... up to its root."""
  out = []
  while concept in tree:
    concept = tree[concept]
    out.append(concept)
  return out


def ontology_problems(count: int, seed: int, tree: dict[str, str], hops=(2, 3, 4)) -> list[Problem]:
  """`count` distinct questions over one fixed tree, whose facts are not restated: the proof is
  the chain of parents from X up to its `k`-th ancestor Y; the distractor Z is no ancestor of X
  (one at Y's depth when there is one, so depth alone does not give the answer)."""
  rng = np.random.default_rng(seed)
  concepts = sorted(set(tree) | set(tree.values()))
  depth = {c: len(ancestors(tree, c)) for c in concepts}
  candidates = [c for c in concepts if depth[c] >= min(hops)]

  def distractors(x, y):
    up = ancestors(tree, x)
    others = [c for c in concepts if c != x and c not in up]
    return [c for c in others if depth[c] == depth[y]] or others

  capacity = sum(2 * len(distractors(x, ancestors(tree, x)[k - 1]))
                 for x in candidates for k in hops if k <= depth[x])
  if 2 * count > capacity:
    raise ValueError(f"the ontology allows {capacity} distinct questions of {hops} hops; "
                     f"{count} asked (at most half of them): use more concepts")
  out, seen = [], set()
  while len(out) < count:
    x = candidates[int(rng.integers(len(candidates)))]
    k = int(rng.choice([h for h in hops if h <= depth[x]]))
    up = ancestors(tree, x)
    y, path = up[k - 1], (x, *up[:k])
    level = distractors(x, y)
    z = level[int(rng.integers(len(level)))]
    problem = Problem(tuple(zip(path[:-1], path[1:])), path, z, bool(rng.random() < 0.5),
                      stated=False)
    if problem.question() not in seen:
      seen.add(problem.question())
      out.append(problem)
  return out


_ANSWER = re.compile(rf"{re.escape(ANSWER_MARK)}\s*Every (\w+) is a (\w+)\.")


def answer_of(text: str) -> tuple[str, str] | None:
  """(X, Y) of the first answer sentence ("### Every X is a Y.") in `text`, or None."""
  match = _ANSWER.search(text)
  return (match.group(1), match.group(2)) if match else None


def is_correct(row: dict, text: str) -> bool:
  """Whether `text` holds an answer sentence naming the row's label as what every subject is."""
  found = answer_of(text)
  subject = row["steps"][0].split()[1] if row["steps"] else None
  return found is not None and found[1] == row["label"] and found[0] == subject


def reachable(facts, start: str) -> set[str]:
  """Every concept that `start` is, by the facts (start included)."""
  edges: dict[str, list[str]] = {}
  for a, b in facts:
    edges.setdefault(a, []).append(b)
  seen, stack = {start}, [start]
  while stack:
    for b in edges.get(stack.pop(), ()):
      if b not in seen:
        seen.add(b)
        stack.append(b)
  return seen
