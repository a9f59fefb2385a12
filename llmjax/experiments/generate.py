"""Batched generation from a checkpoint (experiment `generate`): one JSONL row per completion in
W/generations.jsonl, throughput in the summary."""

import collections
import os

from llmjax.experiments.inference_io import (check_inference_settings, check_prompts,
                                             encode_prompt, load_for_inference, read_requests,
                                             write_jsonl)
from llmjax.infer import Generator, SamplingParams, generate_text


def sampling_params(config) -> SamplingParams:
  s = config.sampling
  return SamplingParams(temperature=float(s.temperature), top_k=int(s.top_k),
                        top_p=float(s.top_p), min_p=float(s.min_p),
                        repetition_penalty=float(s.repetition_penalty),
                        max_new_tokens=int(s.max_new_tokens), n=int(s.n))


def run(config, workdir: str) -> dict:
  check_inference_settings(config)
  rows = read_requests(config.prompts, ("prompt",))
  sampling = sampling_params(config)
  loaded, parallel = load_for_inference(config)
  tokenizer = loaded.tokenizer
  prompts = [encode_prompt(tokenizer, row, config.chat) for row in rows]
  check_prompts(rows, prompts, loaded.config, [sampling.max_new_tokens - 1] * len(rows))
  generator = Generator(loaded.config, parallel, config.batch_size, config.length_bucket,
                        tokenizer.pad_id)
  stop_ids = sorted(set(tokenizer.stop_ids) | set(config.sampling.stop_token_ids))
  results, seconds = generate_text(generator, loaded.params, tokenizer, prompts, sampling,
                                   seed=config.sampling.seed, stop_token_ids=stop_ids,
                                   stop_strings=tuple(config.sampling.stop),
                                   show_progress=True)

  def records():
    for row, completions in zip(rows, results):
      for sample, c in enumerate(completions):
        yield {"id": row["id"], "sample": sample,
               "prompt": row.get("prompt", row.get("messages")), "completion": c.text,
               "tokens": c.tokens, "logprob": c.logprob, "token_logprobs": c.logprobs,
               "finish_reason": c.finish_reason}

  nonfinite = write_jsonl(os.path.join(workdir, "generations.jsonl"), records())
  generated = sum(len(c.tokens) for cs in results for c in cs)
  reasons = collections.Counter(c.finish_reason for cs in results for c in cs)
  return {"model": loaded.source, "prompts": len(rows),
          "completions": sum(len(cs) for cs in results), "tokens_generated": generated,
          "seconds": seconds, "tokens_per_s": generated / seconds if seconds else 0.0,
          "finish_reasons": dict(reasons), "nonfinite_logprobs": nonfinite}
