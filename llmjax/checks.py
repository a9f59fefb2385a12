"""Settings checked before anything compiles: one line naming the key and what it expects.

Each component checks its own section of the config in one place (the train loop `train.*`,
the optimizer `optim.*`, the mesh against the model's dimensions, each experiment its own
keys) with these helpers, so a zero, a negative or a non-finite value never reaches a
ZeroDivisionError, a grain traceback or a run that trains by gradient ascent.
"""

import math
from typing import Any

from llmjax.errors import UserError


def _name(prefix: str, key: str) -> str:
  """`prefix.key`, or `key` for a top-level setting (prefix '')."""
  return f"{prefix}.{key}" if prefix else key


def expect(ok: bool, key: str, value: Any, expected: str) -> None:
  if not ok:
    raise UserError(f"{key} = {value!r}: expected {expected}")


def positive_ints(section, prefix: str, *keys: str) -> None:
  """Each `section[key]` is an integer >= 1."""
  for key in keys:
    value = section[key]
    expect(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
           _name(prefix, key), value, "a positive integer")


def non_negative_ints(section, prefix: str, *keys: str) -> None:
  for key in keys:
    value = section[key]
    expect(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
           _name(prefix, key), value, "an integer >= 0")


def non_negative_floats(section, prefix: str, *keys: str) -> None:
  """Each `section[key]` is a finite number >= 0."""
  for key in keys:
    value = section[key]
    expect(isinstance(value, (int, float)) and not isinstance(value, bool)
           and math.isfinite(value) and value >= 0, _name(prefix, key), value,
           "a finite number >= 0")


def in_range(section, prefix: str, key: str, low: float, high: float) -> None:
  """`section[key]` lies in [low, high)."""
  value = section[key]
  expect(isinstance(value, (int, float)) and math.isfinite(value) and low <= value < high,
         _name(prefix, key), value, f"a number in [{low}, {high})")
