"""Sorting digits: a procedural task whose answers are checked exactly, for preference
training at CPU scale (the `dpo` tiny preset).

A prompt "sort 3141=" has one correct completion, its digits in ascending order ("1134"); every
other string is wrong. `noisy_examples` makes SFT data with a systematic mistake: for prompts
that contain the `trap` digit, a `noise` share of the answers has the trap digit swapped with
its right-hand neighbour. With noise above one half the wrong answer is the most likely one for
those prompts, so the SFT policy's greedy answer is wrong there, and preference pairs of its
own samples (a verified right answer against a wrong one) have something real to fix.
"""

import numpy as np

from llmjax.errors import UserError

PREFIX, SUFFIX = "sort ", "="


def prompts(n: int, digits: int, seed: int) -> list[str]:
  """n prompts of `digits` random digits each (drawn with replacement)."""
  rng = np.random.default_rng(seed)
  return [PREFIX + "".join(map(str, rng.integers(0, 10, digits))) + SUFFIX for _ in range(n)]


def disjoint_prompts(counts: dict[str, int], digits: int, seed: int) -> dict[str, list[str]]:
  """Prompt sets of the given sizes that share no prompt: one random order of all 10^digits
  digit strings, cut into consecutive pieces (so a test prompt was never trained on)."""
  total, space = sum(counts.values()), 10 ** digits
  if total > space:
    raise UserError(f"{total} distinct prompts requested ({counts}), but {digits} digits make "
                    f"only {space}")
  order = np.random.default_rng(seed).permutation(space)[:total]
  out, start = {}, 0
  for name, n in counts.items():
    out[name] = [PREFIX + str(i).zfill(digits) + SUFFIX for i in order[start:start + n]]
    start += n
  return out


def digits_of(prompt: str) -> str:
  return prompt[len(PREFIX):-len(SUFFIX)]


def answer(prompt: str) -> str:
  """The correct completion: the prompt's digits sorted."""
  return "".join(sorted(digits_of(prompt)))


def is_correct(prompt: str, completion: str) -> bool:
  return completion.strip() == answer(prompt)


def has_trap(prompt: str, trap: int) -> bool:
  return str(trap) in digits_of(prompt)


def trapped(prompt: str, trap: int) -> str:
  """The systematic mistake: the sorted digits with the trap digit swapped with its nearest
  different neighbour, the larger one after it when there is one, else the smaller one before
  it (the sorted answer only when every digit is the trap digit)."""
  digits, t = list(answer(prompt)), str(trap)
  last, first = "".join(digits).rindex(t), "".join(digits).index(t)
  if last + 1 < len(digits):
    digits[last], digits[last + 1] = digits[last + 1], digits[last]
  elif first > 0:
    digits[first - 1], digits[first] = digits[first], digits[first - 1]
  return "".join(digits)


def noisy_examples(task_prompts: list[str], noise: float, trap: int, seed: int) -> list[dict]:
  """{prompt, completion} rows; a prompt holding the trap digit gets the trapped answer with
  probability `noise`, every other prompt its correct answer."""
  rng = np.random.default_rng(seed)
  rows = []
  for p in task_prompts:
    wrong = has_trap(p, trap) and rng.random() < noise
    rows.append({"prompt": p, "completion": trapped(p, trap) if wrong else answer(p)})
  return rows
