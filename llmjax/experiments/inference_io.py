"""What the `generate` and `score` experiments share: loading the model named by the config,
reading request rows, writing JSONL results atomically."""

import json
from typing import Any, Iterable

from llmjax import runio
from llmjax.data.readers import read_jsonl
from llmjax.errors import UserError
from llmjax.weights import LoadedModel, load_model
from llmjax.parallel import Parallel


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
  place of `prompt`). Rows without an `id` get their 0-based line index."""
  if not path:
    raise UserError("config.prompts is required: a JSONL file with one request per line")
  rows = []
  for i, row in enumerate(read_jsonl(path)):
    for field in text_fields:
      if field == "prompt" and isinstance(row.get("messages"), list):
        continue
      if not isinstance(row.get(field), str):
        raise UserError(f"{path}: row {i + 1}: field {field!r} must be a string"
                        + (" (or give 'messages')" if field == "prompt" else ""))
    row.setdefault("id", i)
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


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> None:
  if not runio.is_writer():
    return
  with runio.atomic_output(path) as tmp, open(tmp, "w") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
