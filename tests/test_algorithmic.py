import numpy as np
import pytest

from llmjax.errors import UserError
from llmjax.tasks.algorithmic import (ALGEBRAIC, GRIDS, algebraic_task, comparison_task,
                                      graph_task)


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


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_comparison_answers_and_transitive_chains(grid):
  task = comparison_task(grid, num_triples=300)
  assert task.vocab_size == 61
  _, ab, bc, ac, true_token, false_token = task.symmetry["transitivity"]
  assert (task.targets_N[ab] == true_token).all() and (task.targets_N[ac] == true_token).all()
  # '<' and '>' are mirror images; '=' holds exactly for equal attributes.
  rel = (task.inputs_NxT[:, 1] - 49) % 3
  assert set(np.unique(task.targets_N)) == {false_token, true_token}
  assert (task.targets_N[rel == 1] == true_token).mean() < 0.5


def test_unknown_task_names_are_user_errors():
  with pytest.raises(UserError, match=r"task.op = 'x\^y'"):
    algebraic_task("x^y", 11)
  with pytest.raises(UserError, match="task.modulus = 12: expected a prime"):
    algebraic_task("x+y", 12)
  with pytest.raises(UserError, match="task.graph = 'torus'"):
    graph_task("torus")
