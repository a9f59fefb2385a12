"""Procedural multi-step arithmetic word problems in GSM8K's format, for CPU-sized Self-Explore.

A problem starts from a count (2-9) and applies 1-3 operations, each a sentence of the
question and a step of the rationale with a calculator annotation:

  question   "Tom has 4 cards. Then Tom gets 3 more. Then Tom doubles them. How many cards
             does Tom have now?"
  rationale  "4+3 = <<4+3=7>>7\\n7*2 = <<7*2=14>>14\\nThe answer is 14"

Counts stay in 0..99 (a subtraction never goes below zero), so a small byte-level model can
learn the arithmetic but makes mistakes at some step: the pits Self-Explore looks for. The
rationale's steps are bare equations (no prose) to keep the byte sequences short on CPU.

With `swap_operands` (the default) the reference rationale writes an addition or a
multiplication in either operand order ("4+3" or "3+4"), as GSM8K's annotators do: a problem
then has several correct equation signatures, so the model's own samples can add rationales
that RFT's signature deduplication keeps, which it cannot when every correct rationale has the
reference's equations.
"""

import numpy as np

NAMES = ("Tom", "Ann", "Sam", "Lea", "Max", "Ivy", "Ben", "Zoe")
ITEMS = ("cards", "pens", "cups", "eggs", "hats", "toys")
OPERATIONS = ("add", "subtract", "multiply")


def _operation(rng, value: int) -> tuple[str, int]:
  """A random operation applicable to `value` with a result in 0..99: (kind, operand)."""
  while True:
    kind = OPERATIONS[rng.integers(len(OPERATIONS))]
    if kind == "add":
      operand = int(rng.integers(1, 10))
      if value + operand <= 99:
        return kind, operand
    elif kind == "subtract" and value >= 1:
      return kind, int(rng.integers(1, min(value, 9) + 1))
    elif kind == "multiply":
      operand = int(rng.integers(2, 4))
      if value * operand <= 99:
        return kind, operand


_MULTIPLY_WORD = {2: "doubles", 3: "triples"}


def make_problem(rng: np.random.Generator, min_ops: int = 1, max_ops: int = 3,
                 swap_operands: bool = True) -> dict:
  """One problem: {"question", "rationale", "gold"} (gold: the answer as text)."""
  name, item = NAMES[rng.integers(len(NAMES))], ITEMS[rng.integers(len(ITEMS))]
  value = int(rng.integers(2, 10))
  sentences, steps = [f"{name} has {value} {item}."], []
  for _ in range(int(rng.integers(min_ops, max_ops + 1))):
    kind, operand = _operation(rng, value)
    if kind == "add":
      result, symbol = value + operand, "+"
      sentences.append(f"Then {name} gets {operand} more.")
    elif kind == "subtract":
      result, symbol = value - operand, "-"
      sentences.append(f"Then {name} gives away {operand}.")
    else:
      result, symbol = value * operand, "*"
      sentences.append(f"Then {name} {_MULTIPLY_WORD[operand]} them.")
    swap = swap_operands and symbol != "-" and bool(rng.integers(2))
    expression = f"{operand}{symbol}{value}" if swap else f"{value}{symbol}{operand}"
    steps.append(f"{expression} = <<{expression}={result}>>{result}")
    value = result
  sentences.append(f"How many {item} does {name} have now?")
  return {"question": " ".join(sentences),
          "rationale": "\n".join(steps) + f"\nThe answer is {value}", "gold": str(value)}


def make_problems(count: int, seed: int, min_ops: int = 1, max_ops: int = 3,
                  swap_operands: bool = True) -> list[dict]:
  """`count` problems with distinct questions, reproducible from `seed`."""
  if count < 1 or not 1 <= min_ops <= max_ops:
    raise ValueError(f"count = {count}, ops = {min_ops}..{max_ops}: expected count >= 1 and "
                     "1 <= min_ops <= max_ops")
  rng, problems, seen = np.random.default_rng(seed), [], set()
  for _ in range(count * 100):
    problem = make_problem(rng, min_ops, max_ops, swap_operands)
    if problem["question"] not in seen:
      seen.add(problem["question"])
      problems.append(problem)
      if len(problems) == count:
        return problems
  raise ValueError(f"could not draw {count} distinct problems with {min_ops}..{max_ops} steps")
