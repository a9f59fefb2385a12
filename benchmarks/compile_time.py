"""Compile seconds of the train step for 4, 16 and 32 layers, unrolled and with a scanned layer.

  python benchmarks/compile_time.py [--layers 4 16 32]

A Llama-style model (d_model 256, 4 heads, d_ff 1024, seq 256, batch 16, byte vocabulary); the
time is jit lowering + XLA compilation of the full train step (forward, backward, AdamW). Prints
one JSON line with both figures per depth and the ratio unrolled / scanned.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

from llmjax.config_base import base_config
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.data.batches import BATCH_KEYS
from llmjax.train.lm import lm_trainer


def compile_seconds(n_layers: int, scan: bool) -> float:
  config = base_config("compile_time")
  config.train.update(batch_size=16, seq_len=256)
  model = ModelConfig(vocab_size=264, d_model=256, n_layers=n_layers, n_heads=4, d_ff=1024,
                      scan_layers=scan)
  trainer = lm_trainer(model, config.train, config.optim, Parallel.from_config(config.mesh))
  batch = {k: jax.ShapeDtypeStruct((16, 256), jnp.int32) for k in BATCH_KEYS}
  start = time.perf_counter()
  trainer.lower_step(batch).compile()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--layers", type=int, nargs="+", default=[4, 16, 32])
  args = parser.parse_args()
  result = {"benchmark": "compile_time", "device": jax.devices()[0].device_kind}
  for n in args.layers:
    unrolled, scanned = compile_seconds(n, False), compile_seconds(n, True)
    result[f"layers_{n}"] = {"unrolled_s": round(unrolled, 2), "scanned_s": round(scanned, 2),
                             "ratio": round(unrolled / scanned, 2)}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
