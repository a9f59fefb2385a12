"""The language-model batch contract: what the data pipelines produce and the LM objective reads.

A batch is a dict of [B, L] int32 arrays:
  inputs       token ids fed to the model
  targets      the next token of each input
  loss_mask    1 where the target counts in the loss (0 on padding, prompts, document joins)
  segment_ids  document number of each token within its row (0 = padding)
  positions    position of each token within its document
"""

import numpy as np

BATCH_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def lm_batch(rows: np.ndarray, num_inputs: int = 1) -> dict[str, np.ndarray]:
  """The batch dict of token rows [B, L + 1], one document per row: next-token targets, the
  loss on every position after the first `num_inputs` tokens (1: on all of them)."""
  B, length = rows.shape
  loss_mask = np.zeros((B, length - 1), np.int32)
  loss_mask[:, num_inputs - 1:] = 1
  return {"inputs": rows[:, :-1], "targets": rows[:, 1:], "loss_mask": loss_mask,
          "segment_ids": np.ones((B, length - 1), np.int32),
          "positions": np.broadcast_to(np.arange(length - 1, dtype=np.int32),
                                       (B, length - 1)).copy()}


def packed_lm_batch(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Packed rows of L + 1 tokens ({'tokens', 'loss_mask', 'tokens_segment_ids',
  'tokens_positions'}, as grain's packing writes them) -> the [B, L] batch: a target counts only
  when it continues the same document."""
  tokens, seg, pos = packed["tokens"], packed["tokens_segment_ids"], packed["tokens_positions"]
  same_doc = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
  return {
      "inputs": tokens[:, :-1].astype(np.int32),
      "targets": tokens[:, 1:].astype(np.int32),
      "loss_mask": (packed["loss_mask"][:, 1:] * same_doc).astype(np.int32),
      "segment_ids": seg[:, :-1].astype(np.int32),
      "positions": pos[:, :-1].astype(np.int32),
  }
