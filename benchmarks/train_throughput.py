"""Training tokens/s: llmjax against plain PyTorch (eager, and torch.compile where it works).

  python benchmarks/train_throughput.py [--steps 30] [--warmup 5]

The same Llama-style model on both sides (d_model 256, 4 layers, 4 heads, d_ff 1024, SwiGLU,
RMSNorm, rope), sequence 256, batch 16, byte vocabulary, AdamW, a fixed random batch; timed over
`--steps` steps after `--warmup` (compilation excluded on both sides). Prints one JSON line.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from llmjax import hostenv  # noqa: E402
from llmjax.config_base import base_config  # noqa: E402
from llmjax.models import ModelConfig  # noqa: E402
from llmjax.parallel import Parallel  # noqa: E402
from llmjax.train.trainer import Trainer  # noqa: E402
import torch_llama  # noqa: E402

VOCAB, D, LAYERS, HEADS, D_FF, SEQ, BATCH = 259, 256, 4, 4, 1024, 256, 16


def batch_arrays(seed: int = 0) -> dict[str, np.ndarray]:
  tokens = np.random.default_rng(seed).integers(3, VOCAB, size=(BATCH, SEQ + 1), dtype=np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "loss_mask": np.ones((BATCH, SEQ), np.int32),
          "segment_ids": np.ones((BATCH, SEQ), np.int32),
          "positions": np.tile(np.arange(SEQ, dtype=np.int32), (BATCH, 1))}


def llmjax_tokens_per_s(steps: int, warmup: int) -> float:
  config = base_config("throughput")
  config.train.update(batch_size=BATCH, seq_len=SEQ, steps=steps + warmup)
  config.optim.update(warmup_steps=0, clip_norm=0.0)
  model = ModelConfig(vocab_size=VOCAB, d_model=D, n_layers=LAYERS, n_heads=HEADS, d_ff=D_FF)
  trainer = Trainer(model, config.train, config.optim, Parallel.from_config(config.mesh))
  state = trainer.init_state(0)
  batch = trainer.to_device(batch_arrays())
  for _ in range(warmup):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  return steps * BATCH * SEQ / (time.perf_counter() - start)


def torch_tokens_per_s(steps: int, warmup: int, compile_model: bool) -> float:
  torch.manual_seed(0)
  model = torch_llama.LlamaStyle(VOCAB, D, LAYERS, HEADS, D_FF)
  optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                                weight_decay=0.1)
  forward = torch.compile(model) if compile_model else model
  arrays = batch_arrays()
  inputs = torch.as_tensor(arrays["inputs"], dtype=torch.long)
  targets = torch.as_tensor(arrays["targets"], dtype=torch.long)

  def step():
    logits = forward(inputs)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return steps * BATCH * SEQ / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=5)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  result = {"benchmark": "train_throughput", "device": jax.devices()[0].device_kind,
            "torch_version": torch.__version__}
  result["llmjax_tokens_per_s"] = round(llmjax_tokens_per_s(args.steps, args.warmup), 1)
  result["torch_eager_tokens_per_s"] = round(torch_tokens_per_s(args.steps, args.warmup, False),
                                             1)
  try:
    compiled = torch_tokens_per_s(args.steps, args.warmup, True)
    result["torch_compile_tokens_per_s"] = round(compiled, 1)
  except Exception as e:  # torch.compile needs a C++ toolchain and may fail on a host
    result["torch_compile_tokens_per_s"] = None
    result["torch_compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
  result["ratio_vs_eager"] = round(result["llmjax_tokens_per_s"] /
                                   result["torch_eager_tokens_per_s"], 3)
  if result["torch_compile_tokens_per_s"]:
    result["ratio_vs_compile"] = round(result["llmjax_tokens_per_s"] /
                                       result["torch_compile_tokens_per_s"], 3)
  print(json.dumps(result))


if __name__ == "__main__":
  hostenv.reexec_with_huge_page_malloc()  # as `python -m llmjax.main` runs: see llmjax/hostenv.py
  main()
