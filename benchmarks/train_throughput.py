"""Training tokens/s: llmjax against plain PyTorch (eager, and torch.compile where it works).

  python benchmarks/train_throughput.py [--steps 10] [--rounds 3] [--warmup 5]

The same Llama-style model on both sides (d_model 256, 4 layers, 4 heads, d_ff 1024, SwiGLU,
RMSNorm, rope), sequence 256, batch 16, byte vocabulary, AdamW, a fixed random batch. Each side
is compiled and warmed up first; then `--rounds` rounds time `--steps` steps of each side in
turn (after 2 untimed steps), and each figure is the median over rounds, so a slow spell of a
shared host does not land on one side only. Prints one JSON line, with the f32 rate of a
2048x2048 matmul on each side (XLA's, and torch's BLAS): the host's matmul speed sets much of
the ratio, and it differs between hosts (see docs/benchmarks.md).
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
from llmjax.train.flops import measured_cpu_matmul_flops  # noqa: E402
from llmjax.data.batches import lm_batch  # noqa: E402
from llmjax.train.lm import lm_trainer  # noqa: E402
import torch_llama  # noqa: E402

VOCAB, D, LAYERS, HEADS, D_FF, SEQ, BATCH = 259, 256, 4, 4, 1024, 256, 16


def batch_arrays(seed: int = 0) -> dict[str, np.ndarray]:
  return lm_batch(np.random.default_rng(seed).integers(3, VOCAB, size=(BATCH, SEQ + 1),
                                                       dtype=np.int32))


def llmjax_runner(warmup: int):
  """Returns run(steps) -> seconds for `steps` llmjax train steps, compiled and warmed up."""
  config = base_config("throughput")
  config.train.update(batch_size=BATCH, seq_len=SEQ, steps=10**6)
  config.optim.update(warmup_steps=0, clip_norm=0.0)
  model = ModelConfig(vocab_size=VOCAB, d_model=D, n_layers=LAYERS, n_heads=HEADS, d_ff=D_FF)
  trainer = lm_trainer(model, config.train, config.optim, Parallel.from_config(config.mesh))
  state = trainer.init_state(0)
  batch = trainer.to_device(batch_arrays())

  def run(steps: int) -> float:
    nonlocal state
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = trainer.train_step(state, batch)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  run(warmup)
  return run


def torch_runner(warmup: int, compile_model: bool):
  """Returns run(steps) -> seconds for `steps` PyTorch train steps, warmed up."""
  torch.manual_seed(0)
  model = torch_llama.LlamaStyle(VOCAB, D, LAYERS, HEADS, D_FF)
  optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                                weight_decay=0.1)
  forward = torch.compile(model) if compile_model else model
  arrays = batch_arrays()
  inputs = torch.as_tensor(arrays["inputs"], dtype=torch.long)
  targets = torch.as_tensor(arrays["targets"], dtype=torch.long)

  def run(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      logits = forward(inputs)
      loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
    return time.perf_counter() - start

  run(warmup)
  return run


def torch_matmul_flops(size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of the fastest of `repeats` [size, size] f32 matmuls through torch."""
  a = torch.randn(size, size)
  a @ a
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=5)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  result = {"benchmark": "train_throughput", "device": jax.devices()[0].device_kind,
            "torch_version": torch.__version__, "steps_per_round": args.steps,
            "rounds": args.rounds}
  runners = {"llmjax": llmjax_runner(args.warmup),
             "torch_eager": torch_runner(args.warmup, compile_model=False)}
  try:
    runners["torch_compile"] = torch_runner(args.warmup, compile_model=True)
  except Exception as e:  # torch.compile needs a C++ toolchain and may fail on a host
    result["torch_compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
  rates = {name: [] for name in runners}
  for _ in range(args.rounds):
    for name, run in runners.items():
      run(2)  # untimed: the first steps after the other side has run are slower on both sides
      rates[name].append(args.steps * BATCH * SEQ / run(args.steps))
  for name in ("llmjax", "torch_eager", "torch_compile"):
    result[f"{name}_tokens_per_s"] = (round(float(np.median(rates[name])), 1) if name in rates
                                      else None)
  result["ratio_vs_eager"] = round(result["llmjax_tokens_per_s"] /
                                   result["torch_eager_tokens_per_s"], 3)
  if result["torch_compile_tokens_per_s"]:
    result["ratio_vs_compile"] = round(result["llmjax_tokens_per_s"] /
                                       result["torch_compile_tokens_per_s"], 3)
  result["xla_matmul_gflops"] = round(measured_cpu_matmul_flops(2048, 5) / 1e9, 1)
  result["torch_matmul_gflops"] = round(torch_matmul_flops(2048, 5) / 1e9, 1)
  print(json.dumps(result))


if __name__ == "__main__":
  hostenv.reexec_with_huge_page_malloc()  # as `python -m llmjax.main` runs: see llmjax/hostenv.py
  main()
