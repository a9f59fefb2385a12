"""Exact resume, SIGTERM saves, and checkpoint/model compatibility checks."""

import json

import jax
import pytest

from conftest import read_jsonl, run_cli, sigterm_after_metrics, tiny_args
from llmjax.errors import CheckpointMismatchError
from llmjax.weights.checkpoint import check_compatible

RUN = ("--config.train.steps=24", "--config.train.log_every=3", "--config.train.eval_every=6",
       "--config.train.checkpoint_every=6")


@pytest.mark.trains
def test_stopped_and_resumed_run_is_bit_identical(tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  assert run_cli(tiny_args(straight, *RUN)).returncode == 0
  first = run_cli(tiny_args(resumed, *RUN, "--config.train.stop_after_steps=9"))
  assert first.returncode == 0, first.stderr
  assert json.loads((resumed / "summary.json").read_text())["stopped_early"] is True
  second = run_cli(tiny_args(resumed, *RUN))
  assert second.returncode == 0, second.stderr
  assert json.loads((resumed / "summary.json").read_text())["resumed_from_step"] == 9
  drop = ("tokens_per_s", "step_time_s", "mfu")  # wall-clock figures differ, nothing else may
  strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa
  resumed_rows = strip(read_jsonl(resumed / "metrics.jsonl"))
  # The stop at step 9 adds its own eval row (not on the every-6 cadence); nothing else differs.
  assert [r for r in resumed_rows if (r["step"], r["split"]) != (9, "eval")] == strip(
      read_jsonl(straight / "metrics.jsonl"))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path):
  process = sigterm_after_metrics(
      tiny_args(tmp_path, "--config.train.steps=100000", "--config.train.log_every=1",
                "--config.train.checkpoint_every=100000"), tmp_path, min_rows=3)
  assert process.returncode == 0, process.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["stopped_early"] is True and summary["steps"] >= 3
  saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved == [summary["steps"]]
  assert summary["status"] == "stopped"
  assert process.stderr.strip().splitlines()[-1] == (
      f"stopped at step {summary['steps']} on SIGTERM; checkpoint saved in "
      f"{tmp_path}/checkpoints; rerun the same command to resume")
  resumed = run_cli(tiny_args(tmp_path, f"--config.train.steps={summary['steps'] + 2}"))
  assert resumed.returncode == 0, resumed.stderr
  assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == \
      summary["steps"]


def test_compatibility_check_names_first_difference():
  saved = {"params": {"a": jax.ShapeDtypeStruct((2, 3), "float32"),
                      "b": jax.ShapeDtypeStruct((4,), "float32")}}
  check_compatible(saved, saved)
  with pytest.raises(CheckpointMismatchError, match="'params/b' has shape \\(4,\\).*\\(5,\\)"):
    check_compatible(saved, {"params": {**saved["params"], "b": jax.ShapeDtypeStruct((5,), "f")}})
  with pytest.raises(CheckpointMismatchError, match="no parameter 'params/c'"):
    check_compatible(saved, {"params": {**saved["params"], "c": saved["params"]["a"]}})
  with pytest.raises(CheckpointMismatchError, match="'params/b' does not exist"):
    check_compatible(saved, {"params": {"a": saved["params"]["a"]}})


def test_a_failed_write_is_one_line_naming_the_step_and_the_last_complete_one(tmp_path):
  # Where a small filesystem cannot be mounted (tests/test_failures.py), the OS error itself.
  import errno
  import jax.numpy as jnp
  from llmjax import runio
  from llmjax.errors import StorageError
  from llmjax.weights.checkpoint import Checkpointer
  checkpointer = Checkpointer(tmp_path, async_save=False)
  state = {"w": jnp.ones(3)}
  checkpointer.save(1, state)
  checkpointer._manager.save = lambda *args, **kwargs: (_ for _ in ()).throw(
      OSError(errno.ENOSPC, "No space left on device"))
  try:
    with pytest.raises(StorageError, match=f"cannot save checkpoint step 2 in {tmp_path} \\(No "
                                           "space left on device\\); the last complete "
                                           "checkpoint is step 1"):
      checkpointer.save(2, state)
    checkpointer.close()  # what follows from the failure is not raised again
  finally:
    runio.unmute_stderr()  # a failed write mutes the process's stderr (the CLI's last words)
