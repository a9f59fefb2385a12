"""Preference optimization: DPO and its variants (experiment `dpo`).

Presets (select with `--config configs/dpo.py:PRESET`):

tiny (default) — the whole method at CPU scale, on digit sorting
  (llmjax/experiments/preference/sorting.py): SFT a 2-layer byte-level model on answers that carry a
  systematic mistake (prompts holding a 7 get a wrong answer 70% of the time), sample it on held-out
  prompts, keep verified pairs (chosen right, rejected wrong), DPO (sigmoid, beta 1.0) from the SFT
  params, and compare both policies' greedy accuracy. A resumable pipeline: W/sft, W/pairs, W/dpo,
  W/evaluate.
  python -m llmjax.main --config configs/dpo.py --workdir runs/dpo_tiny
  Runtime: 42 s on host C (2-core AMD EPYC, docs/benchmarks.md). Result (seed 0): greedy task
  accuracy 0.691 (SFT) -> 0.895 (DPO), 0.132 -> 0.786 on prompts holding a 7; reward accuracy
  0.975 on held-out pairs (summary.json: sft_/dpo_task_accuracy, eval_reward_accuracy).

hf — any local Hugging Face checkpoint and pair files; accelerator-sized (not run here):
  python -m llmjax.main --config configs/dpo.py:hf --workdir W --config.init=hf:DIR \\
      --config.data.train=pairs.jsonl --config.data.eval=dev_pairs.jsonl
  Rows: {"prompt", "chosen", "rejected"} strings, or chat: "prompt" a list of messages and
  "chosen"/"rejected" lists of assistant messages (rendered through the model's template).
  Fits (python -m llmjax.aot, docs/benchmarks.md) a Llama-3.2-1B on a v5e-8 and a v5p-8 slice,
  params and optimizer state split over the chips (fsdp).

Loss: `--config.dpo.loss_type=` sigmoid | robust | hinge | ipo | exo_pair | bco_pair |
sppo_hard | nca_pair | apo_zero | apo_down | simpo | orpo (formulas in
llmjax/train/preference.py), with TRL's `beta`, `label_smoothing`, and `simpo_gamma`;
`dpo.reference_free=True` for any; `dpo.reference` '' (the initial params) or a checkpoint;
`dpo.precompute_ref_logprobs=True` computes the reference's log-probs once and frees it.
"""

import ml_collections

from llmjax.config_base import base_config, model_config, select_preset


def _tiny(config):
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=256, max_len=32)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
  config.data.tokenizer = "byte"
  config.task.update(kind="sorting", digits=4, noise=0.7, trap=7, sft_examples=4000,
                     pair_prompts=2048, eval_prompts=512, samples=4, test_prompts=512,
                     sample_batch=128)
  config.sft.train.update(steps=300, batch_size=64, log_every=50, eval_every=150,
                          checkpoint_every=300, eval_batches=2, seq_len=16)
  config.sft.optim.update(lr=3e-3, warmup_steps=20, weight_decay=0.0)
  # beta 1.0 and lr 2e-4 keep the policy near the SFT one where pairs say nothing (prompts
  # without the trap digit); beta 0.1 with lr 5e-4 fixed the trap but lost 29% elsewhere.
  config.dpo.beta = 1.0
  config.optim.update(lr=2e-4, warmup_steps=10, weight_decay=0.0)
  config.train.update(steps=150, batch_size=32, seq_len=16, log_every=25, eval_every=75,
                      checkpoint_every=150, eval_batches=8)


def _hf(config):
  # Params, both Adam moments and gradients of a 1B model in float32 are 20 GB: split over the
  # chips (fsdp), not held by each (on a v5e-8 the step needs 27.7 GiB per chip held whole;
  # python -m llmjax.aot --config configs/dpo.py:hf --topology v5e:2x4 --config.init=hf:DIR).
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  config.optim.update(lr=5e-7, warmup_steps=150, weight_decay=0.0, schedule="linear")
  # log-probs 256 positions at a time: a 128k vocabulary's [2B, L, V] logits never held whole
  config.train.update(steps=2000, batch_size=64, seq_len=1024, log_every=10, eval_every=200,
                      checkpoint_every=500, eval_batches=8, grad_accum_steps=8,
                      loss_chunk_len=256)
  config.dpo.precompute_ref_logprobs = True


PRESETS = {"tiny": _tiny, "hf": _hf}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="dpo")
  config.init = ""
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, d_ff=192)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
  config.data = ml_collections.ConfigDict({"train": "", "eval": "", "tokenizer": "",
                                           "loss_on_prompt": False})
  config.dpo = ml_collections.ConfigDict({
      "loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0, "simpo_gamma": 0.5,
      "reference_free": False, "reference": "", "precompute_ref_logprobs": False})
  # The tiny preset's procedural task and its SFT stage ('' kind: train on pair files).
  config.task = ml_collections.ConfigDict({
      "kind": "", "digits": 4, "noise": 0.7, "trap": 7, "sft_examples": 4000,
      "pair_prompts": 2048, "eval_prompts": 512, "samples": 4, "test_prompts": 512,
      "sample_batch": 128})
  config.sft = ml_collections.ConfigDict({"train": dict(config.train.to_dict()),
                                          "optim": dict(config.optim.to_dict())})
  select_preset(preset, PRESETS, default="tiny")(config)
  return config
