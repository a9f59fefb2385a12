"""Compositional tasks, the k-coverage computation against its literal definition, and the
coverage experiment end to end."""

import json

import numpy as np
import pytest

from llmjax.analysis.coverage import k_coverage, k_coverage_brute_force, nontrivial_subsets
from llmjax.errors import UserError
from llmjax.experiments.coverage import fit_power_law
from llmjax.tasks import compositional
from llmjax.data.batches import lm_batch
from tests.conftest import read_jsonl, run_cli


@pytest.mark.parametrize("kind", sorted(compositional.GRAPHS))
def test_task_splits_follow_their_definitions(kind):
  task = compositional.make_task(kind, n_tokens=6, num_train=60, seed=3)
  assert task.splits["train"].inputs.shape == (60, task.num_inputs)

  def entries_of(split):
    return compositional._applications(kind, task.tables, split.inputs)[0]

  seen_flat = [s.reshape(-1) for s in task.seen]
  train_rows = {tuple(x) for x in task.splits["train"].inputs}
  # Targets are the composition of the tables; seen entries are exactly those used in training.
  bridges, targets = compositional.evaluate(kind, task.tables, task.splits["train"].inputs)
  np.testing.assert_array_equal(targets, task.splits["train"].targets)
  for j, entries in enumerate(entries_of(task.splits["train"])):
    assert set(np.flatnonzero(seen_flat[j])) == set(entries.tolist())
  names = compositional.type_names(kind)
  for name in names[1:]:
    split = task.splits[name]
    seen = np.stack([s[e] for s, e in zip(seen_flat, entries_of(split))])
    if name.endswith("_seen"):
      assert seen.all() and not train_rows & {tuple(x) for x in split.inputs}
    elif name.startswith("f"):
      j = int(name[1]) - 1
      assert not seen[j].any() and np.delete(seen, j, axis=0).all()
    else:
      assert not seen.any()
  again = compositional.make_task(kind, n_tokens=6, num_train=60, seed=3)
  np.testing.assert_array_equal(again.splits["f1_unseen"].inputs,
                                task.splits["f1_unseen"].inputs)


def test_chain_of_thought_rows_put_bridges_before_the_target():
  task = compositional.make_task("three_hop", n_tokens=5, num_train=40, seed=0)
  split = task.splits["train"]
  rows = compositional.sequences(split, cot=True)
  np.testing.assert_array_equal(rows[:, :4], split.inputs)
  np.testing.assert_array_equal(rows[:, 4:6], split.bridges)
  np.testing.assert_array_equal(rows[:, 6], split.targets)
  batch = lm_batch(rows, num_inputs=4)
  assert batch["loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 1]  # b1, b2, t
  assert compositional.sequences(split, cot=False).shape == (40, 5)


def test_bad_task_settings_are_named():
  with pytest.raises(UserError, match="task.kind = 'four_hop'"):
    compositional.make_task("four_hop", 5, 10)
  with pytest.raises(UserError, match="task.kind = 'four_hop'"):
    compositional.max_train_size("four_hop", 5, 0.7)  # sizes training sets before make_task
  with pytest.raises(UserError, match="task.num_train = 5000: only"):
    compositional.make_task("two_hop", 5, 5000)


@pytest.mark.parametrize("seed", range(8))
def test_fast_coverage_equals_the_brute_force_definition(seed):
  rng = np.random.default_rng(seed)
  kind = sorted(compositional.GRAPHS)[seed % 4]
  n_tokens = int(rng.integers(3, 6))
  pool = compositional.max_train_size(kind, n_tokens, 0.7)
  task = compositional.make_task(kind, n_tokens, int(rng.integers(4, max(5, pool // 2))),
                                 seed=seed)
  targets = task.full_targets()
  train = task.splits["train"].inputs
  previous = None
  for k in (1, 2, 3):
    fast = k_coverage(train, targets, k)
    np.testing.assert_array_equal(fast, k_coverage_brute_force(train, targets, k))
    assert fast[tuple(train.T)].all()  # training inputs are covered
    if previous is not None:
      assert not (fast & ~previous).any()  # a larger k never covers more
    previous = fast


def test_coverage_on_a_hand_made_example():
  """Inputs (a, b) -> target, N = 3. Fragments a=0 and a=1 agree on both shared contexts
  (b = 0, 1), so they are 2-equivalent, and (1, 2) becomes covered from (0, 2) — it has the same
  target. a=2 disagrees with a=0 on b=0, so (2, 2) stays out."""
  targets = np.array([[5, 6, 7], [5, 6, 7], [4, 6, 0]])
  train = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 1]])
  covered = k_coverage(train, targets, 2)
  assert covered[1, 2] and not covered[2, 2]
  assert not k_coverage(train, targets, 3)[1, 2]  # only 2 shared contexts
  assert nontrivial_subsets(2) == [(0,), (1,)]


def test_power_law_fit_recovers_a_known_exponent():
  n = np.array([10, 20, 40, 80])
  fit = fit_power_law(n, 3.0 * n ** 2.2 * np.array([1.02, 0.97, 1.01, 0.99]))
  assert abs(fit["alpha"] - 2.2) < 0.05
  assert fit["alpha_ci"][0] < 2.2 < fit["alpha_ci"][1]


def run_coverage(config: str, workdir, *overrides: str):
  """Runs the coverage CLI with a one-layer d_model 32 model, quietly, plus `overrides`."""
  return run_cli(["--config", config, "--workdir", str(workdir),
                  "--config.train.progress=False", "--config.model.d_model=32",
                  "--config.model.n_layers=1", "--config.model.d_ff=64", *overrides])


def test_coverage_experiment_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  result = run_coverage("configs/coverage.py", workdir, "--config.task.n_tokens=6",
                        "--config.task.num_test=50", "--config.train.steps=60",
                        "--config.train.batch_size=32", "--config.train.eval_every=30",
                        "--config.train.checkpoint_every=30", "--config.coverage.k=2",
                        "--config.coverage.max_k=2")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert set(summary["accuracy"]) == {"train_inferred", "both_seen", "f1_unseen", "f2_unseen",
                                      "both_unseen"}
  assert set(summary["by_k"]) == {"k1", "k2"}
  rows = read_jsonl(workdir / "data" / "f2_unseen.jsonl")
  task = compositional.make_task("two_hop", 6, summary["num_train"], num_test=50, seed=0)
  covered = k_coverage(task.splits["train"].inputs, task.full_targets(), 2)
  assert [r["input"] for r in rows] == task.splits["f2_unseen"].inputs.tolist()
  assert [r["covered"] for r in rows] == covered[tuple(task.splits["f2_unseen"].inputs.T)].tolist()
  assert summary["coverage_fraction"]["f2_unseen"] == pytest.approx(
      np.mean([r["covered"] for r in rows]))
  train_rows = read_jsonl(workdir / "data" / "train.jsonl")
  assert len(train_rows) == summary["num_train"] and "covered" not in train_rows[0]
  assert (workdir / "plots" / "accuracy_vs_coverage.png").exists()


def test_chain_of_thought_on_the_path_ambiguous_task_end_to_end(tmp_path):
  """CoT rows (inputs, bridge, target) train, and evaluation generates the bridge before the
  answer; the path-ambiguous types are reported."""
  workdir = tmp_path / "run"
  result = run_coverage("configs/coverage.py", workdir, "--config.task.kind=path_ambiguous",
                        "--config.task.cot=True", "--config.task.n_tokens=5",
                        "--config.task.num_test=40", "--config.train.steps=30",
                        "--config.train.batch_size=32", "--config.train.eval_every=30",
                        "--config.coverage.max_k=1", "--config.coverage.k=1")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["cot"] and set(summary["by_k"]) == {"k1"}
  row = read_jsonl(workdir / "data" / "train.jsonl")[0]
  task = compositional.make_task("path_ambiguous", 5, summary["num_train"], num_test=40)
  assert row["bridges"] == task.splits["train"].bridges[0].tolist()
  assert all(0 <= summary["accuracy"][name] <= 1 for name in summary["accuracy"])


def test_sweep_finds_data_required_and_fits_the_exponent(tmp_path):
  """With a target every run reaches, the smallest training set of each N is the first tried,
  and the exponent is fitted on them."""
  workdir = tmp_path / "sweep"
  result = run_coverage("configs/coverage.py:sweep_cpu", workdir,
                        "--config.sweep.n_tokens=(5, 7)",
                        "--config.sweep.train_fractions=(0.5, 0.9)",
                        "--config.sweep.target_accuracy=0.0", "--config.task.num_test=30",
                        "--config.train.steps=5", "--config.train.batch_size=16")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  expected = {str(n): int(0.5 * compositional.max_train_size("two_hop", n, 0.7))
              for n in (5, 7)}
  assert summary["data_required"] == expected
  assert len(summary["runs"]) == 2 and summary["not_reached"] == []
  fit = fit_power_law([5, 7], list(expected.values()))
  assert summary["fit"]["alpha"] == pytest.approx(fit["alpha"])
  assert (workdir / "plots" / "data_vs_n.png").exists()
