"""Model FLOPs utilisation of a pretraining config: step time, tokens/s and MFU at the largest
batch that fits, for each rematerialisation policy.

  python benchmarks/mfu.py [--config configs/pretrain.py:llama_1b] [--batches 32 16 8 4]
      [--remat none dots_saveable full] [--steps 10] [--max_minutes 8] [--memory_gb G]
      [--config.KEY=VALUE ...]

Model, optimizer, sequence length and loss chunking come from the config (default: the
llama_1b preset: bf16 compute over f32 weights, sequence 2048, dot_product attention, i.e. cuDNN
flash attention on GPUs, and the loss's logits 512 positions at a time). For each remat policy
the batch sizes are tried from the largest down: a size is skipped when XLA's memory analysis of
the compiled step exceeds the device's memory (or `--memory_gb`; before anything is allocated)
or when running it reports out-of-memory, and the first size that runs is measured: 2 warm-up
steps, then `--steps` timed steps on a fixed batch of full-length random documents (one per row,
so attention takes its causal fast path). No new candidate starts after `--max_minutes`.

MFU = tokens/s * training FLOPs per token (6 per matmul parameter plus attention:
ModelConfig.flops_per_token) / (peak FLOP/s per device * devices); the peak comes from
llmjax/train/flops.py (989 TFLOP/s dense bf16 for an H100 or H200; measured on CPU). The peer
figure is that peak itself. Prints one JSON line; progress goes to stderr.
"""

import argparse
import gc
import json
import os
import sys
import time

# JAX takes 75% of a GPU's memory by default; the batch search wants nearly all of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from llmjax import hostenv  # noqa: E402
from llmjax.errors import UserError  # noqa: E402
from llmjax.main import parse_args  # noqa: E402
from llmjax.models import ModelConfig  # noqa: E402
from llmjax.parallel import Parallel  # noqa: E402
from llmjax.train.flops import peak_flops_per_device  # noqa: E402
from llmjax.data.batches import BATCH_KEYS, lm_batch  # noqa: E402
from llmjax.train.lm import lm_trainer  # noqa: E402


def log(message: str) -> None:
  print(f"[mfu] {message}", file=sys.stderr, flush=True)


def device_memory_bytes(memory_gb: float | None) -> int | None:
  if memory_gb:
    return int(memory_gb * 2**30)
  stats = jax.local_devices()[0].memory_stats()  # None on CPU
  return stats.get("bytes_limit") if stats else None


def needed_bytes(compiled) -> int | None:
  """Peak device memory of one call of a compiled step, from XLA's memory analysis."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


def is_out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def measure(config, model_config: ModelConfig, batch: int, steps: int, peak_flops: float,
            memory_gb: float | None) -> dict:
  """Compiles and times the train step at one batch size; the result's 'status' is 'ok',
  'too_big' (by the memory analysis) or 'oom' (at run time)."""
  train = config.train
  train.batch_size = batch
  trainer = lm_trainer(model_config, train, config.optim,
                    Parallel.from_config(config.mesh, config.sharding_rules))
  row = {"remat": model_config.remat, "batch": batch}
  abstract_batch = {k: jax.ShapeDtypeStruct((batch, train.seq_len), jnp.int32)
                    for k in BATCH_KEYS}
  start = time.perf_counter()
  try:
    compiled = trainer.lower_step(abstract_batch).compile()
  except Exception as e:  # noqa: BLE001 - XLA reports an over-large program in several ways
    if not is_out_of_memory(e):
      raise
    return {**row, "status": "too_big", "detail": str(e).splitlines()[0][:200]}
  row["compile_s"] = round(time.perf_counter() - start, 1)
  needed, available = needed_bytes(compiled), device_memory_bytes(memory_gb)
  if needed is not None:
    row["memory_gb"] = round(needed / 2**30, 3)
  if needed and available and needed > available:
    return {**row, "status": "too_big", "device_memory_gb": round(available / 2**30, 2)}
  state = None
  try:
    state = trainer.init_state(0)
    rows = np.random.default_rng(0).integers(0, model_config.vocab_size,
                                             (batch, train.seq_len + 1), dtype=np.int32)
    data = trainer.to_device(lm_batch(rows))
    for _ in range(2):
      state, metrics = compiled(state, data, None)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, data, None)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
  except Exception as e:  # noqa: BLE001
    if not is_out_of_memory(e):
      raise
    return {**row, "status": "oom", "detail": str(e).splitlines()[0][:200]}
  finally:
    del state
    gc.collect()
  tokens_per_s = batch * train.seq_len / seconds
  mfu = tokens_per_s * model_config.flops_per_token(train.seq_len) / peak_flops
  return {**row, "status": "ok", "step_time_s": round(seconds, 4),
          "tokens_per_s": round(tokens_per_s, 1), "mfu": round(mfu, 4),
          "final_loss": round(float(metrics["loss"]), 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/pretrain.py:llama_1b")
  parser.add_argument("--batches", type=int, nargs="+", default=[32, 16, 8, 4])
  parser.add_argument("--remat", nargs="+", default=["none", "dots_saveable", "full"])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--max_minutes", type=float, default=8.0)
  parser.add_argument("--memory_gb", type=float, help="device memory to fit in (default: the "
                      "device's own limit; none on CPU)")
  args, overrides = parser.parse_known_args()
  try:
    config, _, _ = parse_args(["--config", args.config, *overrides], require_workdir=False)
  except UserError as e:  # as `python -m llmjax.main` reports a bad config: one line, exit 2
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  config.train.grad_accum_steps = 1
  base_model = ModelConfig.from_dict(config.model.to_dict())
  peak = peak_flops_per_device(config.train.peak_flops_per_device)
  result = {"benchmark": "mfu", "config": args.config, "overrides": overrides,
            "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
            "jax_version": jax.__version__, "peak_flops_per_device": peak,
            "seq_len": config.train.seq_len, "loss_chunk_len": config.train.loss_chunk_len,
            "dtype": base_model.dtype,
            "attention_impl": base_model.attention_impl, "num_params": base_model.num_params(),
            "flops_per_token": base_model.flops_per_token(config.train.seq_len), "runs": []}
  deadline = time.perf_counter() + 60 * args.max_minutes
  for remat in args.remat:
    model_config = ModelConfig.from_dict({**config.model.to_dict(), "remat": remat})
    for batch in sorted(args.batches, reverse=True):
      if time.perf_counter() > deadline:
        log(f"--max_minutes {args.max_minutes} reached; remat={remat} batch={batch} not tried")
        break
      log(f"remat={remat} batch={batch}: compiling")
      row = measure(config, model_config, batch, args.steps, peak * jax.device_count(),
                    args.memory_gb)
      log(json.dumps(row))
      result["runs"].append(row)
      if row["status"] == "ok":
        break
  measured = [r for r in result["runs"] if r["status"] == "ok"]
  result["best"] = max(measured, key=lambda r: r["mfu"]) if measured else None
  print(json.dumps(result))


if __name__ == "__main__":
  hostenv.reexec_with_huge_page_malloc()  # as `python -m llmjax.main` runs (CPU)
  main()
