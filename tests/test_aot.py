"""Ahead-of-time compilation for TPU topologies on this CPU host (llmjax.aot): programs compiled
by libtpu's compiler for a named slice, read back, and judged against hand-computed bounds."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, error_line
from llmjax.models import ModelConfig

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (the `tpu` extra; the `test` extra installs it on Linux)")

GiB = 1 << 30


def aot(*args, timeout=600):
  """`python -m llmjax.aot ARGS` in a process of its own (libtpu starts once per process):
  (exit code, the JSON rows by program, stderr)."""
  process = subprocess.run([sys.executable, "-m", "llmjax.aot", *map(str, args)], cwd=REPO,
                           env=dict(os.environ), capture_output=True, text=True,
                           timeout=timeout)
  rows = {}
  for line in process.stdout.splitlines():
    row = json.loads(line)
    rows[row["program"]] = row
  return process.returncode, rows, process.stderr


def tiny_model(**overrides):
  from configs.pretrain import get_config
  values = get_config("tiny").model.to_dict()
  values.update(overrides)
  return ModelConfig.from_dict(values)


@needs_libtpu
@pytest.mark.slow
def test_tiny_pretraining_on_a_v5e_slice_fits_with_the_bytes_and_flops_it_must_have():
  code, rows, err = aot("--config", "configs/pretrain.py:tiny", "--topology", "v5e:2x2")
  assert code == 0, err[-2000:]
  step, evaluation = rows["train_step"], rows["eval"]
  model = tiny_model()
  N, B, L = model.num_params(), 16, 128
  assert step["params"] == N and step["chips"] == 4 and step["topology"] == "v5e:2x2"
  assert step["fits"] and step["hbm_bytes"] == 16 * GiB
  # The default mesh is data parallel: every chip holds the float32 params, both Adam moments
  # and a quarter of the batch's five int32 [B, L] arrays, at the least.
  assert step["per_chip_bytes"] >= 3 * 4 * N + 5 * 4 * B * L // 4
  # XLA's FLOPs agree with the model's count (6 per matmul parameter per token + attention),
  # within what the elementwise work adds, and the forward pass is about a third of the step.
  assert step["model_flops"] == model.flops_per_token(L) * B * L
  assert 0.9 < step["flops"] / step["model_flops"] < 1.25
  assert 0.25 < evaluation["flops"] / step["flops"] < 0.45
  assert 0 < step["mfu_ceiling"] <= 1 and step["roofline_s"] > 0
  # Four micro-batches: the same work per step, counted through the loop (XLA counts its body
  # once: unscaled, a quarter).
  code, accumulated, err = aot("--config", "configs/pretrain.py:tiny", "--topology", "v5e:2x2",
                               "--config.train.grad_accum_steps=4")
  assert code == 0, err[-2000:]
  assert accumulated["train_step"]["flops"] == pytest.approx(step["flops"], rel=0.05)
  assert accumulated["eval"]["flops"] == pytest.approx(evaluation["flops"], rel=0.05)


@needs_libtpu
@pytest.mark.slow
def test_a_model_too_big_for_one_chip_exits_2_naming_the_train_step():
  # 5 layers of d_model 4096 and d_ff 16384: 1.22B params; 12 bytes each (float32 params and
  # two Adam moments) are 13.6 GiB, and the gradient another 4.5: over a v5e chip's 16 GiB.
  big = ["--config.model.d_model=4096", "--config.model.d_ff=16384", "--config.model.n_heads=32",
         "--config.model.n_kv_heads=8", "--config.model.n_layers=5"]
  N = tiny_model(d_model=4096, d_ff=16384, n_heads=32, n_kv_heads=8, n_layers=5).num_params()
  code, rows, err = aot("--config", "configs/pretrain.py:tiny", "--topology", "v5e:1x1", *big)
  assert code == 2
  line = err.strip().splitlines()[-1]
  assert line.startswith("error: program train_step needs ") and "a v5e chip has 16.00 GiB" in line
  assert set(rows) == {"train_step"}  # the first misfit ends the check
  # At the least the float32 params and both Adam moments (12 bytes each); the compiler's own
  # figure, over the chip's memory.
  assert rows["train_step"]["per_chip_bytes"] >= 12 * N
  assert rows["train_step"]["per_chip_bytes"] > 16 * GiB and not rows["train_step"]["fits"]


@needs_libtpu
@pytest.mark.slow
def test_dpo_from_a_config_json_alone_compiles_its_step_evaluation_and_reference_pass(tmp_path):
  hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}
  (tmp_path / "config.json").write_text(json.dumps(hf))  # no weights, no tokenizer
  code, rows, err = aot("--config", "configs/dpo.py:hf", "--topology", "v5p:2x2x1",
                        f"--config.init=hf:{tmp_path}")
  assert code == 0, err[-2000:]
  assert set(rows) == {"train_step", "eval", "reference_logprobs"}
  assert all(row["fits"] and row["chips"] == 4 for row in rows.values())
  # 64 pairs of 1024 tokens in 8 micro-batches: the reference pass is the evaluation's forward
  # pass over both sides of every pair, and the step about three of them.
  assert rows["reference_logprobs"]["flops"] == pytest.approx(rows["eval"]["flops"], rel=0.1)
  assert 2.5 < rows["train_step"]["flops"] / rows["eval"]["flops"] < 3.6


def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch):
  from llmjax.aot.__main__ import main
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  cases = [
      (["--config", "configs/pretrain.py:tiny"], "--topology is required"),
      (["--config", "configs/pretrain.py:tiny", "--topology", "v9x:2x2"],
       "unknown TPU generation 'v9x'"),
      (["--config", "configs/pretrain.py:tiny", "--topology", "v5p:2x2"],
       "a v5p slice is named v5p:AxBxC"),
      (["--config", "configs/pretrain.py:tiny", "--topology", "v5e"], "expected GENERATION:AxB"),
      (["--config", "configs/pretrain.py:tiny", "--topology", "v5e:2x2",
        "--config.train.batch_sise=4"], "unknown config key 'train.batch_sise'"),
  ]
  for argv, expected in cases:
    assert main(argv) == 2
    assert expected in error_line(capsys), argv


def test_an_experiment_without_programs_is_named(capsys, monkeypatch):
  # refused before libtpu is started (this process never loads it)
  from llmjax.aot.__main__ import main
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert main(["--config", "configs/grokking.py", "--topology", "v5e:1x1"]) == 2
  assert "experiment 'grokking' describes no programs" in error_line(capsys)


def test_gcloud_accelerator_types_name_their_default_slices():
  from llmjax.aot.topology import topology_name
  cases = {"v5litepod-1": "v5e:1x1", "v5litepod-8": "v5e:2x4", "v5litepod-256": "v5e:16x16",
           "v6e-16": "v6e:4x4", "v4-8": "v4:2x2x1", "v4-32": "v4:2x2x4", "v4-128": "v4:4x4x4",
           "v5p-64": "v5p:2x4x4", "v5e:2x4": "v5e:2x4"}
  assert {name: topology_name(name) for name in cases} == cases
  from llmjax.errors import UserError
  with pytest.raises(UserError, match="12 is not a slice size of v4"):
    topology_name("v4-12")
