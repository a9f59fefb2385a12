"""Sums with two verifiable strategies: the CoT Encyclopedia's CPU demonstration task.

A question lists 4-6 numbers ("add 3 5 2 7"); a chain of thought writes one addition per step
and ends "answer N". Two strategies reach the same sum:
  sequential  a running total: 3+5=8 8+2=10 10+7=17
  pairwise    adjacent pairs, then pairs of the results (a leftover is carried): 3+5=8 2+7=9
              8+9=17
Which one a chain used is read from its steps by a rule (`strategy_of`), the demo's stand-in for
the judge's classification, and the answer is checked against the true sum.
"""

import re

import numpy as np

STRATEGIES = ("sequential", "pairwise")
TAGS = {"sequential": "[seq]", "pairwise": "[pair]"}
_STEP = re.compile(r"(\d+)\+(\d+)=(\d+)")


def questions(n: int, seed: int, lengths=(4, 5, 6), low: int = 1, high: int = 9) -> list[list]:
  """`n` distinct number lists with lengths from `lengths`."""
  rng = np.random.default_rng(seed)
  seen, out = set(), []
  while len(out) < n:
    numbers = tuple(int(x) for x in rng.integers(low, high + 1, int(rng.choice(lengths))))
    if numbers not in seen:
      seen.add(numbers)
      out.append(list(numbers))
  return out


def prompt(numbers: list[int], strategy: str | None = None) -> str:
  """"add 3 5 2 7 =" (with a strategy tag before "=" when one is prescribed)."""
  tag = f" {TAGS[strategy]}" if strategy else ""
  return "add " + " ".join(map(str, numbers)) + tag + " ="


def chain(numbers: list[int], strategy: str) -> str:
  """The chain of thought of `strategy`, ending "answer N"."""
  steps = []
  if strategy == "sequential":
    total = numbers[0]
    for x in numbers[1:]:
      steps.append(f"{total}+{x}={total + x}")
      total += x
  elif strategy == "pairwise":
    level = list(numbers)
    while len(level) > 1:
      nxt = []
      for i in range(0, len(level) - 1, 2):
        steps.append(f"{level[i]}+{level[i + 1]}={level[i] + level[i + 1]}")
        nxt.append(level[i] + level[i + 1])
      if len(level) % 2:
        nxt.append(level[-1])
      level = nxt
    total = level[0]
  else:
    raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES}")
  return " " + " ".join(steps) + f" answer {total}"


def answer_of(text: str) -> int | None:
  found = re.findall(r"answer (\d+)", text)
  return int(found[-1]) if found else None


def is_correct(numbers: list[int], text: str) -> bool:
  return answer_of(text) == sum(numbers)


def strategy_of(numbers: list[int], text: str) -> str | None:
  """'sequential' when the second step adds the third number to the first step's result,
  'pairwise' when it adds the third and fourth numbers (the next pair), None otherwise (a chain
  that follows neither, one that fits both, or one too short to tell)."""
  steps = [tuple(int(g) for g in m) for m in _STEP.findall(text.split("answer")[0])]
  if len(numbers) < 3 or len(steps) < 2:
    return None
  (a1, b1, r1), (a2, b2, _) = steps[0], steps[1]
  if (a1, b1) != (numbers[0], numbers[1]):
    return None
  sequential = a2 == r1 and b2 == numbers[2]
  pairwise = len(numbers) >= 4 and (a2, b2) == (numbers[2], numbers[3])
  if sequential == pairwise:  # neither, or both (e.g. 3 5 8 8: 8+8 is either's next step)
    return None
  return "sequential" if sequential else "pairwise"
