import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llmjax.experiments.grokking.algorithmic import algebraic_task, comparison_task, graph_task
from llmjax.experiments.grokking.symmetry import (_convolve, instance_violations, symmetric_kl,
                                                  violation_loss, violation_summary)


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
  per_instance = instance_violations(noise, task)
  for name in task.symmetry:  # the summary's statistics are those of the per-instance values
    np.testing.assert_allclose(summary[f"violation_{name}_max"], np.max(per_instance[name]),
                               rtol=1e-6)
    np.testing.assert_allclose(summary[f"violation_{name}"], np.mean(per_instance[name]),
                               rtol=1e-5)
  np.testing.assert_allclose(summary["violation_max"],
                             max(np.max(v) for v in per_instance.values()), rtol=1e-6)
  # The invariances are the identities that compare two inputs' answers, named by hand here.
  invariances = {"x+y": ["commutativity"], "x-y": ["commutativity"], "x/y": ["commutativity"],
                 "(x+y)^2": ["commutativity", "associativity"],  # (x+y)+z vs x+(y+z), exact
                 "cycle64": ["reversal"], "compare_grid3d": ["converse"]}[task.name]
  np.testing.assert_allclose(summary["violation_invariance_max"],
                             max(np.max(per_instance[n]) for n in invariances), rtol=1e-6)
  np.testing.assert_allclose(summary["violation_invariance"],
                             np.mean([np.mean(per_instance[n]) for n in invariances]), rtol=1e-5)


def test_a_commutative_model_that_is_wrong_violates_only_the_compositions():
  """Both orders give the same wrong answer on some inputs: the invariance holds, while
  associativity, which feeds those answers into a second step, does not."""
  task = algebraic_task("x+y", 7, num_triples=256)
  targets = task.targets_N.reshape(7, 7).copy()
  targets[2, 3] = targets[3, 2] = (targets[2, 3] + 1) % 7  # wrong, but the same both ways
  logits = np.full((task.size, task.vocab_size), -20.0)
  logits[np.arange(task.size), targets.ravel()] = 20.0
  summary = violation_summary(jnp.asarray(logits), task)
  assert float(summary["violation_invariance_max"]) < 1e-4
  assert float(summary["violation_associativity_max"]) > 10.0


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


def test_subtraction_associativity_against_its_own_identity():
  """x-y has no associativity; its identity is (x-y)-z = x-(y+z): both sides read the model."""
  p = 5
  task = algebraic_task("x-y", p, num_triples=16)
  logits = np.random.default_rng(3).normal(size=(task.size, task.vocab_size))
  probs = np.exp(logits[:, :p]) / np.exp(logits[:, :p]).sum(-1, keepdims=True)
  row = lambda a, b: a * p + b  # noqa: E731  (the table enumerates x, then y)
  assert all(task.targets_N[row(a, b)] == (a - b) % p for a in range(p) for b in range(p))
  _, _, x, y, z, _ = task.symmetry["associativity"]
  got = np.asarray(instance_violations(jnp.asarray(logits), task)["associativity"])
  for m in range(16):
    left = sum(probs[row(x[m], y[m]), a] * probs[row(a, z[m])] for a in range(p))
    right = probs[row(x[m], (y[m] + z[m]) % p)]
    np.testing.assert_allclose(got[m], _skl(left, right), rtol=1e-4)


def _skl(p, q):
  """SKL by hand (no floor: the test distributions have full support)."""
  return sum((a - b) * np.log(a / b) for a, b in zip(p, q))


def test_truncated_convolution_is_renormalised():
  # Distances {1, 2} each with 1/2, summed: 2 (1/4), 3 (1/2), 4 (1/4). With answers 0..2
  # only the sum 2 is representable, so the renormalised distribution is certain of it.
  p = jnp.asarray([[0.0, 0.5, 0.5]])
  np.testing.assert_allclose(_convolve(p, p), [[0.0, 0.0, 1.0]], atol=1e-7)
  q = jnp.asarray([[0.5, 0.5, 0.0]])  # sums 0 (1/4), 1 (1/2), 2 (1/4): all representable
  np.testing.assert_allclose(_convolve(q, q), [[0.25, 0.5, 0.25]], atol=1e-7)


def _logits_with(task, rows_to_probs):
  """Logits whose answer distribution on the given rows is the given one (else uniform)."""
  logits = np.zeros((task.size, task.vocab_size))
  for row, probs in rows_to_probs.items():
    logits[row, task.answer_tokens] = np.log(probs)
  return jnp.asarray(logits)


def test_triangle_instance_against_a_hand_computed_convolution():
  task = graph_task("path64", num_triples=32)
  _, ab, bc, ac = task.symmetry["triangle"]
  A = len(task.answer_tokens)
  p_ab, p_bc, p_ac = np.full(A, 0.01), np.full(A, 0.01), np.full(A, 0.01)
  p_ab[1] += 0.5; p_bc[2] += 0.3; p_bc[60] += 0.4; p_ac[3] += 0.6  # noqa: E702
  p_ab, p_bc, p_ac = p_ab / p_ab.sum(), p_bc / p_bc.sum(), p_ac / p_ac.sum()
  got = instance_violations(_logits_with(task, {ab[0]: p_ab, bc[0]: p_bc, ac[0]: p_ac}), task)
  conv = np.zeros(A)
  for i in range(A):  # P(d_ab + d_bc = d), sums beyond the largest distance dropped
    for j in range(A - i):
      conv[i + j] += p_ab[i] * p_bc[j]
  conv /= conv.sum()
  np.testing.assert_allclose(got["triangle"][0], _skl(conv, p_ac), rtol=2e-3)


def test_graph_reversal_instance():
  task = graph_task("cycle64", num_triples=8)
  _, left, right = task.symmetry["reversal"]
  A = len(task.answer_tokens)
  p, q = np.full(A, 1.0 / A), np.linspace(1, 2, A)
  q /= q.sum()
  got = instance_violations(_logits_with(task, {left[5]: p, right[5]: q}), task)["reversal"]
  np.testing.assert_allclose(got[5], _skl(p, q), rtol=2e-3)
  assert float(np.max(np.delete(np.asarray(got), 5))) < 1e-9


def test_comparison_converse_and_greater_chain_instances():
  task = comparison_task("grid2d", num_triples=200)
  _, left, right = task.symmetry["converse"]
  logits = np.zeros((task.size, task.vocab_size))
  true_tok, false_tok = 60, 59
  logits[left[7], true_tok] = 1.5  # P(true) = sigmoid(1.5) on one side, 1/2 on the other
  got = np.asarray(instance_violations(jnp.asarray(logits), task)["converse"])
  s = 1 / (1 + np.exp(-1.5))
  np.testing.assert_allclose(got[7], _skl([s, 1 - s], [0.5, 0.5]), rtol=2e-3)
  # A '>' chain: log-odds 1 and 2 along the chain, 0.5 across it.
  _, ab, bc, ac, _, _ = task.symmetry["transitivity"]
  m = next(i for i in range(len(ab)) if (task.inputs_NxT[ab[i], 1] - 49) % 3 == 2)
  logits = np.zeros((task.size, task.vocab_size))
  logits[ab[m], true_tok], logits[bc[m], true_tok], logits[ac[m], true_tok] = 1.0, 2.0, 0.5
  logits[:, false_tok] = 0.0
  got = np.asarray(instance_violations(jnp.asarray(logits), task)["transitivity"])
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  np.testing.assert_allclose(got[m], _skl([sig(3.0), sig(-3.0)], [sig(0.5), sig(-0.5)]),
                             rtol=2e-3)


def test_masked_loss_reads_only_instances_inside_the_mask():
  task = algebraic_task("x+y", 5, num_triples=8)
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(task.size, task.vocab_size)))
  mask = np.zeros(task.size)
  mask[[1 * 5 + 2, 2 * 5 + 1, 3 * 5 + 3, 0 * 5 + 4]] = 1  # (1,2)&(2,1) and the diagonal (3,3)
  # Commutativity instances fully inside: (1,2), (2,1), (3,3); (0,4)'s partner (4,0) is out.
  # Associativity reads whole rows of the table, so none of its instances is inside.
  per = np.asarray(instance_violations(logits, task)["commutativity"])
  expected = np.mean([per[1 * 5 + 2], per[2 * 5 + 1], per[3 * 5 + 3]])
  np.testing.assert_allclose(violation_loss(logits, task, jnp.asarray(mask)), expected, rtol=1e-5)
  # No input outside the mask affects the loss: its gradient there is exactly zero.
  grad = np.asarray(jax.grad(lambda l: violation_loss(l, task, jnp.asarray(mask)))(logits))
  outside = np.flatnonzero(mask == 0)
  assert np.abs(grad[outside]).max() == 0.0 and np.abs(grad[1 * 5 + 2]).max() > 0
  assert np.abs(grad[0 * 5 + 4]).max() == 0.0  # its swap partner is a test input


def test_masked_summary_statistics_against_the_instances_inside_the_mask():
  """The training-input statistics of the diagnostic: the mask holds two pairs both ways, a
  diagonal input and one side of the worst pair, whose swap partner is outside; a composition
  over the whole table is never inside it."""
  task = algebraic_task("x+y", 5, num_triples=8)
  logits = jnp.asarray(np.random.default_rng(4).normal(size=(task.size, task.vocab_size)) * 3)
  per = np.asarray(instance_violations(logits, task)["commutativity"])
  worst = int(np.argmax(per))  # its swap partner stays out, so it must not count
  a, b = divmod(worst, 5)
  pairs = [(x, y) for x in range(5) for y in range(x + 1, 5) if {x, y} != {a, b}][:2]
  inside = [x * 5 + y for x, y in pairs] + [y * 5 + x for x, y in pairs] + [a * 5 + a]
  mask = np.zeros(task.size)
  mask[inside + [worst]] = 1
  summary = violation_summary(logits, task, jnp.asarray(mask))
  for group in ("", "_invariance"):  # x+y: the only instances inside are commutativity's
    np.testing.assert_allclose(summary[f"violation{group}_max_train"], per[inside].max(),
                               rtol=1e-6)
    np.testing.assert_allclose(summary[f"violation{group}_train"], per[inside].mean(),
                               rtol=1e-5)
  assert per[worst] > per[inside].max()  # the half-inside pair would have changed the max
