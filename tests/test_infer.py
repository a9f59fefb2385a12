"""KV-cache generation, sampling and scoring against the uncached decoder."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import slow_after_first
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.errors import UserError
from llmjax.infer import Generator, SamplingParams, Scorer, generate_text
from llmjax.infer.sampling import filter_logits
from llmjax.models import Decoder, ModelConfig

BASE = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                   max_len=48)
VARIANTS = {
    "llama": {},
    "scanned": {"scan_layers": True},
    "gpt2": {"positions": "learned", "norm": "layernorm", "activation": "gelu",
             "tie_embeddings": True, "qkv_bias": True, "out_bias": True, "mlp_bias": True},
    "sliding_window": {"sliding_window": 3},
    "olmo2": {"norm_position": "post", "qk_norm": True, "clip_qkv": 0.5},
    # The 16-slot prefill in query blocks of 3 (the last one padded), one block at a time.
    "blocked_prefill": {"prefill_chunk": 3},
}
PROMPTS = [[1, 5, 7], [1, 9, 3, 4, 8, 11, 2, 6, 6, 9], [3]]


def _model(**changes):
  cfg = dataclasses.replace(BASE, **changes)
  params = Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  # Larger weights than the init: sharp distributions, so greedy choices are not near-ties.
  return cfg, jax.tree.map(lambda x: x * 4 if x.ndim > 1 else x, params)


def _greedy_without_cache(cfg, params, prompt, steps, buffer=24):
  """Recomputes the whole row each step; the row is right-padded to a fixed length (causal
  attention: later padding cannot change earlier logits), so it compiles once."""
  forward = jax.jit(Decoder(cfg).apply)
  tokens, logprobs = list(prompt), []
  for _ in range(steps):
    row = np.zeros((1, buffer), np.int32)
    row[0, :len(tokens)] = tokens
    logits = forward({"params": params}, row)[0, len(tokens) - 1]
    token = int(jnp.argmax(logits))
    logprobs.append(float(jax.nn.log_softmax(logits)[token]))
    tokens.append(token)
  return tokens[len(prompt):], logprobs


@pytest.mark.parametrize("variant", slow_after_first("llama", *sorted(set(VARIANTS) - {"llama"})))
def test_cached_greedy_generation_equals_the_full_forward_per_prompt(variant):
  """Left-padded rows in one batch, decoded through the cache, pick what each prompt alone
  picks with full recomputation; scoring the completions gives the same log-probs."""
  cfg, params = _model(**VARIANTS[variant])
  out = Generator(cfg, batch_size=4, length_bucket=8).generate_ids(
      params, PROMPTS, SamplingParams(max_new_tokens=6))
  scores = Scorer(cfg, batch_size=4, length_bucket=8).score_ids(
      params, [(p, c[0].tokens) for p, c in zip(PROMPTS, out)])
  for prompt, completions, score in zip(PROMPTS, out, scores):
    tokens, logprobs = _greedy_without_cache(cfg, params, prompt, 6)
    assert completions[0].tokens == tokens
    np.testing.assert_allclose(completions[0].logprobs, logprobs, atol=2e-5)
    np.testing.assert_allclose(score.token_logprobs, logprobs, atol=2e-5)
    assert completions[0].finish_reason == "length"


def test_generation_across_cache_segments_equals_the_full_forward():
  """70 new tokens decode in three segments (caches of P + 32, 64, 70 slots); the tokens and
  log-probs are those of recomputing the whole row each step."""
  from llmjax.infer.generate import decode_segments
  assert decode_segments(70) == [32, 64, 70] and decode_segments(32) == [32]
  cfg, params = _model(max_len=96)
  prompts = [[1, 5, 7], [3, 9, 2, 4, 4]]
  out = Generator(cfg, batch_size=2, length_bucket=8).generate_ids(
      params, prompts, SamplingParams(max_new_tokens=70))
  for prompt, completions in zip(prompts, out):
    tokens, logprobs = _greedy_without_cache(cfg, params, prompt, 70, buffer=80)
    assert completions[0].tokens == tokens
    np.testing.assert_allclose(completions[0].logprobs, logprobs, atol=2e-5)


@pytest.fixture(scope="module")
def llama():
  return _model()


def test_row_seeds_make_samples_independent_of_batching(llama):
  cfg, params = llama
  sampling = SamplingParams(temperature=1.0, max_new_tokens=8, n=3)
  batched = Generator(cfg, batch_size=8, length_bucket=8).generate_ids(params, PROMPTS, sampling,
                                                                              seed=7)
  one_by_one = Generator(cfg, batch_size=1, length_bucket=16).generate_ids(
      params, PROMPTS, sampling, seed=7)
  assert [[c.tokens for c in cs] for cs in batched] == [[c.tokens for c in cs]
                                                         for cs in one_by_one]
  # Three samples of a prompt are three different draws, and another seed draws differently.
  assert len({tuple(c.tokens) for c in batched[1]}) > 1
  other_seed = Generator(cfg, batch_size=8, length_bucket=8).generate_ids(
      params, PROMPTS, sampling, seed=8)
  assert [[c.tokens for c in cs] for cs in other_seed] != [[c.tokens for c in cs]
                                                           for cs in batched]


def test_prompt_seeds_draw_the_same_tokens_in_any_call(llama):
  """A server's requests carry their own seeds: a prompt's samples then do not depend on the
  other prompts of its call, its position or the batch size."""
  cfg, params = llama
  sampling = SamplingParams(temperature=1.0, max_new_tokens=8, n=2)
  together = Generator(cfg, batch_size=8, length_bucket=8).generate_ids(
      params, PROMPTS, sampling, prompt_seeds=[11, 12, 13])
  alone = Generator(cfg, batch_size=1, length_bucket=16).generate_ids(
      params, [PROMPTS[1]], sampling, prompt_seeds=[12])
  assert [c.tokens for c in alone[0]] == [c.tokens for c in together[1]]
  swapped = Generator(cfg, batch_size=8, length_bucket=8).generate_ids(
      params, [PROMPTS[2], PROMPTS[1]], sampling, prompt_seeds=[13, 12])
  assert [c.tokens for c in swapped[1]] == [c.tokens for c in together[1]]
  assert [c.tokens for c in swapped[0]] == [c.tokens for c in together[2]]
  other = Generator(cfg, batch_size=1, length_bucket=16).generate_ids(
      params, [PROMPTS[1]], sampling, prompt_seeds=[99])
  assert [c.tokens for c in other[0]] != [c.tokens for c in alone[0]]
  with pytest.raises(UserError, match="2 prompt seeds for 3 prompts"):
    Generator(cfg, batch_size=8, length_bucket=8).generate_ids(params, PROMPTS, sampling,
                                                               prompt_seeds=[1, 2])


@pytest.mark.parametrize("filtering", [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 0.999}])
def test_filters_that_leave_one_token_sample_greedily(llama, filtering):
  cfg, params = llama
  generator = Generator(cfg, batch_size=4, length_bucket=8)
  greedy = generator.generate_ids(params, PROMPTS, SamplingParams(max_new_tokens=5))
  sampled = generator.generate_ids(
      params, PROMPTS, SamplingParams(temperature=1.5, max_new_tokens=5, **filtering), seed=3)
  assert [c[0].tokens for c in sampled] == [c[0].tokens for c in greedy]


def test_filter_logits_keeps_the_expected_sets():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda **kw: (np.isfinite(filter_logits(logits, SamplingParams(temperature=1.0, **kw)))
                       [0].tolist())
  assert kept(top_k=2) == [True, True, False, False]
  assert kept(top_p=0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
  assert kept(top_p=0.81) == [True, True, True, False]
  assert kept(min_p=0.5) == [True, True, False, False]  # p >= 0.25


def test_stop_tokens_and_stop_strings(llama):
  cfg, params = llama
  generator = Generator(cfg, batch_size=4, length_bucket=8)
  free = generator.generate_ids(params, PROMPTS, SamplingParams(max_new_tokens=8))
  stop_token = free[0][0].tokens[3]
  first = free[0][0].tokens.index(stop_token)
  stopped = generator.generate_ids(params, PROMPTS, SamplingParams(max_new_tokens=8),
                                   stop_token_ids=[stop_token])
  assert stopped[0][0].tokens == free[0][0].tokens[:first + 1]
  assert stopped[0][0].finish_reason == "stop"

  tokenizer = ByteTokenizer()  # ids >= 3 decode to bytes
  text = tokenizer.decode(free[1][0].tokens)
  stop = text[2:4]
  results, _ = generate_text(generator, params, tokenizer, PROMPTS,
                             SamplingParams(max_new_tokens=8), stop_strings=[stop])
  completion = results[1][0]
  assert completion.text == text[:text.find(stop)]
  assert completion.finish_reason == "stop"
  assert stop in tokenizer.decode(completion.tokens)
  assert stop not in tokenizer.decode(completion.tokens[:-1])


def test_repetition_penalty_discourages_seen_tokens(llama):
  cfg, params = llama
  generator = Generator(cfg, batch_size=4, length_bucket=8)
  plain = generator.generate_ids(params, PROMPTS, SamplingParams(max_new_tokens=12))
  penalised = generator.generate_ids(params, PROMPTS, SamplingParams(max_new_tokens=12,
                                                             repetition_penalty=100.0))
  repeats = lambda results: sum(len(c[0].tokens) - len(set(c[0].tokens)) for c in results)
  assert repeats(penalised) < repeats(plain)


def test_bad_requests_are_user_errors(llama):
  cfg, params = llama
  with pytest.raises(UserError, match="prompt 2 is empty"):
    Generator(cfg).generate_ids(params, [[1], []], SamplingParams())
  with pytest.raises(UserError, match="sampling.top_p"):
    SamplingParams(top_p=0.0)
  learned, learned_params = _model(**VARIANTS["gpt2"])
  with pytest.raises(UserError, match="learned positions"):
    Generator(learned).generate_ids(learned_params, [[1] * 40], SamplingParams(max_new_tokens=10))


@pytest.mark.slow
def test_generate_and_score_clis_on_an_llmjax_run_agree(tmp_path):
  """A few pretraining steps, then `generate` from the run directory and `score` of what it
  generated from the checkpoint step: the two log-probabilities are the same numbers."""
  from conftest import read_jsonl, run_cli, tiny_args
  run = tmp_path / "run"
  result = run_cli(tiny_args(run, "--config.train.steps=20", "--config.train.eval_every=20",
                             "--config.train.checkpoint_every=20"))
  assert result.returncode == 0, result.stderr[-3000:]
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "The cat", "id": 7}\n{"prompt": "A"}\n')
  result = run_cli(["--config", "configs/generate.py", "--workdir", str(tmp_path / "gen"),
                    f"--config.checkpoint={run}", f"--config.prompts={prompts}",
                    "--config.sampling.max_new_tokens=12", "--config.sampling.n=2",
                    "--config.sampling.temperature=0.7", "--config.sampling.top_k=20"])
  assert result.returncode == 0, result.stderr[-3000:]
  generations = read_jsonl(tmp_path / "gen" / "generations.jsonl")
  assert [(g["id"], g["sample"]) for g in generations] == [(7, 0), (7, 1), (1, 0), (1, 1)]
  # Completions whose text re-encodes to the same tokens: no EOS, ASCII bytes only.
  kept = [g for g in generations if g["finish_reason"] == "length"
          and all(3 + 32 <= t < 3 + 127 for t in g["tokens"])]
  assert kept
  rows = tmp_path / "rows.jsonl"
  rows.write_text("".join(json.dumps({"prompt": g["prompt"], "completion": g["completion"]})
                          + "\n" for g in kept))
  result = run_cli(["--config", "configs/score.py", "--workdir", str(tmp_path / "score"),
                    f"--config.checkpoint={run}/checkpoints/20", f"--config.prompts={rows}"])
  assert result.returncode == 0, result.stderr[-3000:]
  scores = read_jsonl(tmp_path / "score" / "scores.jsonl")
  for generated, scored in zip(kept, scores):
    np.testing.assert_allclose(scored["token_logprobs"], generated["token_logprobs"], atol=1e-4)
  summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
  assert summary["completions"] == 4 and summary["tokens_generated"] == sum(
      len(g["tokens"]) for g in generations)


def test_runners_take_params_per_call_without_recompiling(llama):
  """Two param trees through one runner, and a second runner of the same model: one compile
  per program (counted by jax's lowering events), results that follow the params."""
  from jax import monitoring
  lowering = "/jax/core/compile/jaxpr_to_mlir_module_duration"
  cfg, params = llama
  other = jax.tree.map(lambda x: -x, params)
  lowerings = []
  listener = lambda event, *args, **kwargs: lowerings.append(event)  # noqa: E731
  monitoring.register_event_duration_secs_listener(listener)
  try:
    # Shapes no other test uses: the compile cache is shared by every runner of the model.
    sampling = SamplingParams(max_new_tokens=7)
    generator = Generator(cfg, batch_size=3, length_bucket=12)
    first = generator.generate_ids(params, PROMPTS, sampling)
    compiled = lowerings.count(lowering)
    assert compiled >= 1
    second = generator.generate_ids(other, PROMPTS, sampling)
    again = Generator(cfg, batch_size=3, length_bucket=12).generate_ids(params, PROMPTS,
                                                                        sampling)
    scorer = Scorer(cfg, batch_size=3, length_bucket=12)
    pairs = [(p, c[0].tokens) for p, c in zip(PROMPTS, first)]
    scores = [scorer.score_ids(p, pairs) for p in (params, other)]
    after_scoring = lowerings.count(lowering)
    scores_again = Scorer(cfg, batch_size=3, length_bucket=12).score_ids(params, pairs)
    assert lowerings.count(lowering) == after_scoring
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert after_scoring - compiled <= 1  # the scorer's one program; generation recompiled none
  assert [c[0].tokens for c in first] == [c[0].tokens for c in again]
  assert [c[0].tokens for c in first] != [c[0].tokens for c in second]
  assert [s.token_logprobs for s in scores[0]] == [s.token_logprobs for s in scores_again]
  assert [s.token_logprobs for s in scores[0]] != [s.token_logprobs for s in scores[1]]


def test_prefix_lm_prompts_decode_through_the_cache_like_the_full_forward():
  """A prompt whose first tokens form a bidirectional prefix: the prefill and each cached
  decode step give the logits of the full prefix-LM forward over the growing row."""
  cfg, params = _model()
  model = Decoder(cfg)
  prompt = jnp.asarray([[1, 5, 7, 9, 2]])
  prefix = jnp.asarray([[1, 1, 1, 0, 0]], bool)
  from llmjax.infer.cache import init_cache
  cache = init_cache(model, 1, 8)
  logits, variables = model.apply({"params": params, "cache": cache}, prompt, decode=True,
                                  mask_mode="prefix_lm", prefix_mask_BxL=prefix,
                                  mutable=["cache"])
  full = lambda row: model.apply(  # noqa: E731
      {"params": params}, row, mask_mode="prefix_lm",
      prefix_mask_BxL=jnp.pad(prefix, ((0, 0), (0, row.shape[1] - 5))))
  np.testing.assert_allclose(logits, full(prompt), atol=1e-5)
  row = prompt
  for _ in range(2):
    token = jnp.argmax(logits[:, -1], -1)[:, None]
    row = jnp.concatenate([row, token], axis=1)
    logits, variables = model.apply(
        {"params": params, "cache": variables["cache"]}, token,
        jnp.asarray([[row.shape[1] - 1]]), decode=True, mutable=["cache"])
    np.testing.assert_allclose(logits[:, 0], full(row)[:, -1], atol=1e-5)
  # Bidirectional prefixes change the prompt's logits: the test above is not the causal one.
  assert not np.allclose(full(prompt)[:, :2], model.apply({"params": params}, prompt)[:, :2])
