"""Next-token sampling: logit processors and the draw, one row per sequence.

Processors run in the order Hugging Face applies them, so the same settings sample from the same
distribution: repetition penalty, temperature, top-k, top-p, min-p. Temperature 0 is greedy.
Shape letters: B rows, V vocabulary.
"""

import dataclasses

import jax
import jax.numpy as jnp

from llmjax.errors import UserError
from llmjax.numerics import argmax_first

_MASKED = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to pick each next token. Hashable: part of the compiled decode loop's signature."""

  temperature: float = 0.0  # 0: greedy (argmax)
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1: off
  min_p: float = 0.0  # 0: off
  repetition_penalty: float = 1.0  # 1: off; > 1 discourages tokens already in the row
  max_new_tokens: int = 64
  n: int = 1  # samples per prompt

  def __post_init__(self):
    def check(ok, what, expected):
      if not ok:
        raise UserError(f"sampling.{what} = {getattr(self, what)!r}: expected {expected}")

    check(self.temperature >= 0, "temperature", "a number >= 0 (0 is greedy)")
    check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "an integer >= 0 (0 is off)")
    check(0 < self.top_p <= 1, "top_p", "a number in (0, 1]")
    check(0 <= self.min_p < 1, "min_p", "a number in [0, 1)")
    check(self.repetition_penalty > 0, "repetition_penalty", "a positive number (1 is off)")
    check(isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0, "max_new_tokens",
          "a positive integer")
    check(isinstance(self.n, int) and self.n > 0, "n", "a positive integer")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def apply_repetition_penalty(logits_BxV, seen_BxV, penalty: float):
  """CTRL-style penalty on tokens already present: positive logits divided, negative ones
  multiplied by `penalty`."""
  if penalty == 1.0:
    return logits_BxV
  penalised = jnp.where(logits_BxV > 0, logits_BxV / penalty, logits_BxV * penalty)
  return jnp.where(seen_BxV, penalised, logits_BxV)


def filter_logits(logits_BxV, params: SamplingParams):
  """Temperature, then top-k, top-p and min-p filtering (filtered tokens get -inf)."""
  logits_BxV = logits_BxV / params.temperature
  if params.top_k > 0 and params.top_k < logits_BxV.shape[-1]:
    kth_largest_Bx1 = jax.lax.top_k(logits_BxV, params.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_largest_Bx1, _MASKED, logits_BxV)
  if params.top_p < 1.0:
    # Keep the smallest set of most likely tokens whose mass reaches top_p (at least one).
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    keep_BxV = mass_before_BxV < params.top_p
    cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, _MASKED, logits_BxV)
  if params.min_p > 0:
    probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
    floor_Bx1 = params.min_p * jnp.max(probs_BxV, axis=-1, keepdims=True)
    logits_BxV = jnp.where(probs_BxV < floor_Bx1, _MASKED, logits_BxV)
  return logits_BxV


def next_tokens(logits_BxV, seen_BxV, keys_B, params: SamplingParams):
  """Picks one token per row.

  Args:
    logits_BxV: the model's next-token logits.
    seen_BxV: bool, tokens already in each row (read only with a repetition penalty).
    keys_B: one PRNG key per row (rows sample independently and reproducibly).
    params: the sampling settings.
  Returns:
    (tokens_B int32, logprobs_B f32): the tokens and their log-probabilities under the model's
    own distribution (temperature 1, unfiltered).
  """
  logits_BxV = logits_BxV.astype(jnp.float32)
  processed_BxV = apply_repetition_penalty(logits_BxV, seen_BxV, params.repetition_penalty)
  if params.greedy:
    tokens_B = argmax_first(processed_BxV)
  else:
    # Gumbel-max: the argmax of logits + Gumbel noise is a draw from softmax(logits).
    filtered_BxV = filter_logits(processed_BxV, params)
    gumbel_BxV = jax.vmap(lambda key: jax.random.gumbel(key, filtered_BxV.shape[-1:]))(keys_B)
    tokens_B = argmax_first(filtered_BxV + gumbel_BxV)
  max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
  log_normalizer_B = max_Bx1[:, 0] + jnp.log(jnp.sum(jnp.exp(logits_BxV - max_Bx1), axis=-1))
  chosen_B = jnp.take_along_axis(logits_BxV, tokens_B[:, None], axis=-1)[:, 0]
  return tokens_B.astype(jnp.int32), chosen_B - log_normalizer_B
