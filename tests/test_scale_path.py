"""The scale path from a real bfloat16 checkpoint: a bf16 Hugging Face model made by
transformers is fine-tuned with float32 master weights (its weights move at a learning rate
below half a bf16 ulp, where bf16 parameters would not), the run records both dtypes, and
`python -m llmjax.export` writes it back as a bf16 Hugging Face directory transformers loads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, error_line, run_cli

pytestmark = pytest.mark.slow


def _hf():
  """(torch, transformers), imported by the first test that needs them rather than at
  collection, which every pytest-xdist worker does (3 s of torch each)."""
  return pytest.importorskip("torch"), pytest.importorskip("transformers")


def _bf16_llama(directory, family="Llama", **overrides):
  """A tiny model of `family` (Llama, Mistral, ...) saved by transformers in bfloat16, as most
  HF checkpoints are; its vocabulary holds the byte tokenizer's ids."""
  torch, transformers = _hf()
  torch.manual_seed(0)
  config = getattr(transformers, f"{family}Config")(
      hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, vocab_size=300, max_position_embeddings=1024,
      initializer_range=0.02, **overrides)
  model = getattr(transformers, f"{family}ForCausalLM")(config).to(torch.bfloat16)
  model.save_pretrained(directory)
  return {name: p.detach().float().numpy() for name, p in model.named_parameters()}


def _examples(path, n=64):
  rng = np.random.default_rng(0)
  with open(path, "w") as f:
    for _ in range(n):
      word = "".join(rng.choice(list("abcdef"), 5))
      f.write(json.dumps({"prompt": f"reverse {word}:", "completion": f" {word[::-1]}"}) + "\n")


def _sft(workdir, hf_dir, data, *overrides):
  return run_cli(["--config", "configs/sft.py", "--workdir", str(workdir),
                  f"--config.init=hf:{hf_dir}", "--config.data.tokenizer=byte",
                  f"--config.data.train={data}", f"--config.data.eval={data}",
                  "--config.train.steps=30",
                  "--config.train.batch_size=4", "--config.train.seq_len=32",
                  "--config.train.eval_every=30", "--config.train.checkpoint_every=30",
                  "--config.train.progress=False", "--config.optim.lr=1e-5",
                  "--config.optim.schedule=constant", "--config.optim.warmup_steps=0",
                  "--config.optim.weight_decay=0.0", *overrides])


def _trained_hf_weights(run, out):
  assert subprocess.run([sys.executable, "-m", "llmjax.export", str(run), str(out)], cwd=REPO,
                        capture_output=True, text=True, timeout=300).returncode == 0
  model = _hf()[1].AutoModelForCausalLM.from_pretrained(out)
  return model, {name: p.detach().float().numpy() for name, p in model.named_parameters()}


def _moved(before, after):
  """The share of non-norm weights that changed."""
  changed = total = 0
  for name, weights in before.items():
    if "norm" in name:
      continue
    changed += int(np.sum(after[name] != weights))
    total += weights.size
  return changed / total


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
  root = tmp_path_factory.mktemp("scale")
  before = _bf16_llama(root / "hf")
  _examples(root / "train.jsonl")
  result = _sft(root / "run", root / "hf", root / "train.jsonl")
  assert result.returncode == 0, result.stderr[-2000:]
  return root, before


def test_a_bf16_checkpoint_trains_with_float32_master_weights_and_exports_to_bf16(fine_tuned):
  root, before = fine_tuned
  torch = _hf()[0]
  config = json.loads((root / "run" / "config.json").read_text())
  assert (config["model"]["param_dtype"], config["model"]["dtype"]) == ("float32", "bfloat16")
  model, after = _trained_hf_weights(root / "run", root / "export")
  assert model.dtype == torch.bfloat16
  assert json.loads((root / "export" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  # 30 AdamW steps of about 1e-5 each: every weight moves in float32, and most still differ
  # from the checkpoint once written back in bf16
  assert _moved(before, after) > 0.5
  # the same run with bf16 parameters: an update below half an ulp is rounded away
  stuck = _sft(root / "bf16", root / "hf", root / "train.jsonl",
               "--config.model.param_dtype=bfloat16")
  assert stuck.returncode == 0, stuck.stderr[-2000:]
  _, after_bf16 = _trained_hf_weights(root / "bf16", root / "export_bf16")
  assert _moved(before, after_bf16) < 0.3 < _moved(before, after)
  # transformers runs the export
  tokens = torch.tensor([[1, 17, 33, 5, 9]])
  with torch.no_grad():
    assert torch.isfinite(model(tokens).logits).all()


def test_export_refuses_bad_input_in_one_line(fine_tuned, tmp_path, capsys):
  from llmjax.export import main as export
  root, _ = fine_tuned
  assert export([str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
  assert error_line(capsys).startswith(f"error: checkpoint {tmp_path / 'nothing'}: expected ")
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "keep.txt").write_text("x")
  assert export([str(root / "run"), str(tmp_path / "full")]) == 2
  assert error_line(capsys) == (f"error: {tmp_path / 'full'}: not empty; pass --overwrite to "
                                "replace it")
  assert os.listdir(tmp_path / "full") == ["keep.txt"]  # nothing half-written
  assert export([str(root / "run"), str(tmp_path / "out"), "--family", "gpt2"]) == 2
  assert error_line(capsys).startswith("error: cannot export to gpt2: the model has ")
  assert export([str(root / "run"), str(tmp_path / "out"), "--dtype", "int8"]) == 2
  assert error_line(capsys) == ("error: --dtype int8: expected one of ('bfloat16', 'float16', "
                                "'float32')")
  assert not (tmp_path / "out").exists()
  assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []
  # --overwrite replaces the directory whole, in the dtype asked for
  assert export([str(root / "run"), str(tmp_path / "full"), "--overwrite",
                 "--dtype", "float32"]) == 0
  assert "keep.txt" not in os.listdir(tmp_path / "full")
  assert json.loads((tmp_path / "full" / "config.json").read_text())["torch_dtype"] == (
      "float32")


@pytest.mark.rehearsal
def test_rehearsal_of_the_dpo_hf_preset_from_a_bf16_llama(fine_tuned, tmp_path):
  """configs/dpo.py:hf through the code path an accelerator run takes (an hf: bf16 start,
  float32 master weights, the reference's log-probs precomputed in micro-batches, 8
  accumulation steps), with only its sizes and step counts overridden."""
  root, _ = fine_tuned
  rng = np.random.default_rng(1)
  pairs = tmp_path / "pairs.jsonl"
  with open(pairs, "w") as f:
    for _ in range(24):
      word = "".join(rng.choice(list("abcdef"), 4))
      f.write(json.dumps({"prompt": f"reverse {word}:", "chosen": f" {word[::-1]}",
                          "rejected": f" {word}"}) + "\n")
  result = run_cli(["--config", "configs/dpo.py:hf", "--workdir", str(tmp_path / "dpo"),
                    f"--config.init=hf:{root / 'hf'}", "--config.data.tokenizer=byte",
                    f"--config.data.train={pairs}", f"--config.data.eval={pairs}",
                    "--config.train.steps=4", "--config.train.batch_size=8",
                    "--config.train.seq_len=32", "--config.train.eval_every=4",
                    "--config.train.checkpoint_every=4", "--config.train.eval_batches=1",
                    "--config.train.progress=False", "--config.optim.warmup_steps=1"])
  assert result.returncode == 0, result.stderr[-2000:]
  config = json.loads((tmp_path / "dpo" / "config.json").read_text())
  assert config["train"]["grad_accum_steps"] == 8 and config["dpo"]["precompute_ref_logprobs"]
  assert (config["model"]["param_dtype"], config["model"]["dtype"]) == ("float32", "bfloat16")
  assert (tmp_path / "dpo" / "reference_logprobs_train.npz").exists()
  summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
  assert summary["status"] == "completed"



def test_both_dtypes_are_honoured_for_every_kind_of_start(fine_tuned, tmp_path):
  """model.param_dtype and model.dtype for an hf: start, an llmjax run and a fresh model."""
  import jax
  import jax.numpy as jnp

  from llmjax.experiments.starting_point import starting_point
  from llmjax.main import load_config_file
  from llmjax.parallel import Parallel
  root, _ = fine_tuned
  parallel = Parallel.from_config({"data": -1})
  for init, tokenizer, dtype, param_dtype, expected in (
      (f"hf:{root / 'hf'}", "byte", "", "float32", ("bfloat16", "float32")),  # the checkpoint's
      (f"hf:{root / 'hf'}", "byte", "float32", "bfloat16", ("float32", "bfloat16")),
      (str(root / "run"), "", "bfloat16", "float32", ("bfloat16", "float32")),
      ("", "byte", "", "float32", ("float32", "float32"))):
    config = load_config_file(os.path.join(REPO, "configs", "sft.py"))
    config.init, config.data.tokenizer = init, tokenizer
    config.model.dtype, config.model.param_dtype = dtype, param_dtype
    start = starting_point(config, parallel)
    assert (start.model_config.dtype, start.model_config.param_dtype) == expected, init
    if start.params is not None:
      assert {x.dtype for x in jax.tree.leaves(start.params)} == {jnp.dtype(expected[1])}
