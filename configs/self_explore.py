"""Self-Explore: first-pit step exploration and step-level DPO (experiment `self_explore`).

Presets (select with `--config configs/self_explore.py:PRESET`):

tiny (default) — the whole method at CPU scale on procedural multi-step word problems
  (llmjax/experiments/self_explore/word_problems.py: GSM8K's format, calculator annotations,
  `The answer is N`):
  SFT a fresh byte-level model, sample N = 8 rationales per training problem, RFT, outcome
  pairs, explore the rejected rationales with k = 4 completions per step prefix, DPO on the
  outcome pairs and on the step-level pairs (beta 0.1, reference = the RFT model), and the
  greedy held-out accuracy of all four models. A resumable pipeline: W/sft, W/sample, W/rft,
  W/pairs, W/explore, W/dpo_outcome, W/self_explore, W/evaluate.
  python -m llmjax.main --config configs/self_explore.py --workdir runs/self_explore
  Runtime: 10 min 25 s end to end on host D (2-core Intel Xeon, docs/benchmarks.md,
  2026-12-03, seed 0; 13-18 min for seeds 1-2, which ran beside other 2-core jobs).
  Word problems write + and * in either operand order (`task.swap_operands`), so a problem has
  several correct equation signatures and RFT keeps the model's own rationales beside the gold
  ones (1,147-1,202 rows from 1,000 problems; with one fixed order it kept only the 1,000 gold
  rationales and RFT equalled SFT). Held-out greedy accuracy on 500 problems, three seeds
  (seed = task.seed = 0, 1, 2):
                   SFT    RFT    outcome DPO   Self-Explore
    seed 0        0.386  0.362     0.362         0.376
    seed 1        0.218  0.312     0.286         0.304
    seed 2        0.292  0.274     0.266         0.292
    mean          0.299  0.316     0.305         0.324
  Counts (seed 0): SFT samples correct 35.3%, 759 of 1,000 problems with a correct one; 1,553
  outcome pairs; 600 explored rejected rationales with first pits at step 1: 444, 2: 124,
  3: 32; 559 step-level pairs. SFT <= RFT <= Self-Explore holds for the means but not seed by
  seed (RFT < SFT in seeds 0 and 2; Self-Explore < RFT in seed 1), and the gaps (1-2 points)
  are smaller than the spread of SFT across seeds (0.218-0.386): at this scale the ordering
  is not resolved. Self-Explore beats outcome DPO in all three seeds (+1.4, +1.8, +2.6 points).
  What was tried: the first version (200 held-out problems, 200 explored pairs, one operand
  order) gave SFT 0.365, RFT 0.365, outcome DPO 0.235, Self-Explore 0.300; more explored pairs
  (step pairs 193 -> 559, so 4 instead of 12 epochs of DPO) and a larger held-out set removed
  the DPO losses. Why not more: a 0.47M-parameter byte model's errors are mostly arithmetic
  slips whose position is random, and SFT itself varies by 17 points across seeds; resolving
  1-2 point effects would take tens of seeds (about 10 minutes each) or a larger model.

gsm8k_hf — the paper's GSM8K run from a local Hugging Face checkpoint (Mistral-7B in the paper)
  and ../shared/data/gsm8k, sized as the authors' released scripts size it (accelerator-sized;
  rehearsed on CPU at toy sizes, not run at this size here):
  python -m llmjax.main --config configs/self_explore.py:gsm8k_hf --workdir W \
      --config.init=hf:DIR
  Sizes in the paper's units: SFT 5 epochs over GSM8K's 7,473 training problems, global batch
  64, lr 1e-6 (the authors' value for Mistral; 1e-5 for their other models), linear decay, no
  warmup, no weight decay, gradient clipping 1.0; RFT the same 5 epochs over the RFT rows;
  N = 100 samples per problem at temperature 0.7; exploration k = 4 per step prefix; each DPO
  run (outcome pairs, then Self-Explore's step-level pairs) 3 epochs, global batch 32, lr 1e-7
  (Mistral's; 1e-6 for others), RMSprop as the authors' HF Trainer runs it, linear decay after
  10% warmup, beta 0.1, sequences of 384 tokens. Steps follow from the data (`train.epochs`).
  Departures: SFT rows are packed (several examples per 512-token row, never attending across
  examples) where the authors pad one example per row: the same epochs, fewer steps; float32
  master weights (theirs: DeepSpeed ZeRO's, also float32).
  Runtime estimate on one H200 (bf16, 40% MFU for training, bandwidth-bound decoding; an
  estimate from FLOPs and memory bandwidth, not measured), for a 7.2B model at ~200 tokens
  per problem with its rationale:
    SFT       5 x 1.5M tokens x 6 x 7.2e9 FLOPs = 3.2e17     ~15 min
    sample    7,473 x 100 x ~150 new tokens = 1.1e8 tokens, batch 64: ~21k tokens/s  ~1.5 h
    RFT       ~4 rows per problem: 4x SFT                    ~1 h
    explore   rejected rationales x ~4 steps x 4 completions (~1e7 tokens)    ~10-20 min
    DPO x 2   ~20k pairs x 3 epochs x 2 x 300 tokens, policy + precomputed reference
                                                             ~1.5 h each
  Weakest where the counts are data-dependent (RFT rows, pairs, first pits: the pipeline
  prints them) and in the decode rate, which grows with batch size while the KV cache fits.
  Memory: 7.2B float32 params, gradients and optimizer state are ~87 GB (AdamW's two moments:
  ~115 GB), so shard over several chips (`--config.mesh.fsdp=N`); plan on a node of 8 GPUs.
  No CPU rehearsal yet: from a tiny random checkpoint at this preset's learning rates no
  sample is correct, so the pairs stage finds no outcome pair and stops; the authors take the
  chosen side from the RFT rows, gold rationale included, which would give pairs (issue 36).
"""

import ml_collections

from llmjax.config_base import base_config, model_config, select_preset


def _tiny(config):
  # Sized for 2 CPU cores: sequences are at most 197 bytes; at d_model 128 and 4 layers one
  # SFT step of 32 x 224 tokens took 1.4 s on host D under load, far past the 15-minute budget.
  config.model = model_config(vocab_size=264, d_model=96, n_layers=3, n_heads=4, n_kv_heads=2,
                              d_ff=384, max_len=224)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
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
  # SFT and RFT: 5 epochs, batch 64 (16 x 4 GPUs), lr 1e-6 for Mistral, linear, no warmup
  config.sft.train.update(epochs=5.0, batch_size=64, seq_len=512, log_every=20,
                          eval_every=200, checkpoint_every=200, eval_batches=8)
  config.sft.optim.update(name="adamw", lr=1e-6, warmup_steps=0, weight_decay=0.0,
                          schedule="linear", end_lr_fraction=0.0, clip_norm=1.0)
  # each DPO run: 3 epochs, batch 32 (8 x 4 GPUs), lr 1e-7 for Mistral, RMSprop, 10% warmup
  config.optim.update(name="rmsprop", lr=1e-7, warmup_ratio=0.1, weight_decay=0.0,
                      schedule="linear", end_lr_fraction=0.0)
  config.train.update(epochs=3.0, batch_size=32, seq_len=384, log_every=10, eval_every=200,
                      checkpoint_every=200, eval_batches=8, grad_accum_steps=4,
                      loss_chunk_len=128)
  config.dpo.precompute_ref_logprobs = True


PRESETS = {"tiny": _tiny, "gsm8k_hf": _gsm8k_hf}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="self_explore")
  config.init = ""
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, d_ff=192)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
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
