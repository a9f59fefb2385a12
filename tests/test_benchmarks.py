"""The GPU benchmark's batch search, run on CPU at toy size: a GPU session's few minutes should
not be the first time it runs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, xla_flags


@pytest.mark.slow
def test_mfu_benchmark_skips_batches_that_do_not_fit_and_measures_the_next():
  # Batch 8 of this model needs ~0.05 GB by XLA's memory analysis, batch 4 ~0.03 GB.
  args = ["--config", "configs/pretrain.py:llama_1b", "--config.model.vocab_size=1024",
          "--config.model.d_model=128", "--config.model.n_heads=4", "--config.model.n_kv_heads=2",
          "--config.model.d_head=32", "--config.model.d_ff=256", "--config.model.n_layers=1",
          "--config.train.seq_len=256", "--config.train.loss_chunk_len=64", "--batches", "4", "8",
          "--remat", "none", "--steps", "1", "--memory_gb", "0.04"]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1),
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


@pytest.mark.slow
def test_the_torch_grokking_peer_computes_llmjax_s_function():
  """grokking_speed compares like with like: from the same weights, the PyTorch peer's logits
  (every position, or the last one only) equal llmjax's answer logits."""
  import flax.linen
  import jax
  import numpy as np
  import pytest

  torch = pytest.importorskip("torch")
  sys.path.insert(0, str(REPO / "benchmarks"))
  import torch_grokking
  from llmjax.experiments.grokking.algorithmic import algebraic_task
  from llmjax.experiments.grokking.experiment import answer_logits
  from llmjax.main import load_config_file
  from llmjax.models import Decoder, ModelConfig

  task = algebraic_task("x+y", 7)
  values = load_config_file("configs/grokking.py").model.to_dict()
  values.update(vocab_size=task.vocab_size, max_len=3, init_std=0.3)  # far from uniform
  model = Decoder(ModelConfig.from_dict(values))
  inputs = jax.numpy.asarray(task.inputs_NxT)
  params = flax.linen.unbox(model.init(jax.random.PRNGKey(3), inputs[:1])["params"])
  expected = np.asarray(answer_logits(model, params, inputs))
  peer = torch_grokking.GrokTransformer(task.vocab_size, 3)
  torch_grokking.load_llmjax_params(peer, jax.device_get(params))
  with torch.no_grad():
    for last_only in (False, True):
      got = peer(torch.as_tensor(task.inputs_NxT, dtype=torch.long), last_only).numpy()
      np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  assert np.abs(expected).max() > 1.0  # logits that a wrong wiring would not match by chance
