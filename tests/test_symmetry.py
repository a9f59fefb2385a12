import jax.numpy as jnp
import numpy as np
import pytest

from llmjax.analysis.symmetry import instance_violations, symmetric_kl, violation_summary
from llmjax.tasks.algorithmic import algebraic_task, comparison_task, graph_task


def one_hot_logits(task, scale=20.0):
  logits = np.full((task.size, task.vocab_size), -scale)
  logits[np.arange(task.size), task.targets_N] = scale
  return jnp.asarray(logits)


TASKS = [algebraic_task(op, 7, num_triples=64) for op in ("x+y", "x-y", "(x+y)^2", "x/y")] + [
    graph_task("cycle64", num_triples=64), comparison_task("grid3d", num_triples=64)]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_a_perfect_model_violates_nothing_and_a_random_one_does(task):
  assert float(violation_summary(one_hot_logits(task), task)["violation"]) < 1e-4
  noise = jnp.asarray(np.random.default_rng(0).normal(size=(task.size, task.vocab_size)) * 3)
  summary = violation_summary(noise, task)
  assert float(summary["violation"]) > 0.5
  for name in task.symmetry:
    assert float(summary[f"violation_{name}_max"]) >= float(summary[f"violation_{name}"])


def test_symmetric_kl_matches_definition():
  p = jnp.array([[0.2, 0.8], [0.5, 0.5]])
  q = jnp.array([[0.6, 0.4], [0.5, 0.5]])
  expected = float((0.2 - 0.6) * np.log(0.2 / 0.6) + (0.8 - 0.4) * np.log(0.8 / 0.4))
  np.testing.assert_allclose(symmetric_kl(p, q), [expected, 0.0], rtol=1e-4, atol=1e-6)


def test_commutativity_measures_exactly_the_swapped_pair():
  task = algebraic_task("x+y", 5, num_triples=8)
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(task.size, task.vocab_size))
  # Make the model commutative by construction: logits(x, y) = logits(y, x).
  grid = logits.reshape(5, 5, -1)
  logits = ((grid + grid.transpose(1, 0, 2)) / 2).reshape(25, -1)
  assert float(instance_violations(jnp.asarray(logits), task)["commutativity"].max()) < 1e-6
  logits[1 * 5 + 3] += np.eye(task.vocab_size)[0] * 5  # break (1, 3) only
  per_pair = np.asarray(instance_violations(jnp.asarray(logits), task)["commutativity"])
  broken = {1 * 5 + 3, 3 * 5 + 1}
  assert all((per_pair[i] > 0.01) == (i in broken) for i in range(25))


def test_associativity_composition_against_brute_force():
  task = algebraic_task("x*y", 5, num_triples=16)
  logits = np.random.default_rng(2).normal(size=(task.size, task.vocab_size))
  probs = np.exp(logits[:, :5]) / np.exp(logits[:, :5]).sum(-1, keepdims=True)
  _, row_of, x, y, z = task.symmetry["associativity"]
  got = np.asarray(instance_violations(jnp.asarray(logits), task)["associativity"])
  for m in range(16):
    left = sum(probs[row_of[x[m], y[m]], a] * probs[row_of[a, z[m]]] for a in range(5))
    right = sum(probs[row_of[y[m], z[m]], b] * probs[row_of[x[m], b]] for b in range(5))
    np.testing.assert_allclose(got[m], symmetric_kl(jnp.asarray([left]), jnp.asarray([right]))[0],
                               rtol=1e-4)
