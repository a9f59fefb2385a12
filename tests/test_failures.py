"""Nothing lost, nothing silent: each mistake or fault a user can meet, driven through
`python -m llmjax.main` (or the API where there is no command line), checked for its exit code,
its one `error:` line, and what is on disk afterwards."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from conftest import (REPO, error_line, read_jsonl, run_cli, sigterm_after_metrics, small_args,
                      xla_flags)
from llmjax import main
from llmjax.errors import UserError

def checkpoint_steps(workdir) -> list[int]:
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if (
      directory.exists()) else []


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 8-step run with checkpoints at steps 4 and 8."""
  workdir = tmp_path_factory.mktemp("finished")
  result = run_cli(small_args(workdir, "--config.train.steps=8",
                              "--config.train.checkpoint_every=4"))
  assert result.returncode == 0, result.stderr
  return workdir


# ---- settings and command line ----------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("train.steps=0", "train.steps = 0: expected a positive integer"),
    ("train.batch_size=0", "train.batch_size = 0: expected a positive integer"),
    ("train.seq_len=-4", "train.seq_len = -4: expected a positive integer"),
    ("train.grad_accum_steps=0", "train.grad_accum_steps = 0: expected a positive integer"),
    ("train.log_every=0", "train.log_every = 0: expected a positive integer"),
    ("train.eval_every=0", "train.eval_every = 0: expected a positive integer"),
    ("train.checkpoint_every=0", "train.checkpoint_every = 0: expected a positive integer"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints = 0: expected a positive integer"),
    ("train.eval_batches=0", "train.eval_batches = 0: expected a positive integer"),
    ("train.stop_after_steps=0", "train.stop_after_steps = 0: expected a positive integer"),
    ("optim.lr=-1", "optim.lr = -1.0: expected a finite number >= 0"),
    ("optim.lr=nan", "optim.lr = nan: expected a finite number >= 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay = -0.1: expected a finite number >= 0"),
    ("optim.b2=1.5", "optim.b2 = 1.5: expected a number in [0.0, 1.0)"),
    ("data.num_docs=0", "data.num_docs = 0: expected a positive integer"),
    ("model.mask_mode=prefix_lm", "model.mask_mode = 'prefix_lm': the LM objective "
     "(next-token prediction) needs 'causal'"),
])
def test_settings_are_checked_before_anything_runs(tmp_path, capsys, override, message):
  assert main.main(small_args(tmp_path, f"--config.{override}")) == 2
  assert error_line(capsys) == f"error: {message}"
  assert os.listdir(tmp_path) == [".lock"]  # nothing else left by a rejected run


@pytest.mark.parametrize("config, override, message", [
    ("configs/grokking.py", "num_seeds=0", "config.num_seeds = 0: expected a positive integer"),
    ("configs/grokking.py", "train.eval_every=0", "train.eval_every = 0: expected a positive"),
    ("configs/coverage.py", "coverage.k=0", "coverage.k = 0: expected a positive integer"),
    ("configs/coverage.py", "task.train_fraction=0.0", "task.train_fraction = 0.0: expected"),
])
def test_experiment_settings_are_checked(tmp_path, capsys, config, override, message):
  assert main.main(["--config", config, "--workdir", str(tmp_path), f"--config.{override}"]) == 2
  assert error_line(capsys).startswith(f"error: {message}")


@pytest.mark.slow
def test_mesh_sizes_must_divide_the_model(tmp_path):
  result = run_cli(small_args(tmp_path, "--config.mesh.data=1", "--config.mesh.tensor=4"),
                   devices=4)
  assert result.returncode == 2
  assert result.stderr.strip() == (
      "error: parameter params/layer_0/attn/key/kernel has 1 along its 'kv_heads' axis, which "
      "mesh.tensor=4 cannot split evenly: choose mesh sizes that divide the model's dimensions "
      "(heads, kv heads, vocab, d_ff, d_model)")


def test_an_argument_that_is_not_a_flag_and_a_config_that_is_not_python(tmp_path, capsys):
  assert main.main(small_args(tmp_path, "config.train.steps=30")) == 2
  assert "error: unexpected argument 'config.train.steps=30'; did you mean " \
      "--config.train.steps=30?" in error_line(capsys)
  assert main.main(["--config", "README.md", "--workdir", str(tmp_path)]) == 2
  assert error_line(capsys).startswith("error: config file README.md: expected a Python file")
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n")
  assert main.main(["--config", str(broken), "--workdir", str(tmp_path)]) == 2
  assert error_line(capsys).startswith(f"error: config file {broken}:1: not valid Python")


# ---- the run record -----------------------------------------------------------------------------

def test_nan_gradients_at_a_save_step_keep_the_last_good_checkpoint(tmp_path):
  toy = lambda *extra: run_cli(["--config", "tests/toy_objective.py", "--workdir",  # noqa
                                str(tmp_path), "--config.train.steps=4", *extra])
  assert toy().returncode == 0
  # The loss stays finite (the poison adds 0), the gradients and then the params are NaN.
  bad = toy("--config.train.steps=8", "--config.train.checkpoint_every=1",
            "--config.nan_gradients=True")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
      f"error: the parameters are not finite at step 5; training stopped, the last good "
      f"checkpoint (step 4) is kept in {tmp_path}/checkpoints")
  assert checkpoint_steps(tmp_path) == [4]
  # The run had begun: its record stays whole and says how it ended.
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["nan_gradients"] is True and config["train"]["steps"] == 8
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "failed" and "not finite at step 5" in summary["error"]
  assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")
          if r["split"] == "train"] == [1, 2, 3, 4, 5]


def test_a_run_rejected_on_a_finished_workdir_changes_nothing(finished, capsys):
  before = {name: (finished / name).read_bytes()
            for name in ("config.json", "summary.json", "metrics.jsonl")}
  # Fewer steps than the checkpoint: refused, instead of a summary that contradicts config.json.
  assert main.main(small_args(finished, "--config.train.steps=6")) == 2
  assert error_line(capsys) == (
      f"error: {finished}/checkpoints holds a checkpoint at step 8, past train.steps=6: set "
      "train.steps >= 8 to continue that run, or use a new --workdir")
  assert main.main(small_args(finished, "--config.resume=False")) == 2
  assert error_line(capsys) == (
      f"error: workdir {finished} holds checkpoints of an earlier run (steps [4, 8]); "
      "config.resume=False would mix two histories: use a new --workdir, or add "
      "--config.overwrite=True to move the earlier run aside")
  assert {name: (finished / name).read_bytes() for name in before} == before
  assert checkpoint_steps(finished) == [4, 8]


def test_resume_false_with_overwrite_moves_the_earlier_run_aside(tmp_path, capsys):
  assert run_cli(small_args(tmp_path, "--config.train.steps=4",
                            "--config.train.checkpoint_every=4")).returncode == 0
  # A run rejected for another reason moves nothing: the move happens when training begins.
  assert main.main(small_args(tmp_path, "--config.resume=False", "--config.overwrite=True",
                              "--config.train.steps=0")) == 2
  assert error_line(capsys) == "error: train.steps = 0: expected a positive integer"
  assert checkpoint_steps(tmp_path) == [4]
  assert not [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
  again = run_cli(small_args(tmp_path, "--config.train.steps=2", "--config.resume=False",
                             "--config.overwrite=True"))
  assert again.returncode == 0, again.stderr
  moved = [p for p in tmp_path.iterdir() if p.name.startswith("replaced-")]
  assert len(moved) == 1 and f"moved the earlier run in {tmp_path} to {moved[0]}" in again.stderr
  assert checkpoint_steps(moved[0]) == [4] and checkpoint_steps(tmp_path) == [2]
  # The earlier run moves whole, its config.json with it.
  assert json.loads((moved[0] / "summary.json").read_text())["steps"] == 4
  assert json.loads((moved[0] / "config.json").read_text())["train"]["steps"] == 4
  assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 2
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 2


@pytest.mark.slow
def test_one_run_per_workdir_and_a_dead_holder_never_blocks(tmp_path):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  first = subprocess.Popen([sys.executable, "-m", "llmjax.main",
                            *small_args(tmp_path, "--config.train.steps=100000",
                                        "--config.train.log_every=1")],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  try:
    deadline = time.time() + 180
    metrics = tmp_path / "metrics.jsonl"
    while not metrics.exists() or "\n" not in metrics.read_text():  # a whole row written
      assert first.poll() is None and time.time() < deadline
      time.sleep(0.2)
    second = run_cli(small_args(tmp_path, "--config.train.steps=100000"))
    assert second.returncode == 2
    line = second.stderr.strip()
    assert line.startswith(f"error: workdir {tmp_path} is in use by another run (pid "
                           f"{first.pid} on ") and "\n" not in line, line
    assert line.endswith("; wait for it to finish or use another --workdir")
  finally:
    first.kill()  # SIGKILL: no clean-up, the lock file stays behind
    first.wait()
  assert (tmp_path / ".lock").exists()
  resumed = run_cli(small_args(tmp_path, "--config.train.steps=2",
                               "--config.train.checkpoint_every=1"))
  assert resumed.returncode in (0, 2), resumed.stderr  # the lock did not refuse it
  assert "in use by another run" not in resumed.stderr


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
  process = sigterm_after_metrics(small_args(tmp_path, "--config.train.steps=100000",
                                             "--config.train.log_every=1",
                                             "--config.train.checkpoint_every=100000"),
                                  tmp_path, min_rows=2, signal_number=signal.SIGINT)
  assert process.returncode == 130, process.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["stopped_early"] is True and summary["status"] == "stopped"
  assert checkpoint_steps(tmp_path) == [summary["steps"]]
  assert (f"stopped at step {summary['steps']} on SIGINT; checkpoint saved in "
          f"{tmp_path}/checkpoints; rerun the same command to resume") in process.stderr


# ---- bad files ----------------------------------------------------------------------------------

def _jsonl_corpus(tmp_path, train: bytes, *extra):
  (tmp_path / "dev.jsonl").write_text('{"text": "a fine development document"}\n' * 8)
  (tmp_path / "train.jsonl").write_bytes(train)
  return small_args(tmp_path / "w", "--config.data.corpus=jsonl",
                    f"--config.data.path={tmp_path / 'train.jsonl'}",
                    f"--config.data.eval_path={tmp_path / 'dev.jsonl'}", *extra)


def test_bad_corpus_files_name_the_file_and_line(tmp_path, capsys):
  train = tmp_path / "train.jsonl"
  assert main.main(_jsonl_corpus(tmp_path, b'{"text": "ok"}\n{"text": "caf\xe9"}\n')) == 2
  assert error_line(capsys).startswith(f"error: {train}:2: not valid UTF-8 (invalid")
  assert main.main(_jsonl_corpus(tmp_path, b"\n\n")) == 2
  assert error_line(capsys) == (f"error: {train}: no documents (a corpus split needs at least "
                                "one)")
  args = _jsonl_corpus(tmp_path, b"")
  args[args.index(f"--config.data.path={train}")] = f"--config.data.path={tmp_path}"
  assert main.main(args) == 2
  assert error_line(capsys) == f"error: {tmp_path}: is a directory; expected a file"
  # Found when training starts, not when the shuffle reaches it (72 tokens > 2 chunks of 33).
  long_row = json.dumps({"text": "x" * 70}).encode()
  assert main.main(_jsonl_corpus(tmp_path, b'{"text": "ok"}\n' * 3 + long_row + b"\n",
                                 "--config.data.max_chunks_per_document=2")) == 2
  assert error_line(capsys) == (
      f"error: {train}:4: a document of 72 tokens needs more than "
      "data.max_chunks_per_document=2 chunks of 33; raise that limit")


def test_a_damaged_checkpoint_names_its_step_and_the_intact_ones(finished, tmp_path, capsys):
  import shutil
  copy = tmp_path / "run"
  shutil.copytree(finished, copy, ignore=shutil.ignore_patterns(".lock"))
  for path in (copy / "checkpoints" / "8").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  assert main.main(small_args(copy, "--config.train.steps=12")) == 2
  line = error_line(capsys)
  assert line.startswith(f"error: checkpoint step 8 in {copy}/checkpoints cannot be read (")
  assert line.endswith(f"earlier steps whose metadata reads: [4]; move {copy}/checkpoints/8 "
                       "aside and rerun to resume from step 4")


def test_broken_model_and_tokenizer_files_are_one_line(tmp_path):
  from llmjax.data.tokenizers import load_tokenizer
  from llmjax.interop import load_hf
  hf = tmp_path / "hf"
  hf.mkdir()
  base = {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "num_attention_heads": 2,
          "num_hidden_layers": 1, "intermediate_size": 16}
  (hf / "config.json").write_bytes(b'{"model_type": "llama\xff"}')
  with pytest.raises(UserError, match=f"{hf}/config.json: invalid JSON"):
    load_hf(str(hf))
  (hf / "config.json").write_text("[1, 2]")
  with pytest.raises(UserError, match=f"{hf}/config.json: expected a JSON object, got list"):
    load_hf(str(hf))
  (hf / "config.json").write_text(json.dumps({**base, "hidden_size": None}))
  with pytest.raises(UserError, match="config.json: a llama setting has the wrong type"):
    load_hf(str(hf))
  (hf / "config.json").write_text(json.dumps({k: v for k, v in base.items()
                                              if k != "intermediate_size"}))
  with pytest.raises(UserError, match="config.json has no 'intermediate_size', which a llama"):
    load_hf(str(hf))
  (hf / "config.json").write_text(json.dumps({
      **base, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4},
      "rope_scaling": {"type": "yarn", "factor": 4.0}}))
  with pytest.raises(UserError, match="rope_scaling: rope type 'yarn' is not supported"):
    load_hf(str(hf))
  (hf / "config.json").write_text(json.dumps(base))
  for content in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1"):
    (hf / "model.safetensors").write_bytes(content)
    with pytest.raises(UserError, match=f"{hf}/model.safetensors: not a readable safetensors"):
      load_hf(str(hf))
  (hf / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}')
  with pytest.raises(UserError, match=f"{hf}/tokenizer.json: not a readable tokenizer.json"):
    load_tokenizer(f"hf:{hf}")
  (tmp_path / "spm.model").write_bytes(b"not a model")
  with pytest.raises(UserError, match="sentencepiece model .*spm.model: cannot be parsed"):
    load_tokenizer(f"spm:{tmp_path / 'spm.model'}")


def test_requests_name_their_file_and_line_and_nan_logprobs_are_null(tmp_path, capsys):
  from llmjax.experiments.inference_io import read_requests, write_jsonl
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_bytes(b'{"prompt": "a"}\n\n{"prompt": 3}\n')
  with pytest.raises(UserError, match=f"{prompts}:3: field 'prompt' must be a string"):
    read_requests(str(prompts), ("prompt",))
  prompts.write_bytes(b'{"prompt": "\xff"}\n')
  with pytest.raises(UserError, match=f"{prompts}:1: not valid UTF-8"):
    read_requests(str(prompts), ("prompt",))
  out = tmp_path / "scores.jsonl"
  assert write_jsonl(str(out), [{"logprob": float("nan"), "token_logprobs": [-1.0, float(
      "-inf")]}]) == 2
  assert json.loads(out.read_text()) == {"logprob": None, "token_logprobs": [-1.0, None]}
  assert "warning: 2 values in" in capsys.readouterr().err


# ---- the filesystem -----------------------------------------------------------------------------

def test_a_workdir_that_is_a_file_or_under_one(tmp_path, capsys):
  afile = tmp_path / "afile"
  afile.write_text("x")
  assert main.main(small_args(afile)) == 2
  assert error_line(capsys) == f"error: workdir {afile}: is a file; expected a directory"
  assert main.main(small_args(afile / "run")) == 2
  assert error_line(capsys) == f"error: workdir {afile}/run: lies under {afile}, which is a file"


@pytest.fixture
def small_filesystem(tmp_path):
  """A 1.5 MB tmpfs (needs the right to mount: root in a sandbox)."""
  mount = tmp_path / "fs"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)],
                        capture_output=True)
  if made.returncode:
    pytest.skip("cannot mount a small tmpfs here (needs root): full-disk and read-only cases "
                "not run")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_read_only_workdir_and_a_full_disk(small_filesystem):
  subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
  result = run_cli(small_args(small_filesystem / "run"))
  assert result.returncode == 2
  assert result.stderr.strip() == (f"error: workdir {small_filesystem}/run: cannot write there "
                                   "(Read-only file system)")
  subprocess.run(["mount", "-o", "remount,rw", str(small_filesystem)], check=True)
  # Each checkpoint of the small model (Adam moments and all) takes ~0.5 MB: the third or
  # fourth fills the disk.
  # In a process of its own: the failed write mutes the process's stderr and ends it without
  # the libraries' exit handlers (llmjax/main.py), which is what this checks.
  result = run_cli(small_args(small_filesystem / "run", "--config.train.steps=12",
                              "--config.train.checkpoint_every=1",
                              "--config.train.keep_checkpoints=10"), isolated=True)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("error: cannot save checkpoint step ")
  assert "(No space left on device); the last complete checkpoint is step " in lines[0]
  last = int(lines[0].rsplit(" ", 1)[1])
  assert last in checkpoint_steps(small_filesystem / "run")
  # A disk full before the run starts: one line, nothing run.
  with open(small_filesystem / "filler", "wb") as filler:
    try:
      while True:
        filler.write(b"\0" * 65536)
        filler.flush()
    except OSError:
      pass
  result = run_cli(small_args(small_filesystem / "new"), isolated=True)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "(No space left on device)" in lines[0], result.stderr
