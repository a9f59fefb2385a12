"""Knowledge entropy against an independent computation from transformers' own activations,
resuscitation as an exact pytree transform, and the pass on a sharded mesh."""

import json
import pathlib

import jax
import numpy as np
import pytest

from llmjax.errors import UserError
from llmjax.experiments.knowledge_entropy.entropy import (KnowledgeEntropyProbe, layer_entropy,
                                                          max_knowledge_entropy, resuscitate)
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.weights import load_model

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 300
DOCUMENTS = [list(np.random.default_rng(n).integers(3, VOCAB, size=n)) for n in
             (9, 33, 17, 4, 70, 21, 50)]


def _hf_checkpoint(directory, family: str):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  layers = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, vocab_size=VOCAB, initializer_range=0.2)
  config = {"llama": transformers.LlamaConfig(**layers, num_key_value_heads=2),
            "olmo": transformers.OlmoConfig(**layers, pad_token_id=1, eos_token_id=2),
            "olmo2": transformers.Olmo2Config(**layers, num_key_value_heads=2, pad_token_id=1,
                                              eos_token_id=2)}[family]
  model_class = {"llama": transformers.LlamaForCausalLM, "olmo": transformers.OlmoForCausalLM,
                 "olmo2": transformers.Olmo2ForCausalLM}[family]
  torch.manual_seed(0)
  model = model_class(config).eval()
  model.save_pretrained(directory)
  return model


def _transformers_layer_entropy(model, documents) -> np.ndarray:
  """NumPy from hooks on each layer's down projection: mean |input| over all tokens of all
  documents (each run alone, so no padding), normalised per layer, -sum p ln p."""
  import torch
  sums = [np.zeros(model.config.intermediate_size) for _ in model.model.layers]

  def accumulate(n):
    def hook(module, args):
      sums[n] += args[0].abs().double().sum((0, 1)).numpy()
    return hook
  hooks = [layer.mlp.down_proj.register_forward_pre_hook(accumulate(n))
           for n, layer in enumerate(model.model.layers)]
  with torch.no_grad():
    for doc in documents:
      model(torch.tensor([doc]))
  for hook in hooks:
    hook.remove()
  tokens = sum(len(d) for d in documents)
  p = np.stack(sums) / tokens
  p = p / p.sum(-1, keepdims=True)
  return -(p * np.log(p)).sum(-1)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "olmo", "olmo2"])
def test_entropy_matches_transformers_activations(family, tmp_path):
  model = _hf_checkpoint(tmp_path, family)
  expected = _transformers_layer_entropy(model, DOCUMENTS)
  parallel = Parallel.from_config({"data": 1})
  loaded = load_model(f"hf:{tmp_path}", parallel)
  probe = KnowledgeEntropyProbe(loaded.config, parallel, batch_size=4, length_bucket=16)
  stats = probe.coefficient_stats(loaded.params, DOCUMENTS)
  assert stats.positions == sum(len(d) for d in DOCUMENTS)
  np.testing.assert_allclose(stats.layer_entropy_N, expected, rtol=0, atol=1e-5)
  assert abs(stats.knowledge_entropy - expected.sum()) < 1e-5
  assert stats.knowledge_entropy < max_knowledge_entropy(3, 96)
  np.testing.assert_allclose(stats.distributions_NxF.sum(-1), 1.0, atol=1e-12)
  # The authors' variant counts the pad positions of each batch as well: a different figure.
  padded = probe.coefficient_stats(loaded.params, DOCUMENTS, include_padding=True)
  assert padded.positions > stats.positions
  assert np.abs(padded.layer_entropy_N - expected).max() > 1e-4


def test_layer_entropy_by_hand():
  c = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 0.0]])
  np.testing.assert_allclose(layer_entropy(c), [np.log(4), -(0.5 * np.log(0.5)
                                                              + 2 * 0.25 * np.log(0.25))])
  with pytest.raises(UserError, match="all zero"):
    layer_entropy(np.zeros((1, 3)))


TINY = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=128)


def _tiny_params(config=TINY, seed=0):
  import flax.linen as nn
  from llmjax.models import Decoder
  parallel = Parallel.from_config({"data": 1})
  params = nn.unbox(Decoder(config).init(jax.random.PRNGKey(seed),
                                         np.zeros((1, 4), np.int32))["params"])
  return params, parallel


@pytest.mark.parametrize("scan_layers", [False, True])
def test_resuscitation_scales_low_memories_and_nothing_else(scan_layers):
  import dataclasses
  config = dataclasses.replace(TINY, scan_layers=scan_layers)
  params, parallel = _tiny_params(config)
  probe = KnowledgeEntropyProbe(config, parallel, batch_size=4, length_bucket=16)
  stats = probe.coefficient_stats(params, DOCUMENTS)
  c = stats.mean_coefficients_NxF
  new, counts = resuscitate(params, c, quantile=0.5, multiplier=2.0)
  assert list(counts) == [32, 32]
  flat_old = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  flat_new = dict(jax.tree_util.tree_flatten_with_path(new)[0])
  changed = [jax.tree_util.keystr(k) for k in flat_old
             if not np.array_equal(flat_old[k], flat_new[k])]
  assert changed and all("up" in k and "kernel" in k for k in changed)
  up = (lambda p, n: np.asarray(p["layers"]["block"]["mlp"]["up"]["kernel"][n])) if scan_layers \
      else (lambda p, n: np.asarray(p[f"layer_{n}"]["mlp"]["up"]["kernel"]))
  for n in range(2):
    low = c[n] <= np.median(c[n])
    u = c[n].mean() / c[n] * 2.0
    np.testing.assert_array_equal(up(new, n)[:, ~low], up(params, n)[:, ~low])
    np.testing.assert_allclose(up(new, n)[:, low], up(params, n)[:, low] * u[low], rtol=1e-6)
  # The first layer's coefficients (its input is unchanged) grow by exactly u where scaled.
  after = probe.coefficient_stats(new, DOCUMENTS).mean_coefficients_NxF[0]
  low = c[0] <= np.median(c[0])
  np.testing.assert_allclose(after[low], c[0][low] * (c[0].mean() / c[0][low] * 2.0), rtol=1e-4)
  np.testing.assert_allclose(after[~low], c[0][~low], rtol=1e-6)
  with pytest.raises(UserError, match="quantile = 0"):
    resuscitate(params, c, quantile=0.0)
  with pytest.raises(UserError, match="do not match"):
    resuscitate(params, c[:, :10])


def test_probe_rejects_bad_corpora():
  params, parallel = _tiny_params()
  probe = KnowledgeEntropyProbe(TINY, parallel, batch_size=4, length_bucket=16)
  with pytest.raises(UserError, match="no documents"):
    probe.coefficient_stats(params, [])
  with pytest.raises(UserError, match="document 2 has no tokens"):
    probe.coefficient_stats(params, [[5, 6], []])


CORPUS_TEXT = "\n\n".join(
    ["the red fox sees a small dog. 17 plus 25 is 42.", "count: 4 5 6 7 8.",
     "a quiet bird hears the old river. 30 minus 12 is 18. " * 3, "the lazy cat likes a tree.",
     "a green house. count: 10 11 12 13 14 15 16."] * 3)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
  """A tiny pretraining run with checkpoints at steps 10 and 20."""
  from conftest import run_cli, tiny_args
  workdir = tmp_path_factory.mktemp("pretrain")
  result = run_cli(tiny_args(workdir, "--config.train.steps=20", "--config.train.log_every=10",
                             "--config.train.eval_every=20", "--config.train.checkpoint_every=10",
                             "--config.train.keep_checkpoints=5"))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _measure(workdir, checkpoints, corpus, devices=1, *extra):
  from conftest import run_cli
  return run_cli(["--config", "configs/knowledge_entropy.py", "--workdir", str(workdir),
                  f"--config.checkpoints={checkpoints}", f"--config.corpus={corpus}",
                  "--config.progress=False", "--config.batch_size=4",
                  "--config.length_bucket=32", *extra], devices=devices)


@pytest.mark.slow
def test_cli_measures_a_series_resumes_and_matches_on_eight_devices(pretrained_run, tmp_path):
  from conftest import read_jsonl
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(CORPUS_TEXT)
  workdir = tmp_path / "entropy"
  result = _measure(workdir, pretrained_run, corpus)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows] == [10, 20]
  assert all(len(r["layer_entropy"]) == 2 and 0 < r["knowledge_entropy"] < 2 * np.log(192)
             for r in rows)
  assert rows[0]["knowledge_entropy"] != rows[1]["knowledge_entropy"]
  assert rows[0]["documents"] == 15
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["knowledge_entropy"] == rows[-1]["knowledge_entropy"]
  assert (workdir / "plots" / "knowledge_entropy.png").stat().st_size > 0
  saved = np.load(workdir / rows[1]["coefficients"])
  np.testing.assert_allclose(-(saved["distributions"] * np.log(saved["distributions"])).sum(-1),
                             rows[1]["layer_entropy"], atol=1e-9)
  # A rerun measures nothing again; a new checkpoint spec adds its row only.
  before = (workdir / "metrics.jsonl").read_text()
  again = _measure(workdir, pretrained_run, corpus)
  assert again.returncode == 0 and (workdir / "metrics.jsonl").read_text() == before
  assert "knowledge entropy" not in again.stdout
  # The series is of one corpus: a rerun on another is refused, its rows untouched.
  other = tmp_path / "other.txt"
  other.write_text(CORPUS_TEXT.upper())
  refused = _measure(workdir, pretrained_run, other)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1] == (
      f"error: workdir {workdir} holds a run with other settings (corpus = \"{corpus}\" there, "
      f"\"{other}\" now); a resume would mix two histories: use a new --workdir")
  assert (workdir / "metrics.jsonl").read_text() == before
  # The same series on 8 devices: data 2 x fsdp 2 x tensor 2.
  sharded = tmp_path / "sharded"
  result = _measure(sharded, f"{pretrained_run}/checkpoints/*", corpus, 8,
                    "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")
  assert result.returncode == 0, result.stderr[-3000:]
  for one, eight in zip(rows, read_jsonl(sharded / "metrics.jsonl"), strict=True):
    assert one["step"] == eight["step"]
    np.testing.assert_allclose(eight["layer_entropy"], one["layer_entropy"], rtol=0, atol=1e-5)


def test_cli_names_bad_checkpoint_specs(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(CORPUS_TEXT)
  result = _measure(tmp_path / "w", str(tmp_path / "nothing*"), corpus)
  assert result.returncode == 2 and "matches nothing" in result.stderr
  result = _measure(tmp_path / "w", str(tmp_path), corpus)
  assert result.returncode == 2 and "is not hf:DIR, an llmjax run" in result.stderr


def test_cli_resuscitation_writes_an_hf_checkpoint_with_only_the_low_rows_scaled(tmp_path):
  from safetensors.numpy import load_file
  source = tmp_path / "hf"
  _hf_checkpoint(source, "llama")
  corpus = tmp_path / "corpus.jsonl"
  rng = np.random.default_rng(0)
  corpus.write_text("".join(json.dumps({"text": " ".join(
      str(x) for x in rng.integers(0, 99, size=12))}) + "\n" for _ in range(6)))
  workdir = tmp_path / "w"
  result = _measure(workdir, f"hf:{source}", corpus, 1, "--config.mode=resuscitate",
                    "--config.resuscitation.format=hf", "--config.resuscitation.multiplier=2",
                    "--config.tokenizer=byte")
  assert result.returncode == 0, result.stderr[-3000:]
  before = load_file(next(source.glob("*.safetensors")))
  after = load_file(next((workdir / "resuscitated_hf").glob("*.safetensors")))
  c = np.load(workdir / "before" / "coefficients" / "0.npz")["mean_coefficients"]
  assert set(before) == set(after)
  for name in before:
    if ".mlp.up_proj." not in name:
      np.testing.assert_array_equal(after[name], before[name], err_msg=name)
      continue
    n = int(name.split(".")[2])
    low = c[n] <= np.quantile(c[n], 0.5)
    u = c[n].mean() / c[n] * 2.0
    np.testing.assert_array_equal(after[name][~low], before[name][~low])
    np.testing.assert_allclose(after[name][low], before[name][low] * u[low, None], rtol=1e-6)
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["scaled_memories"] == [48, 48, 48]
  assert summary["knowledge_entropy_after"] > summary["knowledge_entropy_before"]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "fictional_knowledge").is_dir(),
                    reason="../shared/data/fictional_knowledge is absent")
@pytest.mark.trains
def test_cli_injects_from_each_checkpoint_with_its_entropy(pretrained_run, tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n\n".join([CORPUS_TEXT] * 5))
  workdir = tmp_path / "inject"
  extra = ["--config.mode=inject", "--config.data.corpus=text", f"--config.data.path={corpus}",
           f"--config.data.eval_path={corpus}", "--config.injection.injections=1",
           "--config.injection.interval=5", "--config.injection.paraphrased_items=1",
           "--config.injection.once_per_injection=1", "--config.injection.rows_per_step=16",
           "--config.train.steps=5", "--config.train.eval_every=5", "--config.train.seq_len=128",
           "--config.train.batch_size=16", "--config.train.eval_batches=1",
           "--config.train.progress=False"]
  checkpoints = f"{pretrained_run}/checkpoints/10,{pretrained_run}/checkpoints/20"
  result = _measure(workdir, checkpoints, corpus, 1, *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  table = json.loads((workdir / "summary.json").read_text())["table"]
  entropy = {r["checkpoint"]: r["knowledge_entropy"]
             for r in map(json.loads, (workdir / "entropy" / "metrics.jsonl").read_text()
                          .splitlines())}
  assert [r["step"] for r in table] == [10, 20]
  for row in table:
    assert row["knowledge_entropy"] == entropy[row["checkpoint"]]
    assert np.isfinite([row["acquisition"], row["forgetting"]]).all()
    assert set(k for k in row if k.startswith("acquisition_")) == {
        f"acquisition_{d}_{k}" for d in ("paraphrase70", "once60")
        for k in ("mem", "gen", "hard_gen")}
  assert (workdir / "plots" / "retention_1.png").stat().st_size > 0
  again = _measure(workdir, checkpoints, corpus, 1, *extra)
  assert again.returncode == 0
  assert json.loads((workdir / "summary.json").read_text())["table"] == table


def test_the_pass_computes_no_logits():
  """XLA drops the unembedding: no [B, L, V] value in the compiled program, while the same
  forward pass that returns its logits has one."""
  import jax.numpy as jnp
  from llmjax.models import Decoder
  params, parallel = _tiny_params()
  probe = KnowledgeEntropyProbe(TINY, parallel, batch_size=4, length_bucket=16)
  tokens = jnp.ones((4, 16), jnp.int32)
  with parallel.context():
    hlo = probe._accumulate(16).jitted.lower(
        params, jnp.zeros((2, 64)), tokens, tokens, jnp.ones((4, 16))).compile().as_text()
  logits_hlo = jax.jit(lambda p, t: Decoder(TINY).apply({"params": p}, t)).lower(
      params, tokens).compile().as_text()
  assert "[4,16,300]" in logits_hlo
  assert "[4,16,300]" not in hlo
  assert "[4,16,64]" in hlo  # the FFN coefficients are computed


def test_cli_stops_on_an_empty_document_with_its_line(pretrained_run, tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text('{"text": "the red fox."}\n{"text": "  "}\n')
  result = _measure(tmp_path / "w", pretrained_run, corpus)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].endswith(
      "corpus.jsonl:2: empty 'text': a document needs text")
  assert not (tmp_path / "w" / "metrics.jsonl").exists()
