"""The one training loop with an experiment's own objective: a custom loss_fn through the CLI,
frozen reference params, initial params from an earlier run, a trained param subset, exact
resume."""

import jax
import numpy as np

from conftest import read_jsonl, run_cli
from llmjax.parallel import Parallel
from llmjax.train.state import param_path
from llmjax.weights import load_model

TOY_MODEL = ["--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
             "--config.model.n_kv_heads=1", "--config.model.d_ff=64", "--config.model.max_len=32"]


def _params(run_dir) -> dict[str, np.ndarray]:
  loaded = load_model(str(run_dir), Parallel.from_config({"data": -1}))
  return {param_path(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(loaded.params)[0]}


def test_custom_objective_with_frozen_params_resumes_bit_identically(tmp_path):
  base = tmp_path / "base"
  done = run_cli(["--config", "configs/pretrain.py:tiny", "--workdir", str(base),
                  "--config.train.progress=False", *TOY_MODEL, "--config.train.steps=4",
                  "--config.train.batch_size=4", "--config.train.seq_len=32",
                  "--config.train.checkpoint_every=4", "--config.train.eval_batches=1"])
  assert done.returncode == 0, done.stderr
  toy = lambda workdir, *extra: run_cli(  # noqa: E731
      ["--config", "tests/toy_objective.py", "--workdir", str(workdir),
       f"--config.train.init_from={base}", *extra])
  straight, stopped = tmp_path / "straight", tmp_path / "stopped"
  assert toy(straight).returncode == 0
  first = toy(stopped, "--config.train.stop_after_steps=3")
  assert first.returncode == 0, first.stderr
  resumed = toy(stopped)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resuming from step 3 ({stopped}/checkpoints)" in resumed.stderr

  # Resuming after stop_after_steps is exact: the same losses and the same final params.
  losses = lambda run: [(r["step"], r["loss"], r["kl"]) for r in read_jsonl(  # noqa: E731
      run / "metrics.jsonl") if r["split"] == "train"]
  assert losses(stopped) == losses(straight) and len(losses(straight)) == 8
  start, end, other = _params(base), _params(straight), _params(stopped)
  assert all(np.array_equal(end[k], other[k]) for k in end)

  # Only layer_1 trained; everything else, and the frozen reference, is the start bit for bit.
  trained = [k for k in end if k.startswith("layer_1/")]
  assert trained and all(not np.array_equal(end[k], start[k]) for k in trained)
  assert all(np.array_equal(end[k], start[k]) for k in end if k not in trained)
  reference = np.load(straight / "reference_at_end.npz")
  assert [reference[str(i)].tobytes() for i in range(len(start))] == [
      start[k].tobytes() for k in sorted(start)]
  assert losses(straight)[0][2] == 0.0  # step 1: policy == reference, so the KL is 0
  # Adam's two moments exist for the trained subset alone.
  summary = __import__("json").loads((straight / "summary.json").read_text())
  trained_size = sum(end[k].size for k in trained)
  assert 2 * trained_size <= summary["optimizer_state_size"] <= 2 * trained_size + 8
