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
from llmjax.infer.batching import BatchedRunner, runner_params


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
  """Scores completions with the params each call is given (see BatchedRunner for the
  constructor's arguments)."""

  def _scorer(self, length: int):
    model = self.model

    def score(params, tokens_BxL, segments_BxL, completion_mask_BxL):
      logits_BxLxV = model.apply({"params": params}, tokens_BxL, None, segments_BxL)
      return completion_logprobs(logits_BxLxV, tokens_BxL, completion_mask_BxL)

    def build():
      sharding = self.parallel.batch_sharding(2)
      jitted = jax.jit(score, in_shardings=(None, sharding, sharding, sharding))

      def call(*args):
        with self.parallel.context():
          return jitted(*args)
      return call

    return self.compiled("score", (self.batch_size, length), build)

  def score_ids(self, params, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                show_progress: bool = False) -> list[Score]:
    """Log-probs of each completion given its prompt (token id lists; the prompt non-empty).

    Args:
      params: the decoder's params (or a wrapper's), placed on this runner's mesh.
    """
    for i, (prompt, completion) in enumerate(pairs):
      if len(prompt) == 0:
        raise UserError(f"row {i + 1}: empty prompt; the first completion token needs a "
                        "context (e.g. BOS)")
      total = len(prompt) + len(completion)
      if self.config.positions == "learned" and total > self.config.max_len:
        raise UserError(f"row {i + 1}: {total} tokens exceed the model's {self.config.max_len} "
                        "learned positions")
    params = runner_params(params)
    results: list[Score | None] = [None] * len(pairs)
    B = self.batch_size
    lengths = [len(p) + len(c) for p, c in pairs]
    for chunk, L in self.batches(lengths, show_progress, "score"):
      tokens = np.full((B, L), self.pad_id, np.int32)
      segments = np.zeros((B, L), np.int32)
      scored = np.zeros((B, L), np.int32)
      for b, i in enumerate(chunk):
        prompt, completion = pairs[i]
        n = len(prompt) + len(completion)
        tokens[b, :n] = list(prompt) + list(completion)
        segments[b, :n] = 1
        scored[b, len(prompt):n] = 1
      logprobs = jax.device_get(self._scorer(L)(params, tokens, segments, scored))
      for b, i in enumerate(chunk):
        prompt, completion = pairs[i]
        results[i] = Score(logprobs[b, len(prompt):len(prompt) + len(completion)].tolist())
    return results
