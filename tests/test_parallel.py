"""Meshes, and the same training on 1 device and on 8 fake devices (data=2, fsdp=2, tensor=2)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, read_jsonl, run_cli, tiny_args, xla_flags
from llmjax.errors import UserError
from llmjax.parallel import mesh_shape


def test_mesh_shape_fills_one_axis():
  assert mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
  assert mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 8) == (1, 8, 1)
  with pytest.raises(UserError, match="uses 4 devices but 8 are present"):
    mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)
  with pytest.raises(UserError, match="at most one -1"):
    mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
  with pytest.raises(UserError, match="not divisible by 3"):
    mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)


SHARDING_PROBE = """
import json, jax
from llmjax.config_base import base_config
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.lm import lm_trainer
config = base_config("x")
config.mesh.update(data=2, fsdp=2, tensor=2)
config.train.update(batch_size=8, seq_len=16)
model = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64)
trainer = lm_trainer(model, config.train, config.optim, Parallel.from_config(config.mesh))
state = trainer.init_state(0)
spec = lambda x: [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]
attn = state.params["layer_0"]["attn"]
print(json.dumps({"query": spec(attn["query"]["kernel"]),
                  "adam_mu_query": spec(
                      state.opt_state[1][0].mu["layer_0"]["attn"]["query"]["kernel"]),
                  "up": spec(state.params["layer_0"]["mlp"]["up"]["kernel"]),
                  "embed": spec(state.params["embed"]["embedding"]),
                  "shard_shape": attn["query"]["kernel"].addressable_shards[0].data.shape}))
"""


def test_parameters_and_optimizer_state_follow_the_logical_rules():
  result = subprocess.run([sys.executable, "-c", SHARDING_PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120,
                          env={**__import__("os").environ,
                               "XLA_FLAGS": xla_flags(8)})
  assert result.returncode == 0, result.stderr
  specs = json.loads(result.stdout.strip().splitlines()[-1])
  assert specs["query"] == ["fsdp", "tensor", None]  # embed -> fsdp, heads -> tensor
  assert specs["adam_mu_query"] == specs["query"]
  assert specs["up"] == ["fsdp", "tensor"]
  assert specs["embed"] == ["tensor", "fsdp"]  # vocab -> tensor, embed -> fsdp
  assert specs["shard_shape"] == [16, 2, 8]


@pytest.mark.slow
def test_eight_devices_train_like_one(tmp_path):
  common = ("--config.train.steps=30", "--config.train.log_every=1",
            "--config.train.eval_every=30", "--config.train.checkpoint_every=1000")
  one = run_cli(tiny_args(tmp_path / "one", *common))
  eight = run_cli(tiny_args(tmp_path / "eight", *common, "--config.mesh.data=2",
                            "--config.mesh.fsdp=2", "--config.mesh.tensor=2"), devices=8)
  assert one.returncode == 0, one.stderr
  assert eight.returncode == 0, eight.stderr
  rows_1 = [r for r in read_jsonl(tmp_path / "one" / "metrics.jsonl") if r["split"] == "train"]
  rows_8 = [r for r in read_jsonl(tmp_path / "eight" / "metrics.jsonl") if r["split"] == "train"]
  for a, b in zip(rows_1[:5], rows_8[:5]):
    assert a["step"] == b["step"]
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a, b)
  summary_1 = json.loads((tmp_path / "one" / "summary.json").read_text())
  summary_8 = json.loads((tmp_path / "eight" / "summary.json").read_text())
  assert summary_8["devices"] == 8
  for key in ("final_train_loss", "final_eval_loss"):
    relative = abs(summary_1[key] - summary_8[key]) / summary_1[key]
    assert relative < 1e-4, (key, summary_1[key], summary_8[key])
