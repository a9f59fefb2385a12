"""Sentence-space reasoning (llmjax.experiments.sentence_lm): the tasks, the token layouts, the
losses, the cached rollouts against uncached forwards, the analytic FLOPs against XLA's cost
analysis, and a micro run of the whole pipeline."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llmjax.errors import UserError
from llmjax.experiments.sentence_lm import blocksworld, prosqa
from llmjax.experiments.sentence_lm import data as data_lib
from llmjax.experiments.sentence_lm.inference import LatentRunner, rollout_flops
from llmjax.experiments.sentence_lm.model import LatentModel, info_nce_sum, prefix_logits
from llmjax.infer.cache import init_cache
from llmjax.infer.vector_prefix import VectorPrefixDecoder
from llmjax.models import Decoder, ModelConfig
from llmjax.models.flops import forward_flops, generation_flops, xla_flops

CONFIG = ModelConfig(vocab_size=300, d_model=128, n_layers=2, n_heads=4, d_ff=512,
                     attention_chunk=0)


# ---- tasks ------------------------------------------------------------------------------------

def test_prosqa_problems_have_one_proof_and_an_unreachable_distractor():
  names = prosqa.concept_names(80)
  for problem in prosqa.problems(200, 3, names):
    reach = prosqa.reachable(problem.facts, problem.subject)
    assert problem.answer in reach and problem.distractor not in reach
    # The proof is the only route: removing any of its facts cuts X from Y.
    proof = set(zip(problem.path[:-1], problem.path[1:]))
    assert proof <= set(problem.facts)
    for edge in proof:
      assert problem.answer not in prosqa.reachable(set(problem.facts) - {edge},
                                                    problem.subject)
  row = problem.to_row()
  right = " ".join(row["steps"]) + " " + row["answer"]
  assert prosqa.is_correct(row, right)
  wrong = right.replace(f"is a {problem.answer}.", f"is a {problem.distractor}.")
  assert not prosqa.is_correct(row, wrong)
  assert not prosqa.is_correct(row, " ".join(row["steps"]))  # no answer sentence


def test_blocksworld_simulator_and_check():
  start = {"red": "table", "blue": "red"}
  start = {b: blocksworld.TABLE if on == "table" else on for b, on in start.items()}
  goal = {"red": "blue", "blue": blocksworld.TABLE}
  row = {"start": [list(x) for x in start.items()], "goal": [list(x) for x in goal.items()]}
  plan = ("Move the blue block from the red block to the table. "
          "Move the red block from the table to the blue block.")
  assert blocksworld.is_correct(row, plan + " " + blocksworld.ANSWER)
  assert not blocksworld.is_correct(row, plan)  # no answer sentence
  # The red block is under the blue one: moving it first is illegal.
  illegal = ("Move the red block from the table to the blue block. "
             "Move the blue block from the red block to the table. ### done")
  assert not blocksworld.is_correct(row, illegal)
  half = "Move the blue block from the red block to the table. ### done"
  assert not blocksworld.is_correct(row, half)
  for problem in blocksworld.problems(100, 0):
    row = problem.to_row()
    assert blocksworld.is_correct(row, " ".join(row["steps"]) + " " + row["answer"])


def test_gsm8k_rows_and_answer_check(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"question": "Q?", "answer": "a = <<1+1=2>>2.\nb\n#### 1,024"})
                  + "\n")
  row, = data_lib.gsm8k_rows(str(path))
  assert row["steps"] == ["a = <<1+1=2>>2.", "b"] and row["answer"] == "### 1024"
  assert data_lib.gsm8k_is_correct(row, "x ### 1,024 y")
  assert not data_lib.gsm8k_is_correct(row, "### 1025")
  assert not data_lib.gsm8k_is_correct(row, "1024")
  path.write_text(path.read_text() + json.dumps({"question": "Q", "answer": "no answer"}) + "\n")
  with pytest.raises(Exception, match=f"{path}:2: malformed row: expected a final '#### N' "
                     "line"):
    data_lib.gsm8k_rows(str(path))


def test_gsm8k_task_from_shared_data():
  from configs.sentence_lm import get_config
  path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gsm8k")
  if not os.path.isfile(os.path.join(path, "train.jsonl")):
    pytest.skip(f"GSM8K not found at {path} (../shared/data/gsm8k)")
  config = get_config("gsm8k_hf")
  config.task.path = path
  task = data_lib.build_task(config)
  assert len(task.splits["test"]) == 1319 and len(task.splits["dev"]) == 500
  assert len(task.splits["train"]) + 500 == 7473
  row = task.splits["train"][0]
  assert row["answer"].startswith("### ") and data_lib.gsm8k_is_correct(row, row["answer"])
  with pytest.raises(UserError, match="set --config.init=hf:DIR"):
    from llmjax.experiments.sentence_lm.experiment import run
    run(config, "/nonexistent")


# ---- layouts and losses -----------------------------------------------------------------------

class _Lengths:
  sentence, context, latent, sentences = 6, 12, 10, 4


def test_latent_arrays_place_question_vectors_and_targets():
  problem = data_lib.Tokenized([1, 10, 11], [[20, 21], [30], [40, 41, 42]])
  teacher = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
  a = data_lib.latent_arrays([problem], [teacher], eos_id=2, lengths=_Lengths)
  assert a["tokens"][0].tolist() == [1, 10, 11, 0, 0, 0, 0, 0, 0, 0]
  assert a["vector_mask"][0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
  assert a["segments"][0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
  vectors = np.asarray(data_lib.latent_vectors(a, 10))
  np.testing.assert_array_equal(vectors[0, 3:5], teacher[:2])
  assert not vectors[0, :3].any() and not vectors[0, 5:].any()
  assert a["predict_at"][0].tolist() == [2, 3, 4, 0] and a["predict_mask"][0].tolist() == [
      1, 1, 1, 0]
  assert a["stop_labels"][0].tolist() == [0, 0, 1, 0]
  # Sentence 3 through the decoder: [z] 40 41 42 -> 40 41 42 EOS.
  assert a["next_targets"][0, 2].tolist() == [40, 41, 42, 2, 0, 0]
  assert a["next_inputs"][0, 2].tolist() == [0, 40, 41, 42, 2, 0]
  assert a["next_mask"][0, 2].tolist() == [1, 1, 1, 1, 0, 0]
  ctx = data_lib.contextual_arrays([problem], 1, 2, _Lengths)
  assert ctx["enc_tokens"][2].tolist()[:6] == [1, 10, 11, 20, 21, 30]
  assert ctx["enc_lengths"].tolist() == [3, 5, 6]
  assert ctx["sem_tokens"][0].tolist()[:3] == [1, 20, 21]
  with pytest.raises(UserError, match="raise the length in config.lengths"):
    data_lib.pad_rows([[1] * 7], 6, "sentence")


def test_info_nce_matches_a_hand_computation():
  rng = np.random.default_rng(0)
  q, k = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  k[3] = k[1]  # a repeated key is no negative of its twin
  mask = np.array([1, 1, 1, 1, 0])
  loss, correct = info_nce_sum(jnp.asarray(q), jnp.asarray(k), jnp.asarray(mask), 0.5)
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  kn = k / np.linalg.norm(k, axis=1, keepdims=True)
  twins = {1: 3, 3: 1}
  expected, hits = 0.0, 0
  for i in range(4):
    scores = {j: qn[i] @ kn[j] / 0.5 for j in range(4)}  # valid keys only
    others = [s for j, s in scores.items() if j != i and j != twins.get(i)]
    expected += -scores[i] + np.log(np.exp(scores[i]) + np.sum(np.exp(others)))
    hits += scores[i] >= max(others)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert int(correct) == hits


# ---- decoding and rollouts against uncached forwards ------------------------------------------

@pytest.fixture(scope="module")
def models():
  # Initialised by compiled programs: op by op, the random initializers alone compile dozens
  # of small programs.
  decoder = Decoder(CONFIG)
  dec_params = jax.jit(decoder.init)(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"]
  latent = LatentModel(CONFIG)
  latent_params = jax.jit(latent.init)(jax.random.PRNGKey(2), jnp.zeros((1, 6), jnp.int32),
                                       jnp.zeros((1, 6, CONFIG.d_model)),
                                       jnp.zeros((1, 6), jnp.int32))["params"]
  return decoder, dec_params, latent, latent_params


def test_vector_prefix_decoding_equals_uncached_greedy(models):
  decoder, params, _, _ = models
  z = jax.random.normal(jax.random.PRNGKey(3), (3, CONFIG.d_model)) * 3
  # Uncached greedy: the whole sequence through the decoder at every step. The decoder is
  # causal, so one compiled length (6) serves every step: position t's logits read tokens <= t.
  forward = jax.jit(lambda z_BxD, inputs_BxL: prefix_logits(decoder, params, z_BxD, inputs_BxL))
  seqs = np.zeros((3, 6), np.int32)  # position 0 holds z; the greedy tokens follow
  for t in range(5):
    seqs[:, t + 1] = np.argmax(np.asarray(forward(z, jnp.asarray(seqs)))[:, t], axis=-1)
  greedy = seqs[:, 1:].tolist()
  # Row 0's third token as EOS: row 0 stops there (padding after it), the others wherever
  # that token first appears in theirs (or never).
  eos = greedy[0][2]
  tokens, lengths = VectorPrefixDecoder(CONFIG, 5, eos_id=eos)(params, z)
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  for b in range(3):
    n = greedy[b].index(eos) if eos in greedy[b] else 5
    assert lengths[b] == n
    assert tokens[b, :n + 1].tolist() == greedy[b][:n + 1]
    assert (tokens[b, n + 1:] == 0).all()


class _Tokenizer:
  bos_id, eos_id, pad_id = 1, 2, 0

  def decode(self, ids):
    return " ".join(map(str, ids))


def test_continuous_rollout_equals_uncached_forward(models):
  """The KV-cached rollout (left-padded questions of different lengths, two per batch) predicts
  what the latent model computes from the whole sequence at once."""
  _, dec_params, latent, latent_params = models
  runner = LatentRunner(CONFIG, _Tokenizer(), {5}, "semantic", max_sentences=3,
                        sentence_tokens=4, context_tokens=16, batch_size=2)
  problems = [data_lib.Tokenized([1, 7, 8, 9, 10], [[5]]),
              data_lib.Tokenized([1, 11, 12], [[5]])]
  rollouts = runner.rollout(latent_params, dec_params, problems, "continuous")
  for problem, rollout in zip(problems, rollouts):
    Z = rollout.embeddings
    n_q, k = len(problem.question), len(Z)
    tokens = jnp.asarray([problem.question + [0] * (k - 1)])
    vectors = jnp.zeros((1, n_q + k - 1, CONFIG.d_model)).at[0, n_q:].set(Z[:k - 1])
    mask = jnp.zeros((1, n_q + k - 1), jnp.int32).at[0, n_q:].set(1)
    pred, _ = jax.jit(latent.apply)({"params": latent_params}, tokens, vectors, mask)
    np.testing.assert_allclose(np.asarray(pred[0, n_q - 1:]), Z, atol=2e-4, rtol=2e-4)


def test_teacher_embeddings_agree_with_encoding_and_reencoding():
  """The one-pass contextual teacher embeddings equal encoding each context alone, and a
  discretized rollout's re-encoding of the gold sentences gives the teacher embeddings back."""
  import types
  from llmjax.experiments.sentence_lm import experiment as sentence_lm
  from llmjax.experiments.sentence_lm.model import encode
  cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=64)
  decoder = Decoder(cfg)
  params = jax.jit(decoder.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  lengths = types.SimpleNamespace(sentence=6, context=20, latent=16, sentences=4)
  r = types.SimpleNamespace(tokenizer=_Tokenizer(), model_config=cfg, config=types.SimpleNamespace(
      lengths=lengths, inference=types.SimpleNamespace(batch_size=3)))
  problems = [data_lib.Tokenized([1, 10, 11], [[20, 21], [30], [40, 41, 42]]),
              data_lib.Tokenized([1, 12], [[22], [31, 32], [43]])]
  for teacher in ("semantic", "ctx_b"):
    embeddings = sentence_lm.teacher_embeddings(r, teacher, params, problems)
    arrays = (data_lib.semantic_arrays(problems, 1, 2, lengths, unique=False)
              if teacher == "semantic" else data_lib.contextual_arrays(problems, 1, 2, lengths))
    alone = jax.jit(lambda p, tokens, n: encode(decoder, p, tokens, n))(
        params, jnp.asarray(arrays["enc_tokens"]), jnp.asarray(arrays["enc_lengths"]))
    np.testing.assert_allclose(np.concatenate(embeddings), np.asarray(alone), atol=1e-5)
    runner = LatentRunner(cfg, _Tokenizer(), {40}, teacher, 4, 6, 20, batch_size=2)
    for t in (1, 2, 3):
      decoded = [(data_lib.pad_rows([p.sentences[s] for p in problems], 6, "x"),
                  np.asarray([len(p.sentences[s]) for p in problems])) for s in range(t)]
      z = np.asarray(runner._reencode(params, problems, decoded, t))
      for i in range(2):
        np.testing.assert_allclose(z[i], embeddings[i][t - 1], atol=1e-5)


# ---- FLOPs against XLA's cost analysis --------------------------------------------------------

def _cost(fn, *args) -> float:
  return xla_flops(jax.jit(fn).lower(*args).compile())


def _decoder_generation_xla(decoder, params, prompt: int, generated: int,
                            vector_prefix: bool = False) -> float:
  """XLA's FLOPs of a greedy generation whose every call has a cache of exactly the slots it
  fills (the ideal KV cache the analytic count assumes)."""
  def prefill(params):
    cache = init_cache(decoder, 1, prompt)
    kwargs = ({"embeddings_BxLxD": jnp.ones((1, prompt, CONFIG.d_model))} if vector_prefix
              else {})
    tokens = None if vector_prefix else jnp.ones((1, prompt), jnp.int32)
    return decoder.apply({"params": params, "cache": cache}, tokens, decode=True,
                         last_positions=1, mutable=["cache"], **kwargs)

  total = _cost(prefill, params)
  for i in range(1, generated):
    def step(params, cache):
      return decoder.apply({"params": params, "cache": cache}, jnp.ones((1, 1), jnp.int32),
                           jnp.full((1, 1), prompt + i - 1), decode=True, mutable=["cache"])
    cache = init_cache(decoder, 1, prompt + i)
    total += _cost(step, params, cache)
  return total


@pytest.mark.slow
def test_analytic_flops_match_xla_for_cot(models):
  decoder, params, _, _ = models
  prompt, generated = 40, 6
  analytic = generation_flops(CONFIG, prompt, generated)
  measured = _decoder_generation_xla(decoder, params, prompt, generated)
  assert abs(analytic - measured) / measured < 0.03, (analytic, measured)


@pytest.mark.slow
def test_analytic_flops_match_xla_for_continuous_inference(models):
  decoder, dec_params, latent, latent_params = models
  n_q, counts = 30, [4, 4, 5]  # two steps read only by their stop check, then the answer
  D = CONFIG.d_model

  def prefill(params):
    cache = init_cache(latent, 1, n_q)
    return latent.apply({"params": params, "cache": cache}, jnp.ones((1, n_q), jnp.int32),
                        decode=True, last_positions=1, mutable=["cache"])

  measured = _cost(prefill, latent_params)
  for t in range(1, len(counts)):
    def step(params, cache):
      return latent.apply({"params": params, "cache": cache}, None, jnp.ones((1, 1, D)),
                          positions_BxL=jnp.full((1, 1), n_q + t - 1), decode=True,
                          mutable=["cache"])
    measured += _cost(step, latent_params, init_cache(latent, 1, n_q + t))
  check = _decoder_generation_xla(decoder, dec_params, 1, 1, vector_prefix=True)
  measured += check * (len(counts) - 1)
  measured += _decoder_generation_xla(decoder, dec_params, 1, counts[-1], vector_prefix=True)
  analytic = rollout_flops(CONFIG, n_q, counts, "continuous")
  assert abs(analytic - measured) / measured < 0.03, (analytic, measured)
  # And the continuous rollout costs less than writing the same sentences as tokens.
  assert analytic < generation_flops(CONFIG, n_q, sum(counts))
  assert forward_flops(CONFIG, 1, 0, 1) == pytest.approx(check, rel=0.03)


# ---- the pipeline -----------------------------------------------------------------------------

@pytest.mark.slow
def test_micro_pipeline_runs_resumes_and_prints_the_lens(tmp_path, capsys):
  from configs.sentence_lm import get_config
  from llmjax.experiments.sentence_lm.experiment import run
  config = get_config("tiny")
  config.task.update(train=64, dev=96, test=6)
  config.model.update(d_model=32, n_layers=2, n_heads=2, d_ff=64)
  for section in ("cot", "no_cot", "semantic", "ctx_b", "ctx_c", "latent"):
    config[section].train.update(steps=2, batch_size=16, eval_every=2, eval_batches=1,
                                 log_every=1, checkpoint_every=2, progress=False)
  config.latent.teachers = ("ctx_c",)
  config.autoencoders = ()  # ctx_c brings semantic
  config.inference.update(batch_size=8, max_new_tokens=8, noise=(0.0, 0.5))
  workdir = str(tmp_path / "run")
  summary = run(config, workdir)
  assert set(summary["methods"]) == {"no_cot", "cot", "ctx_c_discretized", "ctx_c_continuous"}
  assert set(summary["reconstruction_exact_match"]) == {"semantic", "ctx_c"}
  assert set(summary["noise_accuracy"]["ctx_c"]) == {"0.0", "0.5"}
  table = open(os.path.join(workdir, "evaluate", "table.md")).read()
  assert "| ctx_c_continuous |" in table and "| cot |" in table
  lens = open(os.path.join(workdir, "evaluate", "lens.txt")).read()
  assert "layer 1:" in lens and "step 1:" in lens
  # A second run skips every stage and prints the lens of the asked problem.
  config.lens_problem = 2
  capsys.readouterr()
  again = run(config, workdir)
  out = capsys.readouterr()
  assert "running" not in out.err and "test problem 2" in out.out
  assert json.loads(json.dumps(again)) == json.loads(json.dumps(summary))
  # The latent stage from a Hugging Face directory (here the CoT model exported): it and the
  # evaluation rerun, nothing before them.
  from llmjax.interop import save_hf
  from llmjax.parallel import Parallel
  from llmjax.weights import load_model
  cot = load_model(os.path.join(workdir, "cot"), Parallel.from_config({"data": -1}))
  save_hf(str(tmp_path / "hf"), cot.config, cot.params)
  config.latent.init = f"hf:{tmp_path / 'hf'}"
  config.lens_problem = -1
  run(config, workdir)
  err = capsys.readouterr().err
  assert "stage cot: done, skipped" in err and "stage latent_ctx_c: running" in err
  config.lens_problem = 99
  with pytest.raises(UserError, match="lens_problem = 99: the test split has 6 problems"):
    run(config, workdir)


def test_bad_teacher_is_refused(tmp_path):
  from configs.sentence_lm import get_config
  from llmjax.experiments.sentence_lm.experiment import run
  config = get_config("tiny")
  config.latent.teachers = ("ctx_d",)
  with pytest.raises(UserError, match="latent.teachers: 'ctx_d' is not one of"):
    run(config, str(tmp_path))
