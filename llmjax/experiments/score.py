"""Log-probabilities of given completions (experiment `score`): W/scores.jsonl holds, per row,
the completion's total and per-token log-probs under its prompt."""

import os
import time

from llmjax.experiments.inference_io import (encode_prompt, load_for_inference, read_requests,
                                             write_jsonl)
from llmjax.infer import Scorer


def run(config, workdir: str) -> dict:
  rows = read_requests(config.prompts, ("prompt", "completion"))
  loaded, parallel = load_for_inference(config)
  tokenizer = loaded.tokenizer
  pairs = [(encode_prompt(tokenizer, row, config.chat), tokenizer.encode(row["completion"]))
           for row in rows]
  scorer = Scorer(loaded.config, parallel, config.batch_size, config.length_bucket,
                  tokenizer.pad_id)
  started = time.perf_counter()
  scores = scorer.score_ids(loaded.params, pairs, show_progress=True)
  seconds = time.perf_counter() - started
  write_jsonl(os.path.join(workdir, "scores.jsonl"), (
      {"id": row["id"], "prompt": row.get("prompt", row.get("messages")),
       "completion": row["completion"], "logprob": s.logprob, "num_tokens": len(pair[1]),
       "token_logprobs": s.token_logprobs}
      for row, pair, s in zip(rows, pairs, scores)))
  tokens = sum(len(p) + len(c) for p, c in pairs)
  return {"model": loaded.source, "rows": len(rows), "seconds": seconds,
          "tokens_per_s": tokens / seconds if seconds else 0.0,
          "mean_logprob": sum(s.logprob for s in scores) / len(scores)}
