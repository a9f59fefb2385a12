"""Preference training on the engine: pair data, the objective's log-probs against the scorer,
the reference on the fly or precomputed, bco_pair's carry, and 8 devices against 1."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, xla_flags
from llmjax.config_base import base_config
from llmjax.data.examples import pair_batch, read_examples
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.errors import DataError
from llmjax.infer import Scorer
from llmjax.models import Decoder, ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.dpo import (preference_objective, reference_logprobs, sequence_logps,
                              with_reference)
from llmjax.train.preference import PreferenceLoss
from llmjax.train.trainer import Trainer

MODEL = ModelConfig(vocab_size=264, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64)
LENGTH = 24
PAIRS = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"},
         {"prompt": "3+4=", "chosen": "7", "rejected": "8 or so"},
         {"prompt": "a longer prompt: 1+1=", "chosen": "2", "rejected": "11"},
         {"prompt": "9-3=", "chosen": "6", "rejected": "three"}]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
  return read_examples(str(path), ByteTokenizer(), LENGTH + 1, ("chosen", "rejected"))


def make_trainer(loss: PreferenceLoss, precomputed: bool = False, optimizer: str = "adamw",
                 grad_accum_steps: int = 1, loss_chunk_len: int = 0):
  config = base_config("dpo")
  config.train.update(steps=10, batch_size=4, seq_len=LENGTH, progress=False,
                      grad_accum_steps=grad_accum_steps)
  config.optim.update(name=optimizer, lr=3e-3, warmup_steps=0, schedule="constant")
  model = Decoder(MODEL)
  return Trainer(model, preference_objective(model, loss, precomputed, loss_chunk_len),
                 config.train,
                 config.optim, Parallel.from_config(config.mesh))


def test_pair_rows_tokenize_with_the_loss_on_completions_only(pairs, tmp_path):
  tok = ByteTokenizer()
  assert pairs.prompts[0] == [tok.bos_id] + tok.encode("2+2=")
  assert pairs.completions[1][1] == tok.encode("8 or so") + [tok.eos_id]
  batch = pair_batch(pairs, [0, 2], LENGTH, tok.pad_id)
  row = list(batch["chosen_targets"][0][batch["chosen_loss_mask"][0] == 1])
  assert row == tok.encode("4") + [tok.eos_id]  # the completion and its EOS, nothing else
  assert batch["rejected_segment_ids"][1].sum() == len(pairs.prompts[2]) + 3 - 1
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "x", "chosen": "y", "rejected": "z"}\n{"prompt": "x", "chosen": 3, '
                 '"rejected": "z"}\n')
  with pytest.raises(DataError, match=f"{bad}:2: field 'chosen' must be a string"):
    read_examples(str(bad), tok, LENGTH + 1, ("chosen", "rejected"))


def test_long_pairs_lose_the_start_of_the_prompt_and_are_counted(tmp_path):
  path = tmp_path / "long.jsonl"
  path.write_text(json.dumps({"prompt": "p" * 30, "chosen": "c", "rejected": "r"}) + "\n")
  tok = ByteTokenizer()
  long = read_examples(str(path), tok, 10, ("chosen", "rejected"))
  assert long.truncated == 2 and len(long.prompts[0]) + 2 == 10
  assert long.prompts[0] == tok.encode("p" * 8)  # the prompt's end is kept (BOS cut away)


def test_objective_log_probs_equal_the_scorers_and_the_first_loss_is_log_2(pairs):
  trainer = make_trainer(PreferenceLoss("sigmoid", beta=0.5))
  state = trainer.init_state(0)
  reference = jax.tree.map(jnp.copy, state.params)
  batch = trainer.to_device(pair_batch(pairs, range(4), LENGTH, 0))
  _, logps, counts = sequence_logps(trainer.model, state.params, batch)
  scores = Scorer(MODEL, batch_size=4, length_bucket=8).score_ids(
      state.params, [(pairs.prompts[i], pairs.completions[k][i]) for k in (0, 1)
                     for i in range(4)])
  np.testing.assert_allclose(logps, [s.logprob for s in scores], rtol=1e-5)
  assert list(counts) == [len(pairs.completions[k][i]) for k in (0, 1) for i in range(4)]
  state, metrics = trainer.train_step(state, batch, reference)
  # Policy == reference at step 0: every reward is 0 and each pair's loss is log 2.
  np.testing.assert_allclose(metrics["loss"], np.log(2.0), rtol=1e-6)
  assert float(metrics["reward_margin"]) == 0.0 and float(metrics["kl"]) == 0.0
  for _ in range(15):
    state, metrics = trainer.train_step(state, batch, reference)
  assert float(metrics["reward_accuracy"]) == 1.0 and float(metrics["reward_margin"]) > 0
  assert float(metrics["kl"]) > 0


def test_precomputed_reference_trains_exactly_like_frozen_params(pairs):
  # SGD: Adam's division by sqrt(v) would blow float noise in near-zero gradients up.
  loss = PreferenceLoss("ipo", beta=0.5)
  on_the_fly = make_trainer(loss, optimizer="sgd")
  precomputed = make_trainer(loss, precomputed=True, optimizer="sgd")
  state_a, state_b = on_the_fly.init_state(0), precomputed.init_state(0)
  reference = jax.tree.map(jnp.copy, state_a.params)
  host = pair_batch(pairs, range(4), LENGTH, 0)
  # Batches of 3 over 4 pairs: the last one is partial.
  ref = reference_logprobs(precomputed.model, reference, pairs, 3, LENGTH, 0,
                           on_the_fly.to_device, on_the_fly.parallel)
  for _ in range(3):
    state_a, metrics_a = on_the_fly.train_step(state_a, on_the_fly.to_device(host), reference)
    state_b, metrics_b = precomputed.train_step(state_b,
                                                precomputed.to_device(with_reference(host, ref)))
  np.testing.assert_allclose(metrics_b["loss"], metrics_a["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state_a.params,
               state_b.params)


@pytest.mark.slow
def test_reference_and_evaluation_passes_in_micro_batches_equal_the_whole_batch(pairs):
  """The memory-bounded passes: the reference log-probs and the evaluation sums, two pairs'
  rows at a time (the training step's micro-batches), equal the whole batch's."""
  loss = PreferenceLoss("sigmoid", beta=0.1)
  whole, micro = make_trainer(loss), make_trainer(loss, grad_accum_steps=2)
  params = whole.init_state(0).params
  ref_whole = reference_logprobs(whole.model, params, pairs, 4, LENGTH, 0, whole.to_device,
                                 whole.parallel)
  ref_micro = reference_logprobs(micro.model, params, pairs, 4, LENGTH, 0, micro.to_device,
                                 micro.parallel, micro_batches=2)
  assert ref_whole.shape == (len(pairs), 2) and np.all(ref_whole < 0)
  np.testing.assert_allclose(ref_micro, ref_whole, rtol=1e-6)
  reference = jax.tree.map(jnp.copy, params)
  shifted = jax.tree.map(lambda x: x * 1.01, params)  # a policy apart from the reference
  batch = pair_batch(pairs, range(4), LENGTH, 0)
  got = micro.evaluate(shifted, [micro.to_device(batch)], reference)
  want = whole.evaluate(shifted, [whole.to_device(batch)], reference)
  assert set(got) == set(want) and want["reward_margin"] != 0
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_log_probs_taken_a_few_positions_at_a_time_equal_the_whole_sequences(pairs):
  """train.loss_chunk_len: the completion log-probs, their gradients, the KL metric and a
  training step, 5 positions at a time (24 is not a multiple: the last chunk is padded), equal
  the whole-logits computation."""
  loss = PreferenceLoss("sigmoid", beta=0.1)
  whole, chunked = make_trainer(loss), make_trainer(loss, loss_chunk_len=5)
  state_a, state_b = whole.init_state(0), chunked.init_state(0)
  reference = jax.tree.map(lambda x: x * 0.99, state_a.params)
  batch = pair_batch(pairs, range(4), LENGTH, 0)

  def logps_and_grads(chunk_len):
    def total(params):
      logps = sequence_logps(whole.model, params, batch, None, chunk_len)[1]
      return (logps * jnp.arange(1.0, logps.shape[0] + 1)).sum(), logps  # rows weighted apart
    return jax.value_and_grad(total, has_aux=True)(state_a.params)

  (_, logps_whole), grads_whole = logps_and_grads(0)
  (_, logps_chunked), grads_chunked = logps_and_grads(5)
  np.testing.assert_allclose(logps_chunked, logps_whole, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
               grads_chunked, grads_whole)
  for _ in range(2):
    state_a, metrics_a = whole.train_step(state_a, whole.to_device(batch), reference)
    state_b, metrics_b = chunked.train_step(state_b, chunked.to_device(batch), reference)
  assert float(metrics_a["kl"]) > 0
  for key in ("loss", "kl", "reward_margin", "chosen_logps"):
    np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-4, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), state_a.params,
               state_b.params)


def test_bco_pair_carries_the_running_mean_of_batch_rewards(pairs):
  trainer = make_trainer(PreferenceLoss("bco_pair", beta=0.5))
  state = trainer.init_state(0)
  reference = jax.tree.map(jnp.copy, state.params)
  batch = trainer.to_device(pair_batch(pairs, range(4), LENGTH, 0))
  means = []  # each step's mean reward over both completions of every pair
  for _ in range(3):
    state, metrics = trainer.train_step(state, batch, reference)
    means.append((float(metrics["chosen_reward"]) + float(metrics["rejected_reward"])) / 2)
  assert float(state.carry["count"]) == 3.0
  np.testing.assert_allclose(state.carry["mean"], np.mean(means), rtol=1e-5, atol=1e-7)


EIGHT_DEVICES = """
import json, jax, jax.numpy as jnp, numpy as np
from llmjax.config_base import base_config
from llmjax.data.examples import pair_batch, read_examples
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.models import Decoder, ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.dpo import preference_objective
from llmjax.train.preference import PreferenceLoss
from llmjax.train.trainer import Trainer
pairs = read_examples({path!r}, ByteTokenizer(), 25, ("chosen", "rejected"))
model = Decoder(ModelConfig(vocab_size=264, d_model=32, n_layers=2, n_heads=2, n_kv_heads=2,
                            d_ff=64))
losses = {{}}
for name, mesh, devices in (("one", dict(data=1, fsdp=1, tensor=1), jax.devices()[:1]),
                            ("eight", dict(data=2, fsdp=2, tensor=2), jax.devices())):
  config = base_config("dpo")
  config.train.update(steps=3, batch_size=4, seq_len=24)
  trainer = Trainer(model, preference_objective(model, PreferenceLoss("sigmoid", beta=0.5)),
                    config.train, config.optim, Parallel.from_config(mesh, devices=devices))
  state = trainer.init_state(0)
  reference = jax.tree.map(jnp.copy, state.params)
  batch = trainer.to_device(pair_batch(pairs, range(4), 24, 0))
  values = []
  for _ in range(3):
    state, metrics = trainer.train_step(state, batch, reference)
    values.append(float(metrics["loss"]))
  losses[name] = values
print(json.dumps(losses))
"""


@pytest.mark.slow
def test_a_dpo_step_on_8_devices_equals_1_device(tmp_path):
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
  result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES.format(path=str(path))],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ,
                               "XLA_FLAGS": xla_flags(8)})
  assert result.returncode == 0, result.stderr[-2000:]
  losses = json.loads(result.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(losses["eight"], losses["one"], rtol=1e-5)
  assert losses["one"][0] == pytest.approx(np.log(2.0), rel=1e-6)


SMALL = ("--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=1", "--config.model.d_ff=64", "--config.train.progress=False")


def test_a_malformed_pair_row_stops_the_cli_with_its_file_and_line(tmp_path):
  from conftest import run_cli
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps(PAIRS[0]) + "\n" + '{"prompt": "1+1=", "chosen": "2"}\n')
  result = run_cli(["--config", "configs/dpo.py:hf", "--workdir", str(tmp_path / "run"), *SMALL,
                    "--config.data.tokenizer=byte", f"--config.data.train={bad}",
                    f"--config.data.eval={bad}"])
  assert result.returncode == 2
  assert f"{bad}:2: field 'rejected' must be a string" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.trains
def test_tiny_preset_meets_its_targets_and_a_rerun_skips_every_stage(tmp_path):
  """The tiny preset as shipped: pairs are verified (chosen right, rejected wrong), held-out
  reward accuracy is above 0.9, the DPO policy's greedy accuracy beats the SFT policy's, and a
  rerun does no work. It is first stopped by the run's `train.stop_after_steps=5`, which every
  stage obeys: 5 steps into its SFT stage (trained under `sft.train`), which is not marked done;
  the full run resumes SFT there, runs every later stage and meets the targets."""
  from conftest import read_jsonl, run_cli
  from llmjax.experiments.preference import sorting
  args = ["--config", "configs/dpo.py:tiny", "--workdir", str(tmp_path / "run"),
          "--config.sft.train.progress=False", "--config.train.progress=False"]
  stopped = run_cli([*args, "--config.train.stop_after_steps=5"], timeout=600)
  assert stopped.returncode == 0, stopped.stderr[-3000:]
  assert "stage sft: stopped at step 5, not done" in stopped.stderr
  assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {
      "status": "stopped", "stopped_early": True, "stage": "sft", "step": 5}
  assert not (tmp_path / "run" / "sft" / "done.json").exists()
  assert not (tmp_path / "run" / "pairs").exists()  # no later stage ran
  result = run_cli(args, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "stage sft: done, skipped" not in result.stderr
  assert "resuming from step 5" in result.stderr
  rows = read_jsonl(tmp_path / "run" / "pairs" / "train_pairs.jsonl")
  assert rows and all(sorting.is_correct(r["prompt"], r["chosen"])
                      and not sorting.is_correct(r["prompt"], r["rejected"]) for r in rows)
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["train_pairs"] == len(rows) and summary["steps"] == 150
  assert summary["eval_reward_accuracy"] > 0.9
  assert summary["dpo_task_accuracy"] > summary["sft_task_accuracy"]
  again = run_cli(args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("done, skipped") == 4
