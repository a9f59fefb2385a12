"""The OpenAI-compatible server against in-process generation, on the same model and prompts.

  python benchmarks/serve_throughput.py [--requests 32] [--max_tokens 32] [--d_model 256]

A byte-level decoder (random weights, `--layers` x `--d_model`) served by llmjax.serve's app on
127.0.0.1 (uvicorn in a thread); clients send /v1/completions with httpx, 1 at a time and 16 at
a time (each request its own seed); the peer is one in-process `generate_text` call over the
same prompts (batch 16). Everything is compiled by a warm-up pass first. Prints one JSON line:
requests/s and generated tokens/s of each, and the server's share of in-process throughput.
"""

import argparse
import asyncio
import json
import threading
import time

import jax
import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--requests", type=int, default=32)
  parser.add_argument("--max_tokens", type=int, default=32)
  parser.add_argument("--d_model", type=int, default=256)
  parser.add_argument("--layers", type=int, default=4)
  args = parser.parse_args()

  import flax.linen as nn
  import httpx
  import uvicorn

  from llmjax.data.tokenizers import load_tokenizer
  from llmjax.infer import Generator, SamplingParams, generate_text
  from llmjax.models import Decoder, ModelConfig
  from llmjax.parallel import Parallel
  from llmjax.serving.app import ModelServer
  from llmjax.weights import LoadedModel

  config = ModelConfig(vocab_size=264, d_model=args.d_model, n_layers=args.layers, n_heads=8,
                       n_kv_heads=4, d_ff=4 * args.d_model, max_len=1024)
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(0),
                                         np.zeros((1, 8), np.int32))["params"])
  tokenizer = load_tokenizer("byte")
  parallel = Parallel.from_config({"data": -1})
  loaded = LoadedModel(config, params, tokenizer, "random")
  prompts = [f"request {i}: the quick brown fox jumps over the lazy dog " * (1 + i % 3)
             for i in range(args.requests)]
  server = ModelServer(loaded, parallel, "bench", batch_size=16, length_bucket=64,
                       max_wait_s=0.005, max_tokens=args.max_tokens)
  uv = uvicorn.Server(uvicorn.Config(server.app(), host="127.0.0.1", port=0, log_level="error"))
  threading.Thread(target=uv.run, daemon=True).start()
  while not uv.started:
    time.sleep(0.05)
  url = f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}/v1/completions"

  async def clients(concurrency: int) -> tuple[float, int]:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
      async def one(i):
        async with semaphore:
          r = await client.post(url, json={"model": "bench", "prompt": prompts[i],
                                           "max_tokens": args.max_tokens, "temperature": 1.0,
                                           "seed": i})
          return r.json()["usage"]["completion_tokens"]
      start = time.perf_counter()
      tokens = await asyncio.gather(*(one(i) for i in range(len(prompts))))
      return time.perf_counter() - start, sum(tokens)

  asyncio.run(clients(16))  # warm-up: compiles every batch shape the runs below meet
  asyncio.run(clients(1))
  served = {}
  for concurrency in (1, 16):
    seconds, tokens = asyncio.run(clients(concurrency))
    served[concurrency] = {"requests_per_s": round(len(prompts) / seconds, 2),
                           "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 2)}

  generator = Generator(config, parallel, 16, 64, tokenizer.pad_id)
  ids = [tokenizer.encode_prompt(p) for p in prompts]
  sampling = SamplingParams(temperature=1.0, max_new_tokens=args.max_tokens)
  generate_text(generator, params, tokenizer, ids, sampling, stop_token_ids=tokenizer.stop_ids,
                prompt_seeds=list(range(len(ids))))
  results, seconds = generate_text(generator, params, tokenizer, ids, sampling,
                                   stop_token_ids=tokenizer.stop_ids,
                                   prompt_seeds=list(range(len(ids))))
  tokens = sum(len(c[0].tokens) for c in results)
  in_process = {"requests_per_s": round(len(ids) / seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 2)}
  uv.should_exit = True
  print(json.dumps({
      "benchmark": "serve_throughput", "requests": len(prompts), "max_tokens": args.max_tokens,
      "model": f"{args.layers} x {args.d_model}, {config.num_params()} params",
      "server_1_client": served[1], "server_16_clients": served[16], "in_process": in_process,
      "server_16_share_of_in_process": round(served[16]["tokens_per_s"]
                                             / in_process["tokens_per_s"], 3)}))


if __name__ == "__main__":
  main()
