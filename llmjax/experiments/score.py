"""Log-probabilities of given completions (experiment `score`): W/scores.jsonl holds, per row,
the completion's total and per-token log-probs under its prompt."""

import math
import os
import time

from llmjax.experiments.inference_io import (check_inference_settings, check_prompts,
                                             encode_prompt, load_for_inference, read_requests,
                                             write_jsonl)
from llmjax.infer import Scorer


def run(config, workdir: str) -> dict:
  check_inference_settings(config)
  rows = read_requests(config.prompts, ("prompt", "completion"))
  loaded, parallel = load_for_inference(config)
  tokenizer = loaded.tokenizer
  pairs = [(encode_prompt(tokenizer, row, config.chat), tokenizer.encode(row["completion"]))
           for row in rows]
  check_prompts(rows, [p for p, _ in pairs], loaded.config, [len(c) for _, c in pairs])
  scorer = Scorer(loaded.config, parallel, config.batch_size, config.length_bucket,
                  tokenizer.pad_id)
  started = time.perf_counter()
  scores = scorer.score_ids(loaded.params, pairs, show_progress=True)
  seconds = time.perf_counter() - started
  nonfinite = write_jsonl(os.path.join(workdir, "scores.jsonl"), (
      {"id": row["id"], "prompt": row.get("prompt", row.get("messages")),
       "completion": row["completion"], "logprob": s.logprob, "num_tokens": len(pair[1]),
       "token_logprobs": s.token_logprobs}
      for row, pair, s in zip(rows, pairs, scores)))
  tokens = sum(len(p) + len(c) for p, c in pairs)
  return {"model": loaded.source, "rows": len(rows), "seconds": seconds,
          "tokens_per_s": tokens / seconds if seconds else 0.0,
          "mean_logprob": _finite_mean([s.logprob for s in scores]),
          "nonfinite_logprobs": nonfinite}


def _finite_mean(values) -> float:
  """The mean of the finite values (a NaN log-prob is counted in nonfinite_logprobs)."""
  finite = [v for v in values if math.isfinite(v)]
  return sum(finite) / len(finite) if finite else float("nan")
