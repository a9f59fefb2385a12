"""Latent reasoning by sentence-embedding prediction (experiment `sentence_lm`;
llmjax/experiments/sentence_lm/experiment.py): CoT SFT, semantic and contextual (CTX-B, CTX-C)
sentence autoencoders, latent models that predict the next step's embedding, and a table of
accuracy and FLOPs per problem for no-CoT, CoT, discretized and continuous inference.

  python -m llmjax.main --config configs/sentence_lm.py:tiny --workdir W
  python -m llmjax.main --config configs/sentence_lm.py:tiny --workdir W --config.lens_problem=3

Presets:
  tiny      (default) a fresh 0.5M-parameter model on the procedural ProsQA-style task, every
            stage on a CPU; W/evaluate/table.md holds the table
  blocksworld_tiny  the same on Blocksworld-style planning (plans checked by a simulator);
            not timed
  gsm8k_hf  GPT-2 (a local Hugging Face directory, --config.init=hf:DIR) on GSM8K from
            ../shared/data/gsm8k, the paper's setting, for an accelerator

`tiny`, measured (host D, 2-core CPU, 2026-12-03, nothing else running): 15 min 9 s end to
end (CoT 1500 steps at 0.13 s, no-CoT 1500, semantic 400, CTX-B 600, CTX-C 600, latent 1200,
evaluation of 300 test problems). Its task is the 'ontology' form: one fixed is-a tree over 150
invented concepts, learned from the 4000 training questions; the questions state no facts.
With ProsQA's own form ('stated', each question listing its graph), the same model does not
learn to look facts up in context within a CPU budget: the CoT's token accuracy plateaus at
0.865 (every template token right, the looked-up concept wrong) and its answers are at chance.
Result (300 test problems; GFLOPs per problem, analytic with KV caches):
  no-CoT 1.000 (0.017), CoT 1.000 (0.036), CTX-B discretized 1.000 (0.060, 1.64x CoT),
  CTX-B continuous 0.980 (0.024, 0.67x CoT); reconstruction exact match semantic 1.000,
  CTX-B 1.000, CTX-C 1.000; continuous accuracy under noise sigma x RMS 0.1: 0.977,
  0.3: 0.970, 0.5: 0.957, 1.0: 0.903.
No-CoT solves this task too (the tree is memorised, ancestors included): the task separates
the inference modes by FLOPs and robustness, not by the need for a chain of thought.

`gsm8k_hf` (not run: no accelerator was lent). Its training is about 2.4e18 FLOPs (6 x 124M
parameters x tokens, at its 640-token budgets: CoT 20k steps x 32 rows 3e17, no-CoT 1.5e17,
semantic 1.5e17, CTX-B and CTX-C (64 rows of a context and a sentence) 3.8e17 and 4e17, latent
(32 rows of 320 positions + 12 decoded sentences of 160) 1e18), plus the evaluation of 1319
problems: on one H200 in bf16 (`--config.model.dtype=bfloat16`) at 25-40% of its peak, about
2-3 hours; an estimate from FLOPs, not a measurement.
"""

import ml_collections

from llmjax.config_base import base_config, model_config, select_preset


def _section(steps: int, batch_size: int, lr: float, seq_len: int = 128, **extra):
  return ml_collections.ConfigDict({
      "init": "",
      "train": {"steps": steps, "batch_size": batch_size, "seq_len": seq_len,
                "grad_accum_steps": 1, "log_every": max(steps // 10, 1),
                "eval_every": max(steps // 2, 1), "eval_batches": 4,
                "checkpoint_every": steps, "keep_checkpoints": 1, "async_checkpoint": False,
                "z_loss": 0.0, "loss_chunk_len": 0, "progress": True, "init_from": "",
                "trainable_params": ""},
      "optim": {"name": "adamw", "lr": lr, "schedule": "cosine",
                "warmup_steps": max(steps // 20, 1), "end_lr_fraction": 0.1, "b1": 0.9,
                "b2": 0.95, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.9,
                "clip_norm": 1.0, "decay_norms_and_biases": False},
      **extra})


def _tiny(config):
  del config  # the defaults below


def _blocksworld_tiny(config):
  config.task.name = "blocksworld"
  config.data.vocab_size = 400  # its text has fewer distinct words than ProsQA's
  # 3-5 blocks: questions of at most 97 tokens, plans of up to 8 moves of at most 12 tokens.
  config.lengths.update(sentence=16, context=208, latent=112, sentences=9)
  config.cot.train.seq_len = 208
  config.no_cot.train.seq_len = 208


def _gsm8k_hf(config):
  config.task.update(name="gsm8k", path="../shared/data/gsm8k", train=0, dev=500, test=0)
  config.require_init = True  # --config.init=hf:/path/to/gpt2 (a local HF directory)
  config.data.tokenizer = ""  # the checkpoint's own
  # GSM8K under GPT-2's tokenizer: steps up to ~100 tokens, question + solution up to ~450.
  config.lengths.update(sentence=160, context=640, latent=320, sentences=12)
  for name, steps, batch, lr in (("cot", 20000, 32, 1e-4), ("no_cot", 10000, 32, 1e-4),
                                 ("semantic", 10000, 64, 5e-4), ("ctx_b", 10000, 64, 1e-4),
                                 ("ctx_c", 10000, 64, 1e-4), ("latent", 20000, 32, 1e-4)):
    config[name].train.update(steps=steps, batch_size=batch, seq_len=640,
                              checkpoint_every=2000, keep_checkpoints=2,
                              eval_every=2000, log_every=100)
    config[name].optim.update(lr=lr)
  config.latent.teachers = ("ctx_c",)
  config.inference.update(batch_size=64, max_new_tokens=256, noise=(0.0, 0.5))


PRESETS = {"tiny": _tiny, "blocksworld_tiny": _blocksworld_tiny, "gsm8k_hf": _gsm8k_hf}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="sentence_lm")
  config.task = ml_collections.ConfigDict({
      "name": "prosqa", "train": 4000, "dev": 200, "test": 300, "path": "",
      # prosqa: 'ontology' (one fixed is-a tree over `concepts` invented names, learned from
      # the training problems; questions state no facts) or 'stated' (ProsQA's form: each
      # question states its own graph, with dead-end `branches` and a distractor chain)
      "facts": "ontology", "concepts": 150, "hops": (2, 3, 4), "branches": (1, 2),
      "distractor_hops": (1, 2),
      "blocks": (3, 4, 5)})  # blocksworld: blocks per problem
  config.init = ""  # '' a fresh config.model | an llmjax run | hf:DIR
  config.require_init = False  # True: refuse to start without config.init
  config.data = ml_collections.ConfigDict({
      "tokenizer": "",  # '' trains a sentencepiece model on the task (fresh models)
      "vocab_size": 600, "tokenizer_type": "bpe", "loss_on_prompt": False})
  config.model = model_config(vocab_size=600, d_model=128, n_layers=3, n_heads=4, d_ff=256,
                              max_len=256)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
  # Token budgets: a sentence with its vector and EOS; the contextual encoder's input; the
  # latent model's question and vector slots; sentences per problem (steps + answer).
  config.lengths = ml_collections.ConfigDict({
      "sentence": 12, "context": 48, "latent": 24, "sentences": 6})
  config.cot = _section(1500, 32, 2e-3, seq_len=64)
  config.no_cot = _section(1500, 32, 2e-3, seq_len=64, enabled=True)
  config.semantic = _section(400, 64, 5e-4, seq_len=12, prefix_dropout=0.0)
  config.ctx_b = _section(600, 32, 5e-4, prefix_dropout=0.2)
  config.ctx_c = _section(600, 32, 5e-4, prefix_dropout=0.2, weight=0.5, temperature=0.1)
  config.latent = _section(1200, 32, 5e-4, teachers=("ctx_b",), input_dropout=0.2,
                           nce_weight=1.0, temperature=0.1, stop_weight=1.0)
  config.inference = ml_collections.ConfigDict({
      "problems": 0,  # test problems evaluated (0: all)
      "batch_size": 50, "max_new_tokens": 64,
      "stop": "decoder",  # decoder: first token '###' | classifier: the stop head
      "noise": (0.0, 0.1, 0.3, 0.5, 1.0)})
  # Autoencoders trained besides the latent models' teachers (ctx_c brings semantic).
  config.autoencoders = ("semantic", "ctx_b", "ctx_c")
  config.lens_problem = -1  # >= 0: print SentenceLens of this test problem after the run
  select_preset(preset, PRESETS, default="tiny")(config)
  return config
