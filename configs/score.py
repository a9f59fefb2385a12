"""Log-probabilities of completions under prompts (experiment `score`).

  python -m llmjax.main --config configs/score.py --workdir W \
      --config.checkpoint=hf:DIR --config.prompts=ROWS.jsonl

`prompts`: JSONL with `prompt` (or chat `messages`), `completion` and an optional `id`. The
completion is tokenized on its own (no specials) after the prompt's tokens; only its tokens are
scored. Writes W/scores.jsonl (id, prompt, completion, logprob, num_tokens, token_logprobs).
Runtime: one forward pass per batch of rows plus one compilation per length bucket.
Expected: log-probs equal to transformers' log-softmax of the same tokens within 1e-4
(tests/test_interop.py), and to the log-probs `generate` reports for its own completions.
"""

import ml_collections

from llmjax.config_base import inference_config


def get_config() -> ml_collections.ConfigDict:
  return inference_config("score")
