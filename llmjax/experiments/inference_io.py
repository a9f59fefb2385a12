"""What the `generate` and `score` experiments share: loading the model named by the config,
reading request rows, writing JSONL results atomically."""

import json
import math
import sys
from typing import Any, Iterable, Sequence

from llmjax import checks, runio
from llmjax.data.readers import read_jsonl_numbered
from llmjax.errors import UserError
from llmjax.weights import LoadedModel, load_model
from llmjax.parallel import Parallel


def check_inference_settings(config) -> None:
  """The batching and seed settings of `generate` and `score`, before any model loads."""
  checks.positive_ints(config, "", "batch_size", "length_bucket")
  checks.non_negative_ints(config, "", "seed")
  if "sampling" in config:
    checks.non_negative_ints(config.sampling, "sampling", "seed")
    checks.positive_ints(config.sampling, "sampling", "n", "max_new_tokens")


def load_for_inference(config) -> tuple[LoadedModel, Parallel]:
  if not config.checkpoint:
    raise UserError("config.checkpoint is required: hf:DIR, an llmjax run directory or "
                    "RUN/checkpoints/STEP")
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  loaded = load_model(config.checkpoint, parallel, config.tokenizer, config.dtype)
  if loaded.tokenizer is None:
    raise UserError(f"checkpoint {config.checkpoint} comes with no tokenizer; set "
                    "config.tokenizer (byte, spm:PATH.model or hf:DIR)")
  return loaded, parallel


def read_requests(path: str, text_fields: tuple[str, ...]) -> list[dict[str, Any]]:
  """Rows of a JSONL file; each needs the `text_fields` as strings (or a `messages` list in
  place of `prompt`). Rows without an `id` get their 0-based row index. Each row also carries
  '_where' ('file:line', lines from 1) for error messages."""
  if not path:
    raise UserError("config.prompts is required: a JSONL file with one request per line")
  rows = []
  for i, (line, row) in enumerate(read_jsonl_numbered(path)):
    for field in text_fields:
      if field == "prompt" and isinstance(row.get("messages"), list):
        continue
      if not isinstance(row.get(field), str):
        raise UserError(f"{path}:{line}: field {field!r} must be a string"
                        + (" (or give 'messages')" if field == "prompt" else ""))
    row.setdefault("id", i)
    row["_where"] = f"{path}:{line}"
    rows.append(row)
  if not rows:
    raise UserError(f"{path}: no rows")
  return rows


def encode_prompt(tokenizer, row: dict[str, Any], chat: bool) -> list[int]:
  """A row's prompt tokens: its `messages`, or `prompt` as a user message when `chat`, through
  the chat template; else the plain prompt as the model's inputs are encoded."""
  if isinstance(row.get("messages"), list):
    return tokenizer.encode_chat(row["messages"])
  if chat:
    return tokenizer.encode_chat([{"role": "user", "content": row["prompt"]}])
  return tokenizer.encode_prompt(row["prompt"])


def check_prompts(rows: Sequence[dict], prompts: Sequence[Sequence[int]], model_config,
                  extra_tokens: Sequence[int]) -> None:
  """Each encoded prompt is non-empty and, with learned positions, fits the model with its
  `extra_tokens` (completion or new tokens); else a UserError naming the file and line."""
  for row, prompt, extra in zip(rows, prompts, extra_tokens):
    if not prompt:
      raise UserError(f"{row['_where']}: the prompt encodes to no tokens; the first generated "
                      "or scored token needs a context (e.g. BOS)")
    if model_config.positions == "learned" and len(prompt) + extra > model_config.max_len:
      raise UserError(f"{row['_where']}: {len(prompt)} prompt tokens + {extra} more exceed the "
                      f"model's {model_config.max_len} learned positions")


def _finite_or_null(value: Any, count: list[int]) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    count[0] += 1
    return None
  if isinstance(value, list):
    return [_finite_or_null(v, count) for v in value]
  return value


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> int:
  """Writes the rows as JSON lines (atomically, process 0), non-finite numbers (a NaN
  log-prob) as null; returns how many were, and warns on stderr when any were."""
  count = [0]
  if not runio.is_writer():
    return 0
  with runio.atomic_output(path) as tmp, open(tmp, "w") as f:
    for row in rows:
      row = {k: _finite_or_null(v, count) for k, v in row.items()}
      f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
  if count[0]:
    print(f"warning: {count[0]} values in {path} were not finite (NaN or inf log-probs) and "
          "are written as null", file=sys.stderr)
  return count[0]
