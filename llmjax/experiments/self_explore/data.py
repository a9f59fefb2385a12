"""The data of Self-Explore (Hwang et al. 2024, "Self-Explore to Avoid the Pit"), as pure
functions of sampled rationales: no model here, so each rule can be tested on its own.

  rft_rationales     the RFT data of one problem: correct samples whose calculator annotations
                     check, one per equation signature, at most `max_per_problem`.
  outcome_pairs      chosen = a correct rationale, rejected = the not-yet-used incorrect one
                     (wrong or unparsable) farthest from it in edit distance.
  explore            the first pit of each rejected rationale: its steps are its non-empty
                     lines; from the prefix ending at step s = 1 .. min(#steps, max_steps), k
                     completions are sampled; the first s from which none is correct is the pit.
  step_pairs         the fine-grained pairs: at a pit s = 1, prompt = the question, rejected =
                     step 1, chosen = the whole original chosen rationale; at s > 1, prompt =
                     the question and the steps before s, rejected = step s alone, chosen = the
                     shortest correct completion sampled from the prefix before s. Duplicates
                     within a problem count once.

Prompts follow the SFT format `question + "\\n" + rationale`, so a prefix is the question, a
newline, and each step followed by a newline; a completion continues from there. A completion
is judged on the whole rationale (prefix steps + completion), so a prefix that already states
a wrong answer cannot be completed correctly.
"""

import dataclasses
from typing import Callable, Sequence

import numpy as np

from llmjax.tasks.math_answers import annotations_check, equation_signature, is_correct

MAX_RFT_PER_PROBLEM = 8
MAX_EXPLORED_STEPS = 20


def rft_rationales(samples: Sequence[str], gold: str,
                   max_per_problem: int = MAX_RFT_PER_PROBLEM) -> list[str]:
  """The RFT rows of one problem, in sampling order (the first of each signature is kept)."""
  kept, signatures = [], set()
  for rationale in samples:
    if not (is_correct(rationale, gold) and annotations_check(rationale)):
      continue
    signature = equation_signature(rationale)
    if signature in signatures:
      continue
    signatures.add(signature)
    kept.append(rationale)
    if len(kept) == max_per_problem:
      break
  return kept


def edit_distance(a: str, b: str) -> int:
  """Levenshtein distance between two strings (characters), one numpy row at a time."""
  if len(a) < len(b):
    a, b = b, a
  if not b:
    return len(a)
  codes_b = np.frombuffer(b.encode("utf-32-le"), np.uint32)
  previous = np.arange(len(b) + 1)
  for i, char in enumerate(a, start=1):
    substitute = previous[:-1] + (codes_b != ord(char))
    current = np.empty_like(previous)
    current[0] = i
    current[1:] = np.minimum(previous[1:] + 1, substitute)
    # Insertions run along the row: a running minimum of (current[j] - j) + j.
    offsets = np.arange(len(b) + 1)
    current = np.minimum.accumulate(current - offsets) + offsets
    previous = current
  return int(previous[-1])


def outcome_pairs(samples: Sequence[str], gold: str) -> list[tuple[str, str]]:
  """(chosen, rejected) pairs of one problem: each correct sample in order takes the unused
  incorrect sample farthest from it; pairs stop when the incorrect samples run out."""
  correct = [s for s in samples if is_correct(s, gold)]
  unused = [s for s in samples if not is_correct(s, gold)]
  pairs = []
  for chosen in correct:
    if not unused:
      break
    distances = [edit_distance(chosen, rejected) for rejected in unused]
    pairs.append((chosen, unused.pop(int(np.argmax(distances)))))
  return pairs


def steps_of(rationale: str) -> list[str]:
  """The steps of a rationale: its non-empty lines, stripped."""
  return [line.strip() for line in rationale.split("\n") if line.strip()]


def prefix_prompt(question: str, steps: Sequence[str]) -> str:
  """The SFT-format prompt that ends after `steps`: question, newline, each step + newline."""
  return question + "\n" + "".join(step + "\n" for step in steps)


@dataclasses.dataclass
class Exploration:
  """One rejected rationale explored. `completions[j]` are the samples drawn from the prefix
  ending at step j + 1 and `correct[j]` their verdicts; `pit` is the 1-based step of the first
  pit, or None when every explored prefix could still be completed correctly."""
  problem: str
  question: str
  gold: str
  chosen: str
  steps: list[str]
  completions: list[list[str]] = dataclasses.field(default_factory=list)
  correct: list[list[bool]] = dataclasses.field(default_factory=list)
  pit: int | None = None
  done: bool = False


def explore(items: Sequence[Exploration], complete: Callable[[list[str], int], list[list[str]]],
            k: int, max_steps: int = MAX_EXPLORED_STEPS) -> list[Exploration]:
  """Find the first pit of every item, all items advancing one step per round so each round
  is one batched call: `complete(prompts, k)` returns k completions per prompt."""
  for item in items:
    if not item.steps:
      item.done = True
  while True:
    active = [item for item in items if not item.done]
    if not active:
      return list(items)
    prompts = [prefix_prompt(item.question, item.steps[:len(item.completions) + 1])
               for item in active]
    for item, prompt, samples in zip(active, prompts, complete(prompts, k)):
      if len(samples) != k:
        raise ValueError(f"complete() returned {len(samples)} completions, expected {k}")
      step = len(item.completions) + 1
      rationale_prefix = "\n".join(item.steps[:step]) + "\n"
      verdicts = [is_correct(rationale_prefix + sample, item.gold) for sample in samples]
      item.completions.append(list(samples))
      item.correct.append(verdicts)
      if not any(verdicts):
        item.pit, item.done = step, True
      elif step >= min(len(item.steps), max_steps):
        item.done = True


def step_pairs(explored: Sequence[Exploration]) -> list[dict]:
  """The fine-grained preference rows {problem, prompt, chosen, rejected, pit} of the items
  that found a pit, deduplicated per problem."""
  rows, seen = [], set()
  for item in explored:
    if item.pit is None:
      continue
    s = item.pit
    if s == 1:
      prompt, chosen = item.question + "\n", item.chosen
    else:
      prompt = prefix_prompt(item.question, item.steps[:s - 1])
      correct = [c for c, ok in zip(item.completions[s - 2], item.correct[s - 2]) if ok]
      chosen = min(correct, key=len)  # the prefix before s was no pit: one is correct
    rejected = item.steps[s - 1]
    key = (item.problem, prompt, chosen, rejected)
    if key in seen:
      continue
    seen.add(key)
    rows.append({"problem": item.problem, "prompt": prompt, "chosen": chosen,
                 "rejected": rejected, "pit": s})
  return rows


def pit_histogram(explored: Sequence[Exploration]) -> dict[str, int]:
  """{"1": count, "2": ..., "none": count}: where the first pits fell."""
  counts: dict[str, int] = {}
  for item in explored:
    key = "none" if item.pit is None else str(item.pit)
    counts[key] = counts.get(key, 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: (kv[0] == "none", int(kv[0])
                                                    if kv[0] != "none" else 0)))
