import numpy as np
import pytest

from llmjax.errors import UserError
from llmjax.experiments.grokking.algorithmic import (ALGEBRAIC, GRIDS, algebraic_task,
                                                     comparison_task, graph_task)


@pytest.mark.parametrize("op", sorted(ALGEBRAIC))
def test_algebraic_table_is_exact_and_identities_hold_on_it(op):
  p = 11
  task = algebraic_task(op, p, num_triples=200)
  x, y = task.inputs_NxT[:, 0].astype(int), task.inputs_NxT[:, 1].astype(int)
  expected = {"x+y": x + y, "x-y": x - y, "(x+y)^2": (x + y) ** 2, "(x+y)^3": (x + y) ** 3,
              "x*y": x * y, "x+xy+y": x + x * y + y,
              "x/y": x * np.array([pow(int(v), p - 2, p) for v in y])}[op] % p
  np.testing.assert_array_equal(task.targets_N, expected)
  assert task.size == p * (p - 1 if op == "x/y" else p)
  assert (task.inputs_NxT[:, 2] == p).all() and task.vocab_size == p + 1
  answers = task.targets_N
  for name, (kind, *arrays) in task.symmetry.items():
    if kind == "pair":
      left, right = arrays
      np.testing.assert_array_equal(answers[left], answers[right])
    else:
      row_of, a, b, c = arrays[:4]
      first = answers[row_of[a, b]]
      left = answers[row_of[first, c]]
      right = (answers[row_of[a, answers[row_of[b, c]]]] if kind == "compose"
               else answers[arrays[4]])
      np.testing.assert_array_equal(left, right)


def test_split_is_seeded_and_disjoint():
  task = algebraic_task("x+y", 13)
  train, test = task.split(0, 0.3)
  assert len(train) == round(0.3 * 169) and len(set(train) | set(test)) == 169
  assert not set(train) & set(test)
  np.testing.assert_array_equal(task.split(0, 0.3)[0], train)
  assert not np.array_equal(task.split(1, 0.3)[0], train)
  with pytest.raises(UserError, match="train_fraction = 1.5"):
    task.split(0, 1.5)


@pytest.mark.parametrize("graph, vertices, diameter", [
    ("lattice7x7", 49, 12), ("lattice7x7x7", 343, 18), ("cycle64", 64, 32), ("path64", 64, 63),
    ("cylinder7x7", 49, 9), ("hypercube7", 128, 7)])
def test_graph_distances_and_triangle_triples(graph, vertices, diameter):
  task = graph_task(graph, num_triples=300)
  assert task.size == vertices ** 2 and task.vocab_size == 408
  distance = task.targets_N - task.answer_tokens[0]
  assert distance.max() == diameter and (distance[np.arange(vertices) * (vertices + 1)] == 0).all()
  u, v = task.inputs_NxT[:, 0], task.inputs_NxT[:, 1]
  np.testing.assert_array_equal(distance, distance[v * vertices + u])  # symmetric metric
  _, ab, bc, ac = task.symmetry["triangle"]
  assert len(ab) > 100
  np.testing.assert_array_equal(distance[ab] + distance[bc], distance[ac])
  # Neighbours in the edge list are at distance 1.
  edges = task.neighbours_Ex2
  assert (distance[edges[:, 0] * vertices + edges[:, 1]] == 1).all()


def test_graph_reversal_pairs_each_distance_with_its_transpose():
  task = graph_task("cycle64", num_triples=50)
  _, left, right = task.symmetry["reversal"]
  assert len(left) == 64 * 63 // 2
  # Row of (u, v) is u * 64 + v (layout [u, v, =]); (3, 10) pairs with (10, 3) and both are 7
  # apart on the 64-cycle.
  i = int(np.flatnonzero(left == 3 * 64 + 10)[0])
  assert right[i] == 10 * 64 + 3
  assert list(task.inputs_NxT[right[i]]) == [10, 3, 343]
  assert task.targets_N[left[i]] == task.targets_N[right[i]] == 344 + 7


def _truth(coords, a, attr, rel, b):
  """By hand: does attr(a) REL attr(b) hold? rel 0 '<', 1 '=', 2 '>'."""
  x, y = coords[a][attr], coords[b][attr]
  return {0: x < y, 1: x == y, 2: x > y}[rel]


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_comparison_answers_converse_and_chains_against_the_coordinates(grid):
  task = comparison_task(grid, num_triples=300)
  shape = GRIDS[grid]
  coords = [tuple(int(c) for c in np.unravel_index(e, shape)) for e in range(np.prod(shape))]
  assert task.vocab_size == 61
  true_token, false_token = 61 - 1, 61 - 2
  # Every row against the coordinates: input [a, 49 + 3 attr + rel, b, =].
  for (a, relation, b, eq), target in zip(task.inputs_NxT, task.targets_N):
    attr, rel = divmod(int(relation) - 49, 3)
    assert eq == 58
    assert target == (true_token if _truth(coords, a, attr, rel, b) else false_token)
  # Entity 1 is (0, 1) / (0, 0, 1): smaller than entity 2 in the last attribute, not larger.
  last = len(shape) - 1
  row_less = next(i for i, x in enumerate(task.inputs_NxT) if list(x) == [1, 49 + 3 * last, 2, 58])
  row_more = next(i for i, x in enumerate(task.inputs_NxT)
                  if list(x) == [1, 49 + 3 * last + 2, 2, 58])
  assert task.targets_N[row_less] == true_token and task.targets_N[row_more] == false_token
  # Converse: (a REL b) is paired with (b REL' a), '<' <-> '>' and '=' <-> '='.
  _, left, right = task.symmetry["converse"]
  assert len(left) == task.size
  for i in range(0, task.size, 37):
    a, rel_token, b, _ = task.inputs_NxT[left[i]]
    attr, rel = divmod(int(rel_token) - 49, 3)
    assert list(task.inputs_NxT[right[i]]) == [b, 49 + 3 * attr + (2 - rel), a, 58]
    assert task.targets_N[left[i]] == task.targets_N[right[i]]
  # Transitive chains: a REL b, b REL c, a REL c all hold, with both '<' and '>' chains.
  _, ab, bc, ac, true_tok, _ = task.symmetry["transitivity"]
  assert true_tok == true_token and len(ab) > 100
  relations = set()
  for rows in zip(ab, bc, ac):
    (a, r1, b, _), (b2, r2, c, _), (a2, r3, c2, _) = (task.inputs_NxT[r] for r in rows)
    assert b == b2 and a == a2 and c == c2 and r1 == r2 == r3
    attr, rel = divmod(int(r1) - 49, 3)
    assert rel != 1 and _truth(coords, a, attr, rel, b) and _truth(coords, b, attr, rel, c)
    assert task.targets_N[rows[2]] == true_token
    relations.add(rel)
  assert relations == {0, 2}


def test_unknown_task_names_are_user_errors():
  with pytest.raises(UserError, match=r"task.op = 'x\^y'"):
    algebraic_task("x^y", 11)
  with pytest.raises(UserError, match="task.modulus = 12: expected a prime"):
    algebraic_task("x+y", 12)
  with pytest.raises(UserError, match="task.graph = 'torus'"):
    graph_task("torus")
