"""Batched generation from a checkpoint (experiment `generate`).

  python -m llmjax.main --config configs/generate.py --workdir W \
      --config.checkpoint=hf:DIR --config.prompts=P.jsonl [--config.sampling.temperature=0.7]

`checkpoint`: hf:DIR (a Hugging Face directory: config.json, *.safetensors, tokenizer files), an
llmjax run directory (its latest checkpoint) or RUN/checkpoints/STEP. `prompts`: JSONL with
`prompt` (or chat `messages`) and an optional `id`; `--config.chat=True` renders plain prompts
as user messages through the model's chat template.
Writes W/generations.jsonl (id, sample, prompt, completion, tokens, logprob, token_logprobs,
finish_reason) and W/summary.json (tokens generated, seconds incl. compilation, tokens/s).
Sampling: temperature 0 is greedy; top_k 0, top_p 1, min_p 0 and repetition_penalty 1 are off;
`stop` is a tuple of strings, `stop_token_ids` adds to the tokenizer's EOS ids.
Runtime: model loading plus about 1.5 s of compilation per (batch, prompt-length bucket); then,
for example, 2,800 tokens/s at batch 16 for a 4-layer d_model-256 Llama with a 32k vocabulary
on 2 CPU cores (benchmarks/decode_throughput.py, measured 2026-11-29).
Expected: greedy completions identical to transformers' `generate` for the supported families
(tests/test_interop.py).
"""

import ml_collections

from llmjax.config_base import inference_config


def get_config() -> ml_collections.ConfigDict:
  config = inference_config("generate")
  config.sampling = ml_collections.ConfigDict({
      "temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
      "n": 1, "max_new_tokens": 64, "stop": (), "stop_token_ids": (), "seed": 0,
  })
  return config
