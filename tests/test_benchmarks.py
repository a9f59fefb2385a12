"""The GPU benchmark's batch search, run on CPU at toy size: a GPU session's few minutes should
not be the first time it runs."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_mfu_benchmark_skips_batches_that_do_not_fit_and_measures_the_next():
  # Batch 8 of this model needs ~0.05 GB by XLA's memory analysis, batch 4 ~0.03 GB.
  args = ["--config", "configs/pretrain.py:llama_1b", "--config.model.vocab_size=1024",
          "--config.model.d_model=128", "--config.model.n_heads=4", "--config.model.n_kv_heads=2",
          "--config.model.d_head=32", "--config.model.d_ff=256", "--config.model.n_layers=1",
          "--config.train.seq_len=256", "--config.train.loss_chunk_len=64", "--batches", "4", "8",
          "--remat", "none", "--steps", "1", "--memory_gb", "0.04"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=str(REPO))
  process = subprocess.run([sys.executable, "benchmarks/mfu.py", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
  assert process.returncode == 0, process.stderr[-2000:]
  result = json.loads(process.stdout.strip().splitlines()[-1])
  too_big, measured = result["runs"]
  assert (too_big["batch"], too_big["status"]) == (8, "too_big")
  assert too_big["memory_gb"] > 0.04 >= measured["memory_gb"]
  assert (measured["batch"], measured["status"]) == (4, "ok") and result["best"] == measured
  assert 0 < measured["mfu"] <= 1 and measured["final_loss"] > 0
  assert result["num_params"] > 0 and result["dtype"] == "bfloat16"
  assert result["attention_impl"] == "dot_product" and result["loss_chunk_len"] == 64


def test_mfu_benchmark_rejects_an_unknown_config_key_in_one_line():
  process = subprocess.run([sys.executable, "benchmarks/mfu.py", "--config.model.n_layerz=2"],
                           cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                           capture_output=True, text=True, timeout=120)
  assert process.returncode == 2 and process.stdout == ""
  assert process.stderr.strip().splitlines()[-1] == (
      "error: unknown config key 'model.n_layerz'; did you mean 'model.n_layers'?")
