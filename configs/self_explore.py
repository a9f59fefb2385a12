"""Self-Explore: first-pit step exploration and step-level DPO (experiment `self_explore`).

Presets (select with `--config configs/self_explore.py:PRESET`):

tiny (default) — the whole method at CPU scale on procedural multi-step word problems
  (llmjax.tasks.word_problems: GSM8K's format, calculator annotations, `The answer is N`):
  SFT a fresh byte-level model, sample N = 8 rationales per training problem, RFT, outcome
  pairs, explore the rejected rationales with k = 4 completions per step prefix, DPO on the
  outcome pairs and on the step-level pairs (beta 0.1, reference = the RFT model), and the
  greedy held-out accuracy of all four models. A resumable pipeline: W/sft, W/sample, W/rft,
  W/pairs, W/explore, W/dpo_outcome, W/self_explore, W/evaluate.
  python -m llmjax.main --config configs/self_explore.py --workdir runs/self_explore
  Runtime: 10 min 43 s end to end on host D (2-core Intel Xeon, docs/benchmarks.md,
  2026-12-02). First measurement (seed 0, untuned): SFT samples correct 33.5% (748 of 1,000
  problems have a correct one); RFT keeps 1,000 rows, i.e. nothing beyond the gold rationales,
  because on these problems every correct rationale has the gold one's equations and the
  signature deduplication drops it — so RFT equals SFT; 1,484 outcome pairs; 200 explored
  rejected rationales with first pits at step 1: 143, 2: 50, 3: 7; 193 step-level pairs.
  Held-out greedy accuracy (200 problems): SFT 0.365, RFT 0.365, outcome DPO 0.235,
  Self-Explore 0.300. SFT <= RFT <= Self-Explore does NOT hold at this scale: both DPO runs
  lose accuracy (lr 2e-5, beta 0.1, 150 steps of 16 pairs); Self-Explore loses less than
  outcome DPO. Not tuned yet.

gsm8k_hf — a local Hugging Face checkpoint and ../shared/data/gsm8k, the paper's N = 100,
  k = 4, DPO beta 0.1 (accelerator-sized; not run here):
  python -m llmjax.main --config configs/self_explore.py:gsm8k_hf --workdir W \\
      --config.init=hf:DIR
"""

import ml_collections

from llmjax.config_base import base_config, model_config, select_preset


def _tiny(config):
  # Sized for 2 CPU cores: sequences are at most 197 bytes; at d_model 128 and 4 layers one
  # SFT step of 32 x 224 tokens took 1.4 s on host D under load, far past the 15-minute budget.
  config.model = model_config(vocab_size=264, d_model=96, n_layers=3, n_heads=4, n_kv_heads=2,
                              d_ff=384, max_len=224)
  config.data.tokenizer = "byte"
  config.task.update(kind="word_problems", train_problems=1000, test_problems=500, samples=8,
                     explore_k=4, explore_pairs=600, max_new_tokens=112, sample_batch=256)
  config.sft.train.update(steps=600, batch_size=16, log_every=100, eval_every=300,
                          checkpoint_every=300, eval_batches=2, seq_len=208)
  config.sft.optim.update(lr=3e-3, warmup_steps=50, weight_decay=0.0)
  config.optim.update(lr=2e-5, warmup_steps=10, weight_decay=0.0)
  config.train.update(steps=150, batch_size=16, seq_len=208, log_every=25, eval_every=75,
                      checkpoint_every=150, eval_batches=2)


def _gsm8k_hf(config):
  config.task.update(kind="gsm8k", path="../shared/data/gsm8k", train_problems=0,
                     test_problems=0, samples=100, explore_k=4, explore_pairs=0,
                     max_new_tokens=384, sample_batch=64)
  config.sft.train.update(steps=3000, batch_size=64, seq_len=512, log_every=20,
                          eval_every=500, checkpoint_every=500, eval_batches=8)
  config.sft.optim.update(lr=1e-5, warmup_steps=100, weight_decay=0.0, schedule="linear")
  config.optim.update(lr=1e-6, warmup_steps=100, weight_decay=0.0, schedule="linear")
  config.train.update(steps=2000, batch_size=32, seq_len=768, log_every=10, eval_every=200,
                      checkpoint_every=500, eval_batches=8, grad_accum_steps=4)
  config.dpo.precompute_ref_logprobs = True


PRESETS = {"tiny": _tiny, "gsm8k_hf": _gsm8k_hf}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="self_explore")
  config.init = ""
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, d_ff=192)
  config.data = ml_collections.ConfigDict({"tokenizer": "", "loss_on_prompt": False})
  config.task = ml_collections.ConfigDict({
      # word_problems (procedural) | gsm8k (task.path/{train,test}.jsonl)
      "kind": "word_problems", "path": "", "seed": 0, "min_ops": 1, "max_ops": 3,
      # word_problems: write + and * in either operand order (several correct signatures)
      "swap_operands": True,
      "train_problems": 2000, "test_problems": 300,  # gsm8k: 0 = the whole split
      "samples": 8, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 96,
      "rft_per_problem": 8, "explore_k": 4, "explore_max_steps": 20,
      "explore_pairs": 400,  # 0 = every outcome training pair
      "explore_chunk": 64, "sample_batch": 256, "dev_share": 0.1, "progress": True,
  })
  # The SFT recipe (stages sft and rft); `train` and `optim` are the DPO stages'.
  config.sft = ml_collections.ConfigDict({"train": dict(config.train.to_dict()),
                                          "optim": dict(config.optim.to_dict())})
  config.dpo = ml_collections.ConfigDict({
      "loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0, "simpo_gamma": 0.5,
      "reference_free": False, "reference": "", "precompute_ref_logprobs": False})
  select_preset(preset, PRESETS, default="tiny")(config)
  return config
