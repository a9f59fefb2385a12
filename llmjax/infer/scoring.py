"""Log-probabilities of given completions under a prompt: the primitive of DPO, Self-Explore and
LM judges.

Each row is prompt + completion, right-padded to a multiple of `length_bucket`; one forward pass
gives every next-token distribution, and only the completion's tokens are scored (the prompt is
masked). Rows are sorted by length so similar lengths share a batch; results come back in order.
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.errors import UserError
from llmjax.infer.batching import BatchedRunner
from llmjax.runio import progress_bar


@dataclasses.dataclass
class Score:
  token_logprobs: list[float]  # one per completion token

  @property
  def logprob(self) -> float:
    return float(sum(self.token_logprobs))


def completion_logprobs(logits_BxLxV, tokens_BxL, completion_mask_BxL):
  """Per-position log p(token_t | tokens_<t) for t >= 1, zero where the mask is 0.

  Args:
    logits_BxLxV: the model's logits over the whole row.
    tokens_BxL: the row's tokens.
    completion_mask_BxL: 1 on the tokens to score (never position 0, which has no context).
  Returns:
    logprobs_BxL (f32; position 0 is always 0).
  """
  logits_BxLxV = logits_BxLxV[:, :-1].astype(jnp.float32)
  targets_BxL = tokens_BxL[:, 1:]
  target_logits_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  logprobs_BxL = target_logits_BxL - jax.nn.logsumexp(logits_BxLxV, axis=-1)
  logprobs_BxL = jnp.where(completion_mask_BxL[:, 1:] > 0, logprobs_BxL, 0.0)
  return jnp.pad(logprobs_BxL, ((0, 0), (1, 0)))


class Scorer(BatchedRunner):
  """Scores completions with a decoder's params (see BatchedRunner for the constructor's
  arguments)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    model = self.model

    def score(params, tokens_BxL, segments_BxL, completion_mask_BxL):
      logits_BxLxV = model.apply({"params": params}, tokens_BxL, None, segments_BxL)
      return completion_logprobs(logits_BxLxV, tokens_BxL, completion_mask_BxL)

    sharding = self.parallel.batch_sharding(2)
    self._score = jax.jit(score, in_shardings=(None, sharding, sharding, sharding))

  def score_ids(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                show_progress: bool = False) -> list[Score]:
    """Log-probs of each completion given its prompt (token id lists; the prompt non-empty)."""
    for i, (prompt, completion) in enumerate(pairs):
      if len(prompt) == 0:
        raise UserError(f"row {i}: empty prompt; the first completion token needs a context "
                        "(e.g. BOS)")
      total = len(prompt) + len(completion)
      if self.config.positions == "learned" and total > self.config.max_len:
        raise UserError(f"row {i}: {total} tokens exceed the model's {self.config.max_len} "
                        "learned positions")
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results: list[Score | None] = [None] * len(pairs)
    B = self.batch_size
    bar = progress_bar(len(order), 0, show_progress, "score")
    for start in range(0, len(order), B):
      chunk = order[start:start + B]
      longest = max(len(pairs[i][0]) + len(pairs[i][1]) for i in chunk)
      L = self.padded_length(longest)
      tokens = np.full((B, L), self.pad_id, np.int32)
      segments = np.zeros((B, L), np.int32)
      scored = np.zeros((B, L), np.int32)
      for b, i in enumerate(chunk):
        prompt, completion = pairs[i]
        n = len(prompt) + len(completion)
        tokens[b, :n] = list(prompt) + list(completion)
        segments[b, :n] = 1
        scored[b, len(prompt):n] = 1
      with self.parallel.context():
        logprobs = jax.device_get(self._score(self.params, tokens, segments, scored))
      for b, i in enumerate(chunk):
        prompt, completion = pairs[i]
        results[i] = Score(logprobs[b, len(prompt):len(prompt) + len(completion)].tolist())
      bar.update(len(chunk))
    bar.close()
    return results
