"""Batched generation with a preallocated KV cache: one prefill, then a compiled decode loop.

Padding: prompts are LEFT-padded to a common length P (a multiple of `length_bucket`), and every
row carries its own positions (0 at its first real token) and segment ids (0 on padding), so a
padded row computes exactly what it would alone: padding slots are never attended to, and rope
or learned positions start at each row's first token. All rows then write their new tokens into
the same cache slot each step. The cache grows in segments (`decode_segments`), so a step only
reads the slots its segment can have filled. The compiled program is cached per (batch, P,
max_new_tokens, sampling settings), shared by every Generator of the same model and mesh, and
takes the params as an argument: one compile per bucket, not per call or per params.

Sampling: see llmjax.infer.sampling. Row r of prompt i (n samples each) draws with
fold_in(fold_in(PRNGKey(seed), i * n + r), step): results do not depend on the batch size or on
which other prompts share the batch. With per-prompt seeds (`prompt_seeds`, e.g. a server's
requests, each with its own seed) the row's key is fold_in(PRNGKey(prompt_seeds[i]), r): a
prompt then draws the same tokens whichever call, batch or position it comes in.

Stopping: a row stops at the first token in `stop_token_ids` (the tokenizer's EOS ids by
default; the token is kept in `tokens` but not in `text`); the loop ends when every row has
stopped or after max_new_tokens. Stop strings are applied to the decoded text afterwards: the
completion is cut before the first one and its tokens after the token that completed it.
"""

import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.errors import UserError
from llmjax.infer.batching import BatchedRunner, runner_params
from llmjax.infer.cache import init_cache, left_padded_inputs
from llmjax.infer.sampling import SamplingParams, next_tokens


@dataclasses.dataclass
class Completion:
  """One generated continuation."""

  tokens: list[int]
  logprobs: list[float]  # per token, under the model (temperature 1, unfiltered)
  finish_reason: str  # 'stop' (stop token or string) or 'length' (max_new_tokens reached)
  text: str | None = None

  @property
  def logprob(self) -> float:
    return float(sum(self.logprobs))


class Generator(BatchedRunner):
  """Generates from the params each call is given (see BatchedRunner for the constructor's
  arguments)."""

  def _loop(self, batch: int, prompt_len: int, sampling: SamplingParams):
    return self.compiled("generate", (batch, prompt_len, sampling, self.pad_id),
                         lambda: self._build_loop(batch, prompt_len, sampling))

  def _build_loop(self, B: int, P: int, sampling: SamplingParams):
    model, T, V = self.model, sampling.max_new_tokens, self.config.vocab_size

    ends = decode_segments(T)

    def run(params, tokens_BxP, mask_BxP, row_keys_B, stop_ids_S, active_B):
      positions_BxP, segments_BxP = left_padded_inputs(mask_BxP)
      cache = init_cache(model, B, P + ends[0])
      logits_Bx1xV, variables = model.apply(
          {"params": params, "cache": cache}, tokens_BxP, positions_BxP, segments_BxP,
          decode=True, last_positions=1, mutable=["cache"])
      rows_B = jnp.arange(B)
      # Tokens present in each row, for the repetition penalty only (else a dummy).
      track_seen = sampling.repetition_penalty != 1.0
      seen_BxV = (jnp.zeros((B, V), bool).at[rows_B[:, None], tokens_BxP].max(mask_BxP > 0)
                  if track_seen else jnp.zeros((B, 1), bool))
      lengths_B = mask_BxP.sum(axis=1)

      def cond(carry, end):
        step, done_B = carry[0], carry[4]
        return (step < end) & ~jnp.all(done_B)

      def body(carry):
        step, cache, logits_BxV, seen_BxV, done_B, tokens_BxT, logprobs_BxT, stopped_at_B = carry
        keys_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys_B, step)
        token_B, logprob_B = next_tokens(logits_BxV, seen_BxV, keys_B, sampling)
        token_B = jnp.where(done_B, self.pad_id, token_B)
        tokens_BxT = tokens_BxT.at[:, step].set(token_B)
        logprobs_BxT = logprobs_BxT.at[:, step].set(jnp.where(done_B, 0.0, logprob_B))
        stops_B = jnp.isin(token_B, stop_ids_S) & ~done_B
        stopped_at_B = jnp.where(stops_B, step + 1, stopped_at_B)
        done_B = done_B | stops_B
        if track_seen:
          seen_BxV = seen_BxV.at[rows_B, token_B].set(True)
        logits_Bx1xV, variables = model.apply(
            {"params": params, "cache": cache}, token_B[:, None], (lengths_B + step)[:, None],
            jnp.ones((B, 1), jnp.int32), decode=True, mutable=["cache"])
        return (step + 1, variables["cache"], logits_Bx1xV[:, 0], seen_BxV, done_B, tokens_BxT,
                logprobs_BxT, stopped_at_B)

      carry = (jnp.zeros((), jnp.int32), variables["cache"], logits_Bx1xV[:, 0], seen_BxV,
               ~active_B, jnp.full((B, T), self.pad_id, jnp.int32),
               jnp.zeros((B, T), jnp.float32), jnp.zeros((B,), jnp.int32))
      for i, end in enumerate(ends):
        if i:  # a larger cache for the next segment: one copy, then cheaper steps until here
          carry = carry[:1] + (grow_cache(carry[1], init_cache(model, B, P + end)),) + carry[2:]
        carry = jax.lax.while_loop(functools.partial(cond, end=end), body, carry)
      return carry[5], carry[6], carry[7]

    batch_sharding = self.parallel.batch_sharding(2)
    row_sharding = self.parallel.batch_sharding(1)
    jitted = jax.jit(run, in_shardings=(None, batch_sharding, batch_sharding, row_sharding, None,
                                        row_sharding))

    def call(*args):
      with self.parallel.context():
        return jitted(*args)

    return call

  def generate_ids(self, params, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
                   seed: int = 0, stop_token_ids: Sequence[int] = (),
                   show_progress: bool = False,
                   prompt_seeds: Sequence[int] | None = None) -> list[list[Completion]]:
    """Generates `sampling.n` completions for each prompt (lists of token ids).

    Args:
      params: the decoder's params (or a wrapper's), placed on this runner's mesh.
      prompt_seeds: one seed per prompt instead of `seed` (see the module docstring).
    Returns:
      One list of `sampling.n` Completions per prompt, in prompt order (text unset).
    """
    for i, prompt in enumerate(prompts):
      if len(prompt) == 0:
        raise UserError(f"prompt {i + 1} is empty: generation needs at least one token "
                        "(e.g. BOS)")
    if prompt_seeds is not None and len(prompt_seeds) != len(prompts):
      raise UserError(f"{len(prompt_seeds)} prompt seeds for {len(prompts)} prompts")
    params = runner_params(params)
    all_rows = [(i, r) for i in range(len(prompts)) for r in range(sampling.n)]
    stop_ids = jnp.asarray(sorted(set(int(t) for t in stop_token_ids)) or [-1], jnp.int32)
    base_key = jax.random.PRNGKey(seed)
    results: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
    B = self.batch_size
    lengths = [len(prompts[i]) for i, _ in all_rows]
    for indices, P in self.batches(lengths, show_progress, "generate"):
      chunk = [all_rows[k] for k in indices]
      self._check_length(max(lengths[k] for k in indices), sampling.max_new_tokens)
      tokens = np.full((B, P), self.pad_id, np.int32)
      mask = np.zeros((B, P), np.int32)
      mask[len(chunk):, -1] = 1  # filler rows (start done): one token, no row all padding
      row_ids = np.zeros((B,), np.int32)
      row_seeds = np.zeros((B,), np.uint32)
      for b, (i, r) in enumerate(chunk):
        prompt = np.asarray(prompts[i], np.int32)
        tokens[b, P - len(prompt):], mask[b, P - len(prompt):] = prompt, 1
        if prompt_seeds is None:
          row_ids[b] = i * sampling.n + r
        else:
          row_ids[b], row_seeds[b] = r, np.uint32(prompt_seeds[i] % 2**32)
      if prompt_seeds is None:
        row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base_key, row_ids)
      else:
        row_keys = jax.vmap(jax.random.fold_in)(jax.vmap(jax.random.PRNGKey)(row_seeds),
                                                row_ids)
      out_tokens, out_logprobs, stopped_at = jax.device_get(
          self._loop(B, P, sampling)(params, tokens, mask, row_keys, stop_ids,
                                     np.arange(B) < len(chunk)))
      for b, (i, r) in enumerate(chunk):
        n = int(stopped_at[b]) or sampling.max_new_tokens
        results[i][r] = Completion(tokens=out_tokens[b, :n].tolist(),
                                   logprobs=out_logprobs[b, :n].tolist(),
                                   finish_reason="stop" if stopped_at[b] else "length")
    return results

  def _check_length(self, longest: int, max_new: int) -> None:
    cfg = self.config
    # The last new token is never fed back, so it needs no position of its own.
    if cfg.positions == "learned" and longest + max_new - 1 > cfg.max_len:
      raise UserError(f"a prompt of {longest} tokens + max_new_tokens={max_new} exceeds the "
                      f"model's {cfg.max_len} learned positions")


def decode_segments(max_new_tokens: int, first: int = 32) -> list[int]:
  """Ends of the decode segments: 32, 64, 128, ... then max_new_tokens. Each segment decodes
  with a cache just long enough for it, so early steps do not read (memory-bound) empty slots;
  for 2,048 new tokens the average step reads about half the slots a full-length cache would."""
  ends, end = [], first
  while end < max_new_tokens:
    ends.append(end)
    end *= 2
  return ends + [max_new_tokens]


def grow_cache(cache, target):
  """Pads every cache array with empty slots to the shapes of `target` (an empty larger cache):
  slot axes grow at the end; the write index and filled slots stay as they are."""
  def grow(old, new):
    if old.shape == new.shape:  # the write index, a scalar
      return old
    return jnp.pad(old, [(0, n - o) for o, n in zip(old.shape, new.shape)])
  return jax.tree.map(grow, cache, target)


def generate_text(generator: Generator, params, tokenizer, prompts: Sequence[Sequence[int]],
                  sampling: SamplingParams, seed: int = 0, stop_token_ids: Sequence[int] = (),
                  stop_strings: Sequence[str] = (), show_progress: bool = False,
                  prompt_seeds: Sequence[int] | None = None):
  """`Generator.generate_ids(params, ...)`, then decoded text with stop strings applied.

  Returns:
    (completions per prompt, seconds spent generating).
  """
  stop_token_ids = set(stop_token_ids)
  started = time.perf_counter()
  results = generator.generate_ids(params, prompts, sampling, seed, sorted(stop_token_ids),
                                   show_progress, prompt_seeds)
  seconds = time.perf_counter() - started
  for completions in results:
    for completion in completions:
      _finish_text(completion, tokenizer, stop_token_ids, stop_strings)
  return results, seconds


def _finish_text(completion: Completion, tokenizer, stop_token_ids, stop_strings) -> None:
  tokens = completion.tokens
  if completion.finish_reason == "stop" and tokens and tokens[-1] in stop_token_ids:
    completion.text = tokenizer.decode(tokens[:-1])
    return
  text = tokenizer.decode(tokens)
  cuts = [text.find(s) for s in stop_strings if s and s in text]
  if not cuts:
    completion.text = text
    return
  completion.text = text[:min(cuts)]
  # Keep the tokens up to the one that completed the stop string.
  for k in range(1, len(tokens) + 1):
    if any(s and s in tokenizer.decode(tokens[:k]) for s in stop_strings):
      completion.tokens, completion.logprobs = tokens[:k], completion.logprobs[:k]
      break
  completion.finish_reason = "stop"
