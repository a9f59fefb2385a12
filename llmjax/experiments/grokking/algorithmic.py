"""Algorithmic tasks of the grokking literature, generated exactly, with their symmetry structure.

Every task is a finite table: all inputs `inputs_NxT` (token ids) and their answers `targets_N`.
A seed chooses which fraction of the table is the training set. Each task also carries what its
symmetry diagnostic and its geometry probes need (see `Task`).

Token layouts (equal-sized vocabularies within a family, so models are comparable across it):

  algebraic, modulus p    [x, y, =]          -> r            x, y, r in 0..p-1; '=' is token p
                                                              vocab p + 1
  graph metric completion [u, v, =]          -> DIST+d       vertices 0..V-1 (V = 343 slots, the
                                                              largest graph), '=' is 343, distance
                                                              d is token 344 + d (d < 64)
                                                              vocab 408
  comparison              [a, REL, b, =]     -> FALSE/TRUE   entities 0..48 (49 slots), REL =
                                                              49 + 3*attr + {<: 0, =: 1, >: 2},
                                                              '=' is 58, FALSE 59, TRUE 60
                                                              vocab 61
"""

import dataclasses
import itertools
from typing import Callable

import numpy as np

from llmjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Task:
  """A complete input/answer table and the structure the analyses need.

  Attributes:
    name: e.g. 'x+y', 'cycle64', 'compare_grid2d'.
    family: 'algebraic', 'graph' or 'comparison'.
    inputs_NxT: every input sequence.
    targets_N: the answer token of each input.
    vocab_size: size of the family's vocabulary.
    answer_tokens: the token ids answers can take (distributions are compared over these).
    entity_tokens: the tokens whose embeddings form the task's geometry (numbers, vertices,
      entities), in their natural order.
    neighbours_Ex2: pairs of entity positions (indices into entity_tokens) adjacent in the task's
      structure: x and x+1 mod p, graph edges, grid neighbours (for the Lipschitz prior).
    modulus: p for algebraic tasks (Fourier analysis), else 0.
    entity_coordinates: [E, attrs] each entity's grid point for comparison tasks (its
      attributes), else None.
    symmetry: {identity name: (kind, index arrays...)} for the violation measures; the kinds
      are explained in symmetry.py.
  """

  name: str
  family: str
  inputs_NxT: np.ndarray
  targets_N: np.ndarray
  vocab_size: int
  answer_tokens: np.ndarray
  entity_tokens: np.ndarray
  neighbours_Ex2: np.ndarray
  modulus: int = 0
  symmetry: dict = dataclasses.field(default_factory=dict)
  entity_coordinates: np.ndarray | None = None

  @property
  def size(self) -> int:
    return len(self.targets_N)

  def split(self, seed: int, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): a seeded random `train_fraction` of the table."""
    if not 0.0 < train_fraction < 1.0:
      raise UserError(f"task.train_fraction = {train_fraction}: expected a fraction in (0, 1)")
    n_train = int(round(train_fraction * self.size))
    order = np.random.default_rng(seed).permutation(self.size)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


# ---- algebraic ----------------------------------------------------------------------------

def _inverse_mod(y: np.ndarray, p: int) -> np.ndarray:
  return np.array([pow(int(v), -1, p) for v in y])


ALGEBRAIC: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "x+y": lambda x, y, p: (x + y) % p,
    "x-y": lambda x, y, p: (x - y) % p,
    "(x+y)^2": lambda x, y, p: (x + y) ** 2 % p,
    "(x+y)^3": lambda x, y, p: (x + y) ** 3 % p,
    "x*y": lambda x, y, p: (x * y) % p,
    "x+xy+y": lambda x, y, p: (x + x * y + y) % p,
    "x/y": lambda x, y, p: (x * _inverse_mod(y, p)) % p,
}


def algebraic_task(op: str, p: int, num_triples: int = 2048, seed: int = 0) -> Task:
  """All (x, y) with x, y in Z_p (y != 0 for division); answer op(x, y) mod p.

  The symmetry index arrays pair up inputs that must give the same distribution (see
  symmetry.py for the identities used for each operation).
  """
  if op not in ALGEBRAIC:
    raise UserError(f"task.op = {op!r}: expected one of {sorted(ALGEBRAIC)}")
  if p < 3 or any(p % d == 0 for d in range(2, int(p ** 0.5) + 1)):
    raise UserError(f"task.modulus = {p}: expected a prime >= 3")
  ys = np.arange(1 if op == "x/y" else 0, p)
  x, y = (g.ravel() for g in np.meshgrid(np.arange(p), ys, indexing="ij"))
  targets = ALGEBRAIC[op](x, y, p)
  eq = p
  inputs = np.stack([x, y, np.full_like(x, eq)], axis=1).astype(np.int32)

  def index_of(a, b):
    """Row of input (a, b) in the table (b must be a valid second operand)."""
    return a * len(ys) + (b - ys[0])

  rng = np.random.default_rng(seed)
  row_of = _row_table(p, ys)
  identities = {}
  # Commutativity, or the paper's proxy identity for the non-commutative operations.
  if op == "x-y":  # x - (-y) = y - (-x)
    identities["commutativity"] = ("pair", index_of(x, (-y) % p), index_of(y, (-x) % p))
  elif op == "x/y":  # x / (1/y) = y / (1/x), for x != 0
    ok = x != 0
    identities["commutativity"] = ("pair", index_of(x[ok], _inverse_mod(y[ok], p)),
                                   index_of(y[ok], _inverse_mod(x[ok], p)))
  else:  # x+y, (x+y)^a, x*y and x+xy+y = (x+1)(y+1)-1 are commutative
    identities["commutativity"] = ("pair", index_of(x, y), index_of(y, x))
  # Associativity, on sampled triples (x, y, z).
  tx, ty, tz = (rng.integers(0, p, num_triples) for _ in range(3))
  if op == "x/y":
    ty, tz = rng.integers(1, p, num_triples), rng.integers(1, p, num_triples)
  if op in ("x+y", "x*y", "x+xy+y"):
    # f(f(x, y), z) = f(x, f(y, z)): both sides compose the model with itself.
    identities["associativity"] = ("compose", row_of, tx, ty, tz)
  elif op in ("(x+y)^2", "(x+y)^3"):
    # ((x+y)+z)^a = (x+(y+z))^a: f(x+y, z) = f(x, y+z), the inner sums exact.
    identities["associativity"] = ("pair", index_of((tx + ty) % p, tz),
                                   index_of(tx, (ty + tz) % p))
  elif op == "x-y":
    # (x-y)-z = x-(y+z): the model composed with itself against one model step.
    identities["associativity"] = ("half", row_of, tx, ty, tz, index_of(tx, (ty + tz) % p))
  else:
    # (x/y)/z = x/(yz)
    identities["associativity"] = ("half", row_of, tx, ty, tz, index_of(tx, (ty * tz) % p))
  numbers = np.arange(p)
  return Task(name=op, family="algebraic", inputs_NxT=inputs, targets_N=targets.astype(np.int32),
              vocab_size=p + 1, answer_tokens=numbers, entity_tokens=numbers,
              neighbours_Ex2=np.stack([numbers, (numbers + 1) % p], axis=1), modulus=p,
              symmetry=identities)


def _row_table(p: int, ys: np.ndarray) -> np.ndarray:
  """row_of[a, b] = table row of input (a, b); -1 where b is not a valid operand."""
  table = np.full((p, p), -1, np.int64)
  table[:, ys] = np.arange(p)[:, None] * len(ys) + np.arange(len(ys))[None, :]
  return table


# ---- graph metric completion ---------------------------------------------------------------

GRAPH_VERTEX_SLOTS, GRAPH_DISTANCE_SLOTS = 343, 64


def _lattice_edges(shape: tuple[int, ...], periodic: tuple[bool, ...]) -> list[tuple[int, int]]:
  index = np.arange(int(np.prod(shape))).reshape(shape)
  edges = []
  for axis, (size, wrap) in enumerate(zip(shape, periodic)):
    upper = size if wrap and size > 2 else size - 1
    for i in range(upper):
      a = np.take(index, i, axis=axis).ravel()
      b = np.take(index, (i + 1) % size, axis=axis).ravel()
      edges.extend(zip(a.tolist(), b.tolist()))
  return edges


GRAPHS: dict[str, Callable[[], tuple[int, list[tuple[int, int]]]]] = {
    "lattice7x7": lambda: (49, _lattice_edges((7, 7), (False, False))),
    "lattice7x7x7": lambda: (343, _lattice_edges((7, 7, 7), (False, False, False))),
    "cycle64": lambda: (64, _lattice_edges((64,), (True,))),
    "path64": lambda: (64, _lattice_edges((64,), (False,))),
    "cylinder7x7": lambda: (49, _lattice_edges((7, 7), (True, False))),
    "hypercube7": lambda: (128, [(v, v ^ (1 << k)) for v in range(128) for k in range(7)
                                 if v < v ^ (1 << k)]),
}


def _all_pairs_distances(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
  """Breadth-first search from every vertex: exact shortest-path lengths [n, n]."""
  adjacency = [[] for _ in range(n)]
  for a, b in edges:
    adjacency[a].append(b)
    adjacency[b].append(a)
  dist = np.full((n, n), -1, np.int64)
  for source in range(n):
    dist[source, source], frontier = 0, [source]
    while frontier:
      nxt = []
      for u in frontier:
        for v in adjacency[u]:
          if dist[source, v] < 0:
            dist[source, v] = dist[source, u] + 1
            nxt.append(v)
      frontier = nxt
  return dist


def graph_task(graph: str, num_triples: int = 2048, seed: int = 0) -> Task:
  """All vertex pairs (u, v) of the graph; answer their shortest-path distance.

  Symmetry: reversal, d(u, v) = d(v, u) (every pair u < v), and the triangle equality
  d(a, c) = d(a, b) + d(b, c) for b on a shortest a->c path.
  """
  if graph not in GRAPHS:
    raise UserError(f"task.graph = {graph!r}: expected one of {sorted(GRAPHS)}")
  n, edges = GRAPHS[graph]()
  dist = _all_pairs_distances(n, edges)
  u, v = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
  eq, first_distance = GRAPH_VERTEX_SLOTS, GRAPH_VERTEX_SLOTS + 1
  inputs = np.stack([u, v, np.full_like(u, eq)], axis=1).astype(np.int32)
  targets = (first_distance + dist[u, v]).astype(np.int32)
  # Triples (a, b, c) with b on a shortest a->c path, a != b != c.
  rng = np.random.default_rng(seed)
  a, b, c = (rng.integers(0, n, 20 * num_triples) for _ in range(3))
  on_path = (dist[a, b] + dist[b, c] == dist[a, c]) & (a != b) & (b != c)
  a, b, c = a[on_path][:num_triples], b[on_path][:num_triples], c[on_path][:num_triples]
  upper_u, upper_v = np.triu_indices(n, k=1)
  identities = {"reversal": ("pair", upper_u * n + upper_v, upper_v * n + upper_u),
                "triangle": ("triangle", a * n + b, b * n + c, a * n + c)}
  max_distance = int(dist.max())
  return Task(name=graph, family="graph", inputs_NxT=inputs, targets_N=targets,
              vocab_size=GRAPH_VERTEX_SLOTS + 1 + GRAPH_DISTANCE_SLOTS,
              answer_tokens=np.arange(first_distance, first_distance + max_distance + 1),
              entity_tokens=np.arange(n), neighbours_Ex2=np.asarray(edges), symmetry=identities)


# ---- relational comparison -----------------------------------------------------------------

COMPARISON_ENTITY_SLOTS = 49
GRIDS = {"grid2d": (7, 7), "grid3d": (3, 3, 3)}


def comparison_task(grid: str, num_triples: int = 2048, seed: int = 0) -> Task:
  """Entities at the points of a grid; attribute k of an entity is its k-th coordinate (age,
  height, weight). Input (a, attr-relation, b); answer whether attr(a) REL attr(b) holds.

  Symmetry:
    converse      (a < b) = (b > a), (a > b) = (b < a), (a = b) = (b = a): the answer
                  distributions of each input and its converse agree (every input);
    transitivity  under a Bradley-Terry reading of the model's log-odds,
                  logit P(a < c) = logit P(a < b) + logit P(b < c) for attr(a) < attr(b) <
                  attr(c), and the same for '>' chains attr(a) > attr(b) > attr(c).
  """
  if grid not in GRIDS:
    raise UserError(f"task.grid = {grid!r}: expected one of {sorted(GRIDS)}")
  shape = GRIDS[grid]
  coords = np.array(list(itertools.product(*(range(s) for s in shape))))  # [E, attrs]
  n_entities, n_attrs = coords.shape
  rel_base, eq = COMPARISON_ENTITY_SLOTS, COMPARISON_ENTITY_SLOTS + 9
  false_token, true_token = eq + 1, eq + 2
  a, k, r, b = (g.ravel() for g in np.meshgrid(np.arange(n_entities), np.arange(n_attrs),
                                               np.arange(3), np.arange(n_entities),
                                               indexing="ij"))
  diff = coords[a, k] - coords[b, k]
  holds = np.where(r == 0, diff < 0, np.where(r == 1, diff == 0, diff > 0))
  inputs = np.stack([a, rel_base + 3 * k + r, b, np.full_like(a, eq)], axis=1).astype(np.int32)
  targets = np.where(holds, true_token, false_token).astype(np.int32)

  def row(e1, attr, rel, e2):
    return ((e1 * n_attrs + attr) * 3 + rel) * n_entities + e2

  rng = np.random.default_rng(seed)
  ta, tb, tc = (rng.integers(0, n_entities, 20 * num_triples) for _ in range(3))
  tk = rng.integers(0, n_attrs, 20 * num_triples)
  less = (coords[ta, tk] < coords[tb, tk]) & (coords[tb, tk] < coords[tc, tk])
  more = (coords[ta, tk] > coords[tb, tk]) & (coords[tb, tk] > coords[tc, tk])
  chain_rel = np.where(less, 0, 2)[less | more][:num_triples]
  ta, tb, tc, tk = (v[less | more][:num_triples] for v in (ta, tb, tc, tk))
  converse_rel = np.array([2, 1, 0])[r]  # '<' <-> '>', '=' <-> '='
  identities = {
      "converse": ("pair", row(a, k, r, b), row(b, k, converse_rel, a)),
      "transitivity": ("transitive", row(ta, tk, chain_rel, tb), row(tb, tk, chain_rel, tc),
                       row(ta, tk, chain_rel, tc), true_token, false_token)}
  neighbours = [(i, j) for i in range(n_entities) for j in range(i + 1, n_entities)
                if np.abs(coords[i] - coords[j]).sum() == 1]
  return Task(name=f"compare_{grid}", family="comparison", inputs_NxT=inputs, targets_N=targets,
              vocab_size=COMPARISON_ENTITY_SLOTS + 9 + 3,
              answer_tokens=np.array([false_token, true_token]),
              entity_tokens=np.arange(n_entities), neighbours_Ex2=np.asarray(neighbours),
              symmetry=identities, entity_coordinates=coords)


FAMILIES = ("algebraic", "graph", "comparison")


def make_task(task_config) -> Task:
  """Builds the task named by `config.task` (family, and op/modulus, graph or grid)."""
  family = task_config.family
  if family == "algebraic":
    return algebraic_task(task_config.op, task_config.modulus, seed=task_config.symmetry_seed)
  if family == "graph":
    return graph_task(task_config.graph, seed=task_config.symmetry_seed)
  if family == "comparison":
    return comparison_task(task_config.grid, seed=task_config.symmetry_seed)
  raise UserError(f"task.family = {family!r}: expected one of {FAMILIES}")
