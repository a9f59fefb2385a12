"""Compositional tasks, the k-coverage computation against its literal definition, and the
coverage experiment end to end."""

import json

import numpy as np
import pytest

from llmjax.data.batches import lm_batch
from llmjax.errors import UserError
from llmjax.experiments.coverage import compositional
from llmjax.experiments.coverage.experiment import (coverage_report, fit_power_law,
                                                    search_data_required)
from llmjax.experiments.coverage.k_coverage import (k_coverage, k_coverage_brute_force,
                                                    nontrivial_subsets)
from conftest import read_jsonl, run_cli


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


@pytest.mark.parametrize("seed", range(6))
def test_duplicate_training_rows_count_once_up_to_n_8(seed):
  """Random tables over N up to 8, training sets with repeated rows: the fast computation equals
  the definition (which sees a set), and equals itself on the de-duplicated rows."""
  rng = np.random.default_rng(100 + seed)
  n_tokens = int(rng.integers(6, 9))
  kind = ("two_hop", "path_ambiguous")[seed % 2]
  pool = compositional.max_train_size(kind, n_tokens, 0.7)
  task = compositional.make_task(kind, n_tokens, int(rng.integers(pool // 4, pool // 2)),
                                 seed=seed)
  targets = task.full_targets()
  train = task.splits["train"].inputs
  repeated = np.concatenate([train, train[rng.integers(0, len(train), len(train))]])
  rng.shuffle(repeated)
  for k in (1, 2, 3):
    fast = k_coverage(repeated, targets, k)
    np.testing.assert_array_equal(fast, k_coverage_brute_force(repeated, targets, k))
    np.testing.assert_array_equal(fast, k_coverage(train, targets, k))


def test_a_duplicated_row_does_not_break_an_equivalence():
  """The hand-made example below, with (0, 0) listed twice: a=0 and a=1 still agree on exactly
  the two contexts they share, so (1, 2) stays covered."""
  targets = np.array([[5, 6, 7], [5, 6, 7], [4, 6, 0]])
  train = np.array([[0, 0], [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 1]])
  assert k_coverage(train, targets, 2)[1, 2] and not k_coverage(train, targets, 2)[2, 2]


def test_coverage_report_splits_accuracy_by_the_definition():
  """A planted model that answers exactly the covered inputs plus every third uncovered one:
  per split and k, the report's fractions, counts and accuracies must match what the
  brute-force definition says about each held-out input."""
  task = compositional.make_task("two_hop", n_tokens=6, num_train=60, seed=4)
  targets, train = task.full_targets(), task.splits["train"].inputs
  held_out = [n for n, s in task.splits.items() if n != "train" and len(s)]
  truth = k_coverage_brute_force(train, targets, 2)
  correct = {"train": np.zeros(0, bool)}
  for name in held_out:
    covered = truth[tuple(task.splits[name].inputs.T)]
    correct[name] = covered | (np.arange(len(covered)) % 3 == 0)
  masks, report = coverage_report(task, correct, ks=(2,))
  np.testing.assert_array_equal(masks[2], truth)
  row = report["k2"]
  seen = compositional.seen_type("two_hop")
  test_names = [n for n in held_out if n != "train_inferred"]
  for prefix, names in ((f"{seen}_", [seen]), ("test_", test_names)):
    covered = np.concatenate([truth[tuple(task.splits[n].inputs.T)] for n in names])
    uncovered_index = np.concatenate([np.arange(len(task.splits[n].inputs)) for n in names])
    assert row[f"{prefix}covered_count"] == covered.sum() > 0
    assert row[f"{prefix}uncovered_count"] == (~covered).sum() > 0
    assert row[f"{prefix}covered_accuracy"] == 1.0
    expected = float(np.mean(uncovered_index[~covered] % 3 == 0))
    assert abs(row[f"{prefix}uncovered_accuracy"] - expected) < 1e-12 and expected < 1.0
  for name in held_out:
    assert row["coverage_fraction"][name] == truth[tuple(task.splits[name].inputs.T)].mean()


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_a_positive_integer(k):
  targets = np.zeros((3, 3), int)
  for function in (k_coverage, k_coverage_brute_force):
    with pytest.raises(ValueError, match=r"k = .*: expected an integer >= 1"):
      function(np.array([[0, 0]]), targets, k)


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


@pytest.mark.slow
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
  # A third party recomputes `covered` from the exported files alone, with the literal
  # definition: train.jsonl, domain.json (N, k, tables) and full_targets.npz.
  data = workdir / "data"
  domain = json.loads((data / "domain.json").read_text())
  assert (domain["n_tokens"], domain["num_inputs"], domain["k"]) == (6, 3, 2)
  assert domain["domain_size"] == 216
  with np.load(data / "full_targets.npz") as saved:
    full_targets = saved["full_targets"]
  assert full_targets.shape == (6, 6, 6)
  f1, f2 = (np.asarray(t) for t in domain["tables"])  # two-hop: t = f2(f1(x1, x2), x3)
  x1, x2, x3 = np.indices((6, 6, 6))
  np.testing.assert_array_equal(full_targets, f2[f1[x1, x2], x3])
  train = np.array([r["input"] for r in read_jsonl(data / "train.jsonl")])
  seen1 = np.asarray(domain["seen"][0], bool)
  assert seen1[train[:, 0], train[:, 1]].all() and seen1.sum() == len(
      {(a, b) for a, b, _ in train.tolist()})
  covered = k_coverage_brute_force(train, full_targets, domain["k"])
  for name in ("both_seen", "f1_unseen", "f2_unseen", "both_unseen"):
    rows = read_jsonl(data / f"{name}.jsonl")
    assert all(r["target"] == full_targets[tuple(r["input"])] for r in rows)
    assert [r["covered"] for r in rows] == [bool(covered[tuple(r["input"])]) for r in rows]
    assert summary["coverage_fraction"][name] == pytest.approx(
        np.mean([r["covered"] for r in rows]))
  assert sum(r["covered"] for r in read_jsonl(data / "both_seen.jsonl")) > 0
  train_rows = read_jsonl(workdir / "data" / "train.jsonl")
  assert len(train_rows) == summary["num_train"] and "covered" not in train_rows[0]
  assert (workdir / "plots" / "accuracy_vs_coverage.png").exists()


@pytest.mark.slow
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
  # Every non-empty test split is scored, and per k its covered and uncovered rows add up.
  sizes = {name: len(s) for name, s in task.splits.items()}
  assert summary["test_sizes"] == sizes
  assert set(summary["accuracy"]) == {n for n, size in sizes.items() if n != "train" and size}
  report = summary["by_k"]["k1"]
  pooled = sum(size for n, size in sizes.items() if n not in ("train", "train_inferred"))
  assert report["test_covered_count"] + report["test_uncovered_count"] == pooled


@pytest.mark.slow
def test_sweep_finds_data_required_and_fits_the_exponent(tmp_path):
  """With a target every run reaches, the smallest training set of each N is the first tried,
  and the exponent is fitted on them."""
  workdir = tmp_path / "sweep"
  result = run_coverage("configs/coverage.py:sweep_cpu", workdir,
                        "--config.sweep.n_tokens=(5, 7)",
                        "--config.sweep.train_fractions=(0.5, 0.9)",
                        "--config.sweep.target_accuracy=0.0", "--config.sweep.seeds=1",
                        "--config.task.num_test=30",
                        "--config.train.steps=5", "--config.train.batch_size=16")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  expected = {str(n): int(0.5 * compositional.max_train_size("two_hop", n, 0.7))
              for n in (5, 7)}
  assert summary["data_required"] == expected
  assert len(summary["runs"]) == 2 and summary["not_reached"] == []
  # Two points: the exponent is the slope between them in log-log.
  alpha = np.log(expected["7"] / expected["5"]) / np.log(7 / 5)
  assert summary["fit"]["alpha"] == pytest.approx(alpha)
  assert (workdir / "plots" / "data_vs_n.png").exists()


def test_data_required_search_bisects_between_the_bracketing_fractions():
  threshold = 0.37  # accuracy reaches the target from this fraction on
  tried = []

  def accuracy_at(fraction):
    tried.append(fraction)
    return 0.9 if fraction >= threshold else 0.2

  found = search_data_required((0.5, 0.1, 0.2, 0.9), accuracy_at, 0.8, refine=2)
  # 0.1, 0.2 below; 0.5 reaches it; then 0.35 (below) and 0.425 (at).
  assert tried == [0.1, 0.2, 0.5, 0.35, 0.425] and found == pytest.approx(0.425)
  tried.clear()
  assert search_data_required((0.5, 0.9), accuracy_at, 0.8, refine=3) == 0.5  # nothing below
  assert tried == [0.5]
  assert search_data_required((0.1, 0.2), accuracy_at, 0.8, refine=2) is None
