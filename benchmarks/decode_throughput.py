"""Greedy decoding tokens/s: llmjax's KV-cache generator against transformers' `generate`.

  python benchmarks/decode_throughput.py [--new_tokens 128] [--prompt_len 32] [--batches 1 16]

One tiny Llama-style checkpoint (d_model 256, 4 layers, 4 heads, d_ff 1024, vocab 32,000) is
made with transformers, saved, and imported into llmjax through `llmjax.interop.load_hf`, so
both sides run the same weights. Each batch size decodes `--new_tokens` tokens greedily from
random prompts (no EOS stop on either side), timed after a warm-up run (compilation excluded;
reported separately). Both sides must produce the same tokens. Prints one JSON line.
"""

import argparse
import json
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from llmjax.infer import Generator, SamplingParams
from llmjax.interop import load_hf

VOCAB, D, LAYERS, HEADS, D_FF = 32_000, 256, 4, 4, 1024


def make_checkpoint(directory: str) -> transformers.PreTrainedModel:
  torch.manual_seed(0)
  config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, intermediate_size=D_FF,
                                    initializer_range=0.1)
  model = transformers.LlamaForCausalLM(config).eval()
  model.save_pretrained(directory)
  model.generation_config.eos_token_id = None  # decode the full length, as llmjax does here
  return model


def transformers_run(model, prompts: np.ndarray, new_tokens: int) -> tuple[float, list]:
  ids = torch.tensor(prompts, dtype=torch.long)
  kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                pad_token_id=0)
  with torch.no_grad():
    model.generate(ids, **{**kwargs, "max_new_tokens": 4})  # warm-up
    start = time.perf_counter()
    out = model.generate(ids, **kwargs)
  return time.perf_counter() - start, out[:, prompts.shape[1]:].tolist()


def llmjax_run(generator: Generator, params, prompts: np.ndarray, new_tokens: int):
  sampling = SamplingParams(max_new_tokens=new_tokens)
  start = time.perf_counter()
  generator.generate_ids(params, prompts.tolist(), sampling)  # compiles this bucket
  compile_and_run = time.perf_counter() - start
  start = time.perf_counter()
  out = generator.generate_ids(params, prompts.tolist(), sampling)
  seconds = time.perf_counter() - start
  return seconds, [c[0].tokens for c in out], compile_and_run - seconds


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
  args = parser.parse_args()
  result = {"model": f"llama d{D} x{LAYERS} vocab {VOCAB}", "new_tokens": args.new_tokens,
            "prompt_len": args.prompt_len, "device": jax.devices()[0].device_kind,
            "torch_threads": torch.get_num_threads()}
  with tempfile.TemporaryDirectory() as directory:
    hf_model = make_checkpoint(directory)
    cfg, params, _ = load_hf(directory)
  for batch in args.batches:
    prompts = np.random.default_rng(batch).integers(3, VOCAB, (batch, args.prompt_len))
    generator = Generator(cfg, batch_size=batch, length_bucket=args.prompt_len)
    ours_s, ours_tokens, compile_s = llmjax_run(generator, params, prompts, args.new_tokens)
    theirs_s, theirs_tokens = transformers_run(hf_model, prompts, args.new_tokens)
    generated = batch * args.new_tokens
    result[f"batch_{batch}"] = {
        "llmjax_tokens_per_s": round(generated / ours_s, 1),
        "transformers_tokens_per_s": round(generated / theirs_s, 1),
        "ratio": round(theirs_s / ours_s, 2),
        "llmjax_compile_s": round(compile_s, 2),
        "same_tokens": ours_tokens == theirs_tokens,
    }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
