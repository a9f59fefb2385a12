"""Compositional tasks of the coverage principle (Chang et al. 2025): chains of random functions
over a token set [N].

Each task is a small computation graph of functions f1, f2, ... with uniformly random tables:
  two_hop           b = f1(x1, x2);              t = f2(b, x3)
  three_hop         b1 = f1(x1, x2); b2 = f2(b1, x3); t = f3(b2, x4)
  parallel_two_hop  b1 = f1(x1, x2); b2 = f2(x3, x4); t = f3(b1, b2)
  path_ambiguous    b = f1(x1, x2);              t = f2(b, x2, x3)   (x2 reaches t by two paths)

A fraction (`seen_fraction`, default 0.7) of each function's domain is "seen"; training inputs
are sampled from the inputs all of whose function applications are seen, and each seen set is
then reduced to the entries the training inputs actually use. Every other input falls into one
test type by which functions it applies to seen entries: `both_seen` / `all_seen` (none unseen,
input not in training), `f{j}_unseen` (only f_j unseen), `both_unseen` / `all_unseen` (every
function unseen); `train_inferred` re-samples training inputs (held in). Mixed types with two
of three functions unseen are not tested.

Token layout: entities are ids 0..N-1 and nothing else (the vocabulary is N). A row is its
inputs x1..xn, then, with chain-of-thought supervision, the bridge entities (b1, b2, ...) in
function order, then the target t. The loss covers the bridges and the target.
Everything is a deterministic function of the seed.
"""

import dataclasses

import numpy as np

from llmjax.errors import UserError

# Each function: (arity, argument sources); a source >= 0 is an input position, -(j + 1) is the
# output of function j. The last function's output is the target.
GRAPHS = {
    "two_hop": (3, [(2, (0, 1)), (2, (-1, 2))]),
    "three_hop": (4, [(2, (0, 1)), (2, (-1, 2)), (2, (-2, 3))]),
    "parallel_two_hop": (4, [(2, (0, 1)), (2, (2, 3)), (2, (-1, -2))]),
    "path_ambiguous": (3, [(2, (0, 1)), (3, (-1, 1, 2))]),
}
_MAX_DOMAIN = 50_000_000  # inputs enumerated at once


@dataclasses.dataclass(frozen=True)
class Split:
  """Rows of one split: inputs [R, n], bridge entities [R, h-1], targets [R]."""

  inputs: np.ndarray
  bridges: np.ndarray
  targets: np.ndarray

  def __len__(self) -> int:
    return len(self.targets)


@dataclasses.dataclass
class CompositionalTask:
  kind: str
  n_tokens: int
  tables: list[np.ndarray]  # f_j as an array of shape (N,) * arity
  seen: list[np.ndarray]  # bool, same shapes: entries used by the training inputs
  splits: dict[str, Split]

  @property
  def num_inputs(self) -> int:
    return GRAPHS[self.kind][0]

  @property
  def test_types(self) -> list[str]:
    return [name for name in self.splits if name != "train"]

  def full_targets(self) -> np.ndarray:
    """The target of every input, as an array of shape (N,) * num_inputs."""
    inputs = domain(self.n_tokens, self.num_inputs)
    return evaluate(self.kind, self.tables, inputs)[1].reshape((self.n_tokens,) * self.num_inputs)


def graph(kind: str):
  """(number of inputs, functions) of a task kind; UserError for an unknown kind."""
  if kind not in GRAPHS:
    raise UserError(f"task.kind = {kind!r}: expected one of {sorted(GRAPHS)}")
  return GRAPHS[kind]


def domain(n_tokens: int, num_inputs: int) -> np.ndarray:
  """Every input, [N^n, n] in row-major (mixed-radix) order."""
  size = n_tokens ** num_inputs
  if size > _MAX_DOMAIN:
    raise UserError(f"task.n_tokens = {n_tokens}: {size:,} inputs of {num_inputs} tokens is "
                    f"more than the {_MAX_DOMAIN:,} that can be enumerated")
  grids = np.indices((n_tokens,) * num_inputs, dtype=np.int32)
  return grids.reshape(num_inputs, -1).T


def _applications(kind: str, tables, inputs):
  """For each function, the flat index of the entry each input applies it to, and the outputs."""
  num_inputs, functions = graph(kind)
  outputs, entries = [], []
  for (arity, sources), table in zip(functions, tables):
    args = [inputs[:, s] if s >= 0 else outputs[-s - 1] for s in sources]
    entry = np.ravel_multi_index(tuple(args), table.shape)
    entries.append(entry)
    outputs.append(table.reshape(-1)[entry])
  return entries, outputs


def evaluate(kind: str, tables, inputs: np.ndarray):
  """(bridges [R, h-1], targets [R]) of `inputs` [R, n]."""
  _, outputs = _applications(kind, tables, inputs)
  bridges = np.stack(outputs[:-1], axis=1) if len(outputs) > 1 else np.zeros((len(inputs), 0))
  return bridges.astype(np.int32), outputs[-1].astype(np.int32)


def type_names(kind: str) -> list[str]:
  h = len(graph(kind)[1])
  every = "both" if h == 2 else "all"
  return (["train_inferred", f"{every}_seen"] + [f"f{j + 1}_unseen" for j in range(h)]
          + [f"{every}_unseen"])


def seen_type(kind: str) -> str:
  """The in-distribution test type: every function applied to seen entries ('both_seen' for
  two functions, 'all_seen' for three)."""
  return type_names(kind)[1]


def make_task(kind: str, n_tokens: int, num_train: int, seen_fraction: float = 0.7,
              num_test: int = 2000, seed: int = 0) -> CompositionalTask:
  """Builds the tables, the seen sets and every split (see the module docstring)."""
  num_inputs, functions = graph(kind)
  if n_tokens < 2:
    raise UserError(f"task.n_tokens = {n_tokens}: expected at least 2")
  if not 0 < seen_fraction <= 1:
    raise UserError(f"task.seen_fraction = {seen_fraction}: expected a fraction in (0, 1]")
  rng = np.random.default_rng(seed)
  tables = [rng.integers(0, n_tokens, (n_tokens,) * arity).astype(np.int32)
            for arity, _ in functions]
  seen = []
  for table in tables:
    mask = np.zeros(table.size, bool)
    mask[rng.permutation(table.size)[:round(seen_fraction * table.size)]] = True
    seen.append(mask)

  inputs = domain(n_tokens, num_inputs)
  entries, outputs = _applications(kind, tables, inputs)
  pool = np.flatnonzero(np.all([s[e] for s, e in zip(seen, entries)], axis=0))
  if num_train > len(pool):
    raise UserError(f"task.num_train = {num_train}: only {len(pool)} inputs compose seen "
                    f"entries (n_tokens={n_tokens}, seen_fraction={seen_fraction})")
  train_ids = np.sort(rng.choice(pool, num_train, replace=False))
  # Seen = the entries training inputs actually use.
  seen = [np.isin(np.arange(t.size), e[train_ids]) for t, e in zip(tables, entries)]

  in_train = np.zeros(len(inputs), bool)
  in_train[train_ids] = True
  seen_by_function = np.stack([s[e] for s, e in zip(seen, entries)])  # [h, N^n]
  n_seen = seen_by_function.sum(axis=0)
  h = len(functions)
  names = type_names(kind)
  pools = {names[1]: np.flatnonzero((n_seen == h) & ~in_train),
           names[-1]: np.flatnonzero(n_seen == 0)}
  for j in range(h):
    pools[f"f{j + 1}_unseen"] = np.flatnonzero(~seen_by_function[j] & (n_seen == h - 1))

  bridges_all = (np.stack(outputs[:-1], axis=1) if h > 1 else np.zeros((len(inputs), 0))
                 ).astype(np.int32)
  targets_all = outputs[-1].astype(np.int32)

  def split(ids):
    return Split(inputs[ids], bridges_all[ids], targets_all[ids])

  splits = {"train": split(train_ids),
            "train_inferred": split(np.sort(rng.choice(train_ids, min(num_test, num_train),
                                                       replace=False)))}
  for name in names[1:]:
    ids = pools[name]
    splits[name] = split(np.sort(rng.choice(ids, min(num_test, len(ids)), replace=False)))
  return CompositionalTask(kind, n_tokens, tables,
                           [s.reshape(t.shape) for s, t in zip(seen, tables)], splits)


def sequences(split: Split, cot: bool) -> np.ndarray:
  """Token rows [R, n (+ bridges) + 1]: inputs, bridges when `cot`, target."""
  parts = [split.inputs] + ([split.bridges] if cot else []) + [split.targets[:, None]]
  return np.concatenate(parts, axis=1).astype(np.int32)


def max_train_size(kind: str, n_tokens: int, seen_fraction: float) -> int:
  """Roughly how many inputs compose seen entries (for sizing sweeps)."""
  num_inputs, functions = graph(kind)
  return int(n_tokens ** num_inputs * seen_fraction ** len(functions))

