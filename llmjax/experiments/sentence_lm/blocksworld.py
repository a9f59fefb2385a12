"""Blocksworld-style planning with a simulator: stacks of named blocks, a goal arrangement, a
plan of moves, one move a step.

  question: The red block is on the table. The blue block is on the red block. Goal: the blue
            block is on the table, the red block is on the blue block. What moves reach the goal?
  steps:    Move the blue block from the red block to the table.
            Move the red block from the table to the blue block.
  answer:   ### The goal is reached.

A move takes a clear block (nothing on it) onto the table or onto another clear block. The
reference plan puts every block whose tower below it differs from the goal on the table (top
first), then builds the goal towers bottom-up. `is_correct` does not compare with it: it
replays the moves a text states, from the initial state, through the simulator, and accepts
any legal plan that ends in the goal (an illegal move fails the plan).
"""

import dataclasses
import re

import numpy as np

ANSWER = "### The goal is reached."
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black", "pink",
          "brown")
TABLE = "the table"
_MOVE = re.compile(r"Move the (\w+) block from (the table|the (\w+) block) to "
                   r"(the table|the (\w+) block)\.")


def _place(name: str) -> str:
  return TABLE if name == TABLE else f"the {name} block"


@dataclasses.dataclass(frozen=True)
class Problem:
  start: tuple[tuple[str, str], ...]  # (block, what it is on), a block or TABLE
  goal: tuple[tuple[str, str], ...]

  def question(self) -> str:
    state = " ".join(f"The {b} block is on {_place(on)}." for b, on in self.start)
    goal = ", ".join(f"the {b} block is on {_place(on)}" for b, on in self.goal)
    return f"{state} Goal: {goal}. What moves reach the goal?"

  def steps(self) -> list[str]:
    return [move_sentence(*m) for m in reference_plan(dict(self.start), dict(self.goal))]

  def to_row(self) -> dict:
    return {"question": self.question(), "steps": self.steps(), "answer": ANSWER,
            "label": "goal", "start": [list(x) for x in self.start],
            "goal": [list(x) for x in self.goal]}


def move_sentence(block: str, source: str, target: str) -> str:
  return f"Move the {block} block from {_place(source)} to {_place(target)}."


def _random_state(rng, blocks) -> dict[str, str]:
  order = [blocks[i] for i in rng.permutation(len(blocks))]
  towers: list[list[str]] = []
  for b in order:
    if towers and rng.random() < 0.6:
      towers[int(rng.integers(len(towers)))].append(b)
    else:
      towers.append([b])
  return {b: (tower[i - 1] if i else TABLE) for tower in towers for i, b in enumerate(tower)}


def _below(state: dict[str, str], block: str) -> list[str]:
  chain = []
  while block != TABLE:
    block = state[block]
    chain.append(block)
  return chain


def _clear(state: dict[str, str], block: str) -> bool:
  return block not in state.values()


def reference_plan(start: dict[str, str], goal: dict[str, str]) -> list[tuple[str, str, str]]:
  """Moves (block, from, to) that take `start` to `goal` (module docstring)."""
  state, plan = dict(start), []
  misplaced = {b for b in state if _below(state, b) != _below(goal, b)}
  # Unstack: a block above a misplaced one must move too; take clear blocks top-down.
  to_clear = {b for b in state if misplaced & ({b} | set(_below(state, b)))}
  while True:
    movable = sorted(b for b in to_clear if _clear(state, b) and state[b] != TABLE)
    if not movable:
      break
    b = movable[0]
    plan.append((b, state[b], TABLE))
    state[b] = TABLE
    to_clear.discard(b)
  # Build: place each block whose goal support is already final, bottom-up.
  while True:
    ready = sorted(b for b in state if state[b] != goal[b] and _clear(state, b)
                   and (goal[b] == TABLE or (_clear(state, goal[b])
                                             and _below(state, goal[b]) == _below(goal, goal[b]))))
    if not ready:
      break
    b = ready[0]
    plan.append((b, state[b], goal[b]))
    state[b] = goal[b]
  if state != goal:
    raise AssertionError("reference plan failed")  # the construction above always succeeds
  return plan


def problems(count: int, seed: int, blocks=(3, 4, 5)) -> list[Problem]:
  """`count` distinct problems with a non-empty plan, seeded."""
  rng = np.random.default_rng(seed)
  out, seen = [], set()
  while len(out) < count:
    n = int(rng.choice(blocks))
    names = [COLORS[i] for i in sorted(rng.choice(len(COLORS), n, replace=False))]
    start, goal = _random_state(rng, names), _random_state(rng, names)
    if start == goal:
      continue
    problem = Problem(tuple(sorted(start.items())), tuple(sorted(goal.items())))
    if problem.question() not in seen:
      seen.add(problem.question())
      out.append(problem)
  return out


def simulate(start: dict[str, str], moves) -> dict[str, str] | None:
  """The state after `moves` (block, from, to), or None at the first illegal move."""
  state = dict(start)
  for block, source, target in moves:
    if (block not in state or state[block] != source or not _clear(state, block)
        or block == target or (target != TABLE and (target not in state
                                                    or not _clear(state, target)))):
      return None
    state[block] = target
  return state


def parse_moves(text: str) -> list[tuple[str, str, str]]:
  """The moves a text states, in order."""
  return [(m.group(1), m.group(3) or TABLE, m.group(5) or TABLE) for m in _MOVE.finditer(text)]


def is_correct(row: dict, text: str) -> bool:
  """The text's moves, replayed from the row's start, are legal and end in its goal, and the
  text ends the plan with the answer sentence."""
  if "###" not in text:
    return False
  start, goal = dict(map(tuple, row["start"])), dict(map(tuple, row["goal"]))
  final = simulate(start, parse_moves(text[:text.index("###")]))
  return final == goal
