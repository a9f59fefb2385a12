"""Prompt/completion examples (SFT) and preference pairs (DPO), read from JSONL, rendered and
tokenized the same way, with every truncation counted.

Rows (one JSON object a line):
  SFT    {"prompt": str, "completion": str}            or {"messages": [..., assistant turn]}
  pairs  {"prompt": str, "chosen": str, "rejected": str}
         or chat: {"prompt": [messages], "chosen": [assistant messages], "rejected": [...]}
Plain prompts are encoded as the model's inputs are (`Tokenizer.encode_prompt`: BOS when the
tokenizer adds one) and completions end with EOS. Chat rows are rendered through the tokenizer's
chat template: the prompt with the generation prompt, the completion as what the template adds
for the assistant turn(s) after it (end-of-turn tokens included, nothing added).

A sequence is prompt + completion, at most `max_tokens` (the model sees max_tokens - 1 inputs):
a longer one loses the start of its prompt (at least one prompt token stays), then the end of
its completion; `truncated` counts them, and a row whose completion is empty is an error naming
its file and line. A pair whose chosen and rejected are the same tokens (as written, or once cut
to max_tokens) teaches nothing (its DPO loss is ln 2 whatever the model): it is dropped and
counted in `identical`, and a file of nothing else is an error.
"""

import dataclasses
from typing import Any, Sequence

import numpy as np

from llmjax.data.readers import read_jsonl_numbered
from llmjax.data.tokenizers import Tokenizer
from llmjax.errors import DataError, UserError


@dataclasses.dataclass
class Examples:
  """Tokenized prompt/completion sequences; `completions[k][i]` is the k-th completion of
  example i (one for SFT, chosen and rejected for pairs)."""

  prompts: list[list[int]]
  completions: list[list[list[int]]]
  where: list[str]
  truncated: int = 0
  identical: int = 0  # pairs dropped because chosen == rejected (after the cut)

  def __len__(self) -> int:
    return len(self.prompts)


def _is_messages(value: Any) -> bool:
  return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def encode_example(tokenizer: Tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
  """(prompt ids, completion ids) of a plain (str, str) or chat (messages, messages) example."""
  if isinstance(prompt, str) and isinstance(completion, str):
    return tokenizer.encode_prompt(prompt), tokenizer.encode(completion, add_eos=True)
  prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
  full_text = tokenizer.apply_chat_template(prompt + completion, add_generation_prompt=False)
  if not full_text.startswith(prompt_text):
    raise UserError("the chat template renders the conversation without its generation prompt "
                    "as a prefix; the completion cannot be separated from the prompt")
  return (tokenizer.encode_text(prompt_text),
          tokenizer.encode_text(full_text[len(prompt_text):]))


def _fit(prompt: list[int], completions: list[list[int]], max_tokens: int):
  """The sequences (one shared prompt, each completion after it) cut to max_tokens: the
  prompt's start first (keeping one token), then each too-long completion's end. Returns
  (prompt, completions, how many sequences were cut)."""
  excess = len(prompt) + max(map(len, completions)) - max_tokens
  if excess <= 0:
    return prompt, completions, 0
  prompt = prompt[min(excess, len(prompt) - 1):]  # every sequence of the example loses it
  room = max_tokens - len(prompt)
  return prompt, [c[:room] for c in completions], len(completions)


def read_examples(path: str, tokenizer: Tokenizer, max_tokens: int,
                  completion_fields: Sequence[str]) -> Examples:
  """Reads and tokenizes `path`: SFT rows (completion_fields ('completion',)) or pairs
  (('chosen', 'rejected')); see the module docstring."""
  out = Examples([], [[] for _ in completion_fields], [])
  for line, row in read_jsonl_numbered(path):
    where = f"{path}:{line}"
    if "messages" in row and completion_fields == ("completion",):
      messages = row["messages"]
      if not _is_messages(messages) or not messages or messages[-1].get("role") != "assistant":
        raise DataError(f"{where}: 'messages' must be a list of messages ending with the "
                        "assistant's turn")
      prompt, completions = messages[:-1], [messages[-1:]]
    else:
      prompt = row.get("prompt")
      completions = [row.get(field) for field in completion_fields]
      chat = _is_messages(prompt)
      for field, value in zip(("prompt", *completion_fields), (prompt, *completions)):
        if not (_is_messages(value) if chat else isinstance(value, str)):
          kind = "a list of messages, as 'prompt' is" if chat else "a string"
          raise DataError(f"{where}: field {field!r} must be {kind}")
    encoded = []
    for completion in completions:
      try:
        prompt_ids, completion_ids = encode_example(tokenizer, prompt, completion)
      except UserError as e:
        raise DataError(f"{where}: {e}") from None
      if not prompt_ids or not completion_ids:
        raise DataError(f"{where}: the {'prompt' if not prompt_ids else 'completion'} encodes "
                        "to no tokens")
      encoded.append(completion_ids)
    prompt_ids, encoded, cut = _fit(prompt_ids, encoded, max_tokens)
    if len(encoded) == 2 and encoded[0] == encoded[1]:
      out.identical += 1
      continue
    out.truncated += cut
    out.prompts.append(prompt_ids)
    for k, completion_ids in enumerate(encoded):
      out.completions[k].append(completion_ids)
    out.where.append(where)
  if not out.prompts:
    if out.identical:
      raise DataError(f"{path}: all {out.identical} pairs have the same chosen and rejected "
                      f"tokens (as written or once cut to {max_tokens} tokens): nothing to "
                      "prefer")
    raise DataError(f"{path}: no rows")
  return out


def sequence_arrays(prompts: Sequence[list[int]], completions: Sequence[list[int]],
                    length: int, pad_id: int) -> dict[str, np.ndarray]:
  """The LM batch (llmjax.data.batches) of prompt + completion rows, right-padded to `length`
  inputs, the loss on the completion's tokens only."""
  B = len(prompts)
  arrays = {"inputs": np.full((B, length), pad_id, np.int32),
            "targets": np.full((B, length), pad_id, np.int32),
            "loss_mask": np.zeros((B, length), np.int32),
            "segment_ids": np.zeros((B, length), np.int32),
            "positions": np.zeros((B, length), np.int32)}
  for b, (prompt, completion) in enumerate(zip(prompts, completions)):
    tokens = list(prompt) + list(completion)
    n = len(tokens) - 1
    arrays["inputs"][b, :n] = tokens[:-1]
    arrays["targets"][b, :n] = tokens[1:]
    arrays["loss_mask"][b, len(prompt) - 1:n] = 1
    arrays["segment_ids"][b, :n] = 1
    arrays["positions"][b, :n] = np.arange(n)
  return arrays


def pair_batch(pairs: Examples, indices: Sequence[int], length: int,
               pad_id: int) -> dict[str, np.ndarray]:
  """Chosen and rejected of the pairs at `indices`, side by side in one batch: the LM batch
  keys prefixed 'chosen_' and 'rejected_', and 'pair_index' [B]."""
  prompts = [pairs.prompts[i] for i in indices]
  batch = {"pair_index": np.asarray(indices, np.int32)}
  for k, side in enumerate(("chosen", "rejected")):
    arrays = sequence_arrays(prompts, [pairs.completions[k][i] for i in indices], length, pad_id)
    batch.update({f"{side}_{key}": value for key, value in arrays.items()})
  return batch
