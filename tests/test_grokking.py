"""The grokking experiment end to end on a tiny table, and its acceleration methods."""

import json

import pytest

from conftest import read_jsonl, run_cli, sigterm_after_metrics
from llmjax import main

TINY = ("--config.task.modulus=11", "--config.num_seeds=2", "--config.train.steps=60",
        "--config.train.eval_every=20", "--config.train.checkpoint_every=40",
        "--config.train.log_every=20",
        "--config.model.d_model=32", "--config.model.d_ff=64", "--config.train.progress=False")


def grok_args(workdir, *extra):
  return ["--config", "configs/grokking.py", "--workdir", str(workdir), *TINY, *extra]


def test_run_writes_per_seed_curves_stages_and_plots(tmp_path):
  result = run_cli(grok_args(tmp_path))
  assert result.returncode == 0, result.stderr
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  train_rows = [r for r in rows if r["split"] == "train"]
  rows = [r for r in rows if r["split"] == "eval"]
  assert sorted({(r["step"], r["seed"]) for r in rows}) == [
      (s, i) for s in (0, 20, 40, 60) for i in (0, 1)]
  # The engine's loop logs each seed's training loss, averaged over the steps since the last.
  assert sorted((r["step"], r["seed"]) for r in train_rows) == [
      (s, i) for s in (20, 40, 60) for i in (0, 1)]
  assert all(r["loss"] > 0 for r in train_rows)
  for row in rows:
    assert 0.0 <= row["train_accuracy"] <= 1.0 and row["violation"] >= 0.0
    assert {"violation_commutativity", "violation_associativity_max",
            "effective_dimension"} <= set(row)
  summary = json.loads((tmp_path / "summary.json").read_text())
  for key in ("final_train_accuracy", "final_test_accuracy", "step_memorized",
              "step_symmetry", "step_generalized", "step_organized", "effective_dimension",
              "min_violation"):
    assert key in summary and f"{key}_seed0" in summary and f"{key}_seed1" in summary
  assert summary["final_train_accuracy_seed0"] == rows[-2]["train_accuracy"]
  assert summary["restricted_loss_seed0"] > 0 and summary["key_frequencies_seed0"]
  for plot in ("accuracy", "loss", "violation", "effective_dimension", "pca_stages", "fourier"):
    assert (tmp_path / "plots" / f"{plot}.png").stat().st_size > 1000, plot
  # Resuming with more steps continues from the step-60 checkpoint; stop_after_steps stops
  # (and checkpoints) grokking as it does every training experiment.
  result = run_cli(grok_args(tmp_path, "--config.train.steps=100",
                             "--config.train.stop_after_steps=20"))
  assert result.returncode == 0, result.stderr
  assert "resuming from step 60" in result.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 80 and summary["stopped_early"] is True
  steps = sorted({r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")})
  assert steps == [0, 20, 40, 60, 80]


@pytest.mark.parametrize("method", ["symmetry", "geometry", "grokfast_ema", "grokfast_ma"])
def test_acceleration_methods_run(tmp_path, method):
  summary = main.run(grok_args(tmp_path, f"--config.acceleration.method={method}",
                               "--config.train.steps=20", "--config.num_seeds=1"))
  assert summary["method"] == method and summary["steps"] == 20


@pytest.mark.parametrize("family, extra", [
    ("graph", ("--config.task.graph=cycle64", "--config.task.train_fraction=0.8")),
    ("comparison", ("--config.task.grid=grid3d", "--config.task.train_fraction=0.2"))])
def test_other_families_run(tmp_path, family, extra):
  summary = main.run(grok_args(tmp_path, f"--config.task.family={family}", *extra,
                               "--config.train.steps=20", "--config.num_seeds=1"))
  assert summary["family"] == family
  assert isinstance(summary["min_violation"], float)


def test_unknown_method_is_a_user_error(tmp_path, capsys):
  assert main.main(grok_args(tmp_path, "--config.acceleration.method=magic")) == 2
  assert "acceleration.method = 'magic'" in capsys.readouterr().err


def test_sigterm_checkpoints_and_exits_0(tmp_path):
  process = sigterm_after_metrics(grok_args(tmp_path, "--config.train.steps=1000000",
                                            "--config.num_seeds=1"), tmp_path, min_rows=2)
  assert process.returncode == 0, process.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["stopped_early"] is True and 20 <= summary["steps"] < 1000000
  saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert summary["steps"] in saved
