"""The command line: the run contract's files, resuming, and one-line errors with exit code 2."""

import json

import pytest

from conftest import read_jsonl, run_cli, tiny_args
from llmjax import main


@pytest.mark.parametrize("args, message", [
    (["--config.no_such_key=1"], "error: unknown config key 'no_such_key'"),
    (["--config.train.stepz=3"],
     "error: unknown config key 'train.stepz'; did you mean 'train.steps'?"),
    (["--config.train.steps=abc"], "error: bad config value: flag --config.train.steps=abc"),
    (["--config.model.activation=tanh"], "error: model.activation = 'tanh': expected one of"),
    (["--config.mesh.tensor=3"], "error: mesh = {'data': -1, 'fsdp': 1, 'tensor': 3}"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, args, message):
  code = main.main(["--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path), *args])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert err.startswith(message) and "\n" not in err, err
  assert not (tmp_path / "config.json").exists()  # nothing left behind by a rejected run


@pytest.mark.parametrize("argv, message", [
    (["--config", "configs/pretrain.py:huge", "--workdir", "w"],
     "error: unknown preset 'huge'; expected one of ['gsm8k_tiny', 'llama_1b', 'tiny']"),
    (["--config", "configs/nope.py", "--workdir", "w"], "error: config file configs/nope.py"),
    (["--config", "configs/pretrain.py"], "error: --workdir is required"),
    (["--workdir", "w"], "error: --config is required"),
    (["--config", "configs/pretrain.py", "--workdir", "w", "--wrkdir=x"],
     "error: unknown flag --wrkdir"),
])
def test_bad_command_line_exits_2(capsys, argv, message):
  assert main.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(message) and "\n" not in err, err


def test_cli_process_prints_no_traceback(tmp_path):
  result = run_cli(tiny_args(tmp_path, "--config.no_such_key=1"))
  assert result.returncode == 2
  assert result.stderr.strip() == "error: unknown config key 'no_such_key'"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  result = run_cli(tiny_args(workdir, "--config.train.steps=20", "--config.train.log_every=5",
                             "--config.train.eval_every=10",
                             "--config.train.checkpoint_every=10"))
  assert result.returncode == 0, result.stderr
  return workdir


def test_run_contract_files(finished_run):
  w = finished_run
  config = json.loads((w / "config.json").read_text())
  assert config["experiment"] == "lm_pretrain" and config["train"]["steps"] == 20
  rows = read_jsonl(w / "metrics.jsonl")
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == [5, 10, 15, 20]
  for row in train:
    for key in ("loss", "accuracy", "grad_norm", "learning_rate", "tokens_per_s",
                "step_time_s", "mfu"):
      assert isinstance(row[key], float) and row[key] >= 0, (key, row)
    assert row["mfu"] <= 1.0, row  # against this host's measured matmul rate
  assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20]
  summary = json.loads((w / "summary.json").read_text())
  assert summary["steps"] == 20 and summary["tokens_seen"] == 20 * 16 * 128
  assert summary["final_train_loss"] == train[-1]["loss"]
  assert summary["final_eval_loss"] < 5.6  # below the uniform-over-bytes entropy, ln 259
  assert all(isinstance(v, (int, float, str)) for v in summary.values())
  assert (w / "plots" / "loss.png").stat().st_size > 1000
  assert list((w / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(int(p.name) for p in (w / "checkpoints").iterdir() if p.name.isdigit()) == [
      10, 20]


def test_second_invocation_with_more_steps_resumes(finished_run):
  result = run_cli(tiny_args(finished_run, "--config.train.steps=30", "--config.train.log_every=5",
                             "--config.train.eval_every=10",
                             "--config.train.checkpoint_every=10"))
  assert result.returncode == 0, result.stderr
  summary = json.loads((finished_run / "summary.json").read_text())
  assert summary["resumed_from_step"] == 20 and summary["steps"] == 30
  steps = [r["step"] for r in read_jsonl(finished_run / "metrics.jsonl") if r["split"] == "train"]
  assert steps == [5, 10, 15, 20, 25, 30]  # one history, continued


def test_checkpoint_of_another_model_is_rejected_by_name(finished_run, tmp_path):
  before = (finished_run / "config.json").read_text()
  # Resumed in its own workdir, the shape change is a change of history (test_run_history.py);
  # started from it in a new one, the checkpoint's parameter is named.
  result = run_cli(tiny_args(finished_run, "--config.model.d_ff=96"))
  assert result.returncode == 2
  assert "(model.d_ff = 192 there, 96 now)" in result.stderr.strip().splitlines()[-1]
  result = run_cli(tiny_args(tmp_path, "--config.model.d_ff=96",
                             f"--config.train.init_from={finished_run}"))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: checkpoint parameter 'layer_0/mlp/down/kernel' has shape (192, 64); the "
      "configured model expects (96, 64)")
  assert (finished_run / "config.json").read_text() == before


def test_malformed_data_row_exits_2_naming_file_and_line(tmp_path, capsys):
  good = tmp_path / "dev.jsonl"
  good.write_text('{"text": "fine"}\n')
  bad = tmp_path / "train.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken}\n')
  code = main.main(["--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path / "w"),
                    "--config.data.corpus=jsonl", f"--config.data.path={bad}",
                    f"--config.data.eval_path={good}"])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert err.startswith(f"error: {bad}:3: malformed row") and "\n" not in err, err
