"""Knowledge entropy of FFN memories (Kim et al. 2025; experiment `knowledge_entropy`).

Presets (select with `--config configs/knowledge_entropy.py:PRESET`):

measure (default) — the knowledge entropy of each checkpoint of a series on one corpus:
  python -m llmjax.main --config configs/knowledge_entropy.py --workdir W \\
      --config.checkpoints=SPEC[,SPEC...] --config.corpus=PATH
  SPEC: hf:DIR, an llmjax run (all its checkpoints), RUN/checkpoints/STEP, or a glob of them.
  PATH: .jsonl (one document per row in `text_field`) or text (documents by `text_unit`).
  Writes W/metrics.jsonl (one row per checkpoint: checkpoint, step, knowledge_entropy,
  layer_entropy, ...), W/coefficients/<n>.npz (mean coefficients and their normalised
  distributions), W/plots/knowledge_entropy.png (entropy against step) and W/summary.json (the
  last checkpoint's figures). A rerun skips the checkpoints already measured.

tiny — the paper's three findings at CPU scale, one resumable pipeline
  (llmjax.experiments.knowledge_entropy.demo): pretrain a 0.2M-parameter byte-level model
  (3 layers, d_ff 256) for 800 steps on fictional-knowledge paragraphs that are never injected,
  a checkpoint every 100; the knowledge entropy of each on 64 held-out paragraphs; injection
  (5 times, every 20 steps, 4 paraphrase70 items + 1 once60 item each, 100 steps) from the
  step-200 and step-800 checkpoints and from step 800 resuscitated (p 0.5, q 2).
  python -m llmjax.main --config configs/knowledge_entropy.py:tiny --workdir W
  Measured (host D, 2026-12-03, seed 0): 4 min 52 s end to end (11 min 42 s with another 2-core
  job beside it; the same figures both times):
  knowledge entropy RISES over pretraining, 15.90 (step 100) -> 15.97 (200) -> 16.40 (800), of a
  maximum 3 ln 256 = 16.64; the paper's decay does not reproduce in 800 steps of a tiny model.
  Injection: early (H 15.97) A 0.056, F -0.063; late (H 16.40) A 0.112, F -0.012;
  resuscitated (H 16.50) A 0.102, F -0.003 (K_PT, P_PT of the unscaled late model). The
  later, higher-entropy checkpoint acquires more and forgets more (F < 0: continued training
  still raises held-out accuracy); entropy and acquisition move together as in the paper, but
  resuscitation does not help here.

olmo_hf — the paper's setting on local OLMo checkpoints (hf:DIR per revision, e.g. a glob of
  step*-tokens* directories converted to HF format); accelerator-sized, not run here.
  Entropy on 2,048 documents of at most 2,048 tokens (the authors use the first 2,048
  instances of OLMo-1B's training order, padded to 2,048; `include_padding=True` with
  `length_bucket=2048` reproduces their averaging):
  python -m llmjax.main --config configs/knowledge_entropy.py:olmo_hf --workdir W \
      --config.checkpoints='hf:/ckpt/OLMo-1B-hf/step*' --config.corpus=dolma_first_2048.jsonl
  Knowledge injection from each checkpoint (their Table 1: 1,600 steps of 128 x 1,024 tokens,
  AdamW lr 4e-4, 80 warmup steps (ours rise from 0, theirs from 4e-5), cosine to 4e-5,
  70 + 6 paragraphs every 160 steps):
      ... --config.mode=inject --config.data.path=pubmed_train.jsonl \
      --config.data.eval_path=pubmed_eval.jsonl
  Expected cost on one H200: the entropy pass is about 2 x 1.2e9 x 4.2e6 = 1e16 FLOPs per
  checkpoint (under a minute at 40% MFU; loading dominates); one continual-training run is
  6 x 1.2e9 x 2.1e8 tokens = 1.5e18 FLOPs, about an hour at 40% MFU (bf16), so Table 1's four
  checkpoints take about four hours on one chip.
"""

import ml_collections
from ml_collections import config_dict

from llmjax.config_base import base_config, model_config, select_preset


def _measure(config):
  del config


def _tiny(config):
  config.mode = "demo"
  config.pretrain.model = model_config(vocab_size=264, d_model=64, n_layers=3, n_heads=4,
                                       n_kv_heads=2, d_ff=256, max_len=256)
  config.pretrain.train.update(steps=800, batch_size=16, seq_len=256, log_every=50,
                               eval_every=200, eval_batches=4, checkpoint_every=100,
                               keep_checkpoints=1000, async_checkpoint=False)
  config.pretrain.optim.update(lr=3e-3, warmup_steps=50, weight_decay=0.1)
  # A paragraph (~2,400 bytes) is ~10 rows of 256 bytes: it gets rows of its own, since
  # prepending would keep only its first 256 bytes.
  config.injection.update(injections=5, interval=20, paraphrased_items=4, once_per_injection=1,
                          rows_per_step=8, placement="rows")
  config.train.update(steps=100, batch_size=16, seq_len=256, log_every=10, eval_every=10,
                      eval_batches=4, checkpoint_every=50, async_checkpoint=False)
  config.optim.update(lr=1e-3, warmup_steps=10, weight_decay=0.1)
  config.demo.update(early_step=200, entropy_documents=64, validation_items=6)
  config.update(max_tokens=256, batch_size=16, length_bucket=64)


def _olmo_hf(config):
  config.update(max_documents=2048, max_tokens=2048, batch_size=16, length_bucket=256)
  config.train.update(steps=1600, batch_size=128, seq_len=1024, log_every=10, eval_every=160,
                      eval_batches=8, checkpoint_every=160)
  config.optim.update(lr=4e-4, warmup_steps=80, schedule="cosine", end_lr_fraction=0.1,
                      weight_decay=0.1, b1=0.9, b2=0.95, clip_norm=1.0)


PRESETS = {"measure": _measure, "tiny": _tiny, "olmo_hf": _olmo_hf}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="knowledge_entropy")
  config.mode = "measure"
  config.checkpoints = ""  # SPEC[,SPEC...]: hf:DIR, RUN, RUN/checkpoints/STEP or globs
  config.corpus = ""  # .jsonl or a text file
  config.text_field = "text"  # the document field of a .jsonl corpus
  config.text_unit = "paragraph"  # documents of a text corpus: line | paragraph | file
  config.tokenizer = ""  # '' = each checkpoint's own; else byte | spm:PATH.model | hf:DIR
  config.add_bos = False  # prepend BOS to every document
  config.max_documents = 0  # the first N documents of the corpus (0: all)
  config.max_tokens = 1024  # documents are cut to this many tokens
  config.include_padding = False  # True: count pad positions too, as the authors' code does
  config.batch_size = 8
  config.length_bucket = 64  # document lengths round up to a multiple (one compile each)
  config.progress = True
  # resuscitate: the checkpoint (config.checkpoints, one) with its low-coefficient memories
  # scaled up, written to WORKDIR/resuscitated (llmjax run) or WORKDIR/resuscitated_hf.
  config.resuscitation = ml_collections.ConfigDict({"quantile": 0.5, "multiplier": 2.0,
                                                    "format": "llmjax"})  # llmjax | hf
  # Knowledge injection (llmjax/experiments/knowledge_entropy/injection.py): the paper injects
  # every 160 steps, 10 times, all 70 paraphrase70 items and 6 once60 items per injection.
  config.injection = ml_collections.ConfigDict({
      "root": "../shared/data/fictional_knowledge", "injections": 10, "interval": 160,
      "paraphrased_items": 70, "once_per_injection": 6, "rows_per_step": 76,
      # prepend (the authors': in front of ordinary rows) | rows (rows of their own)
      "placement": "prepend"})
  # inject: the ordinary text of continual training (and its held-out split for forgetting).
  config.data = ml_collections.ConfigDict({
      "corpus": "jsonl", "path": "", "eval_path": "", "text_field": "text", "prompt_field": "",
      "text_unit": "paragraph", "tokenizer": "", "cache_dir": ""})
  # demo (the tiny preset): pretraining, then continual training (`train`, `optim`).
  config.pretrain = ml_collections.ConfigDict({
      "model": model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, d_ff=256),
      "train": dict(config.train.to_dict()),
      "optim": dict(config.optim.to_dict()),
      "data": {"tokenizer": "byte", "cache_dir": "", "mask_prompt": False,
               "max_chunks_per_document": 256,
               "num_shards": config_dict.placeholder(int)}})
  config.demo = ml_collections.ConfigDict({
      "early_step": 200, "entropy_documents": 64, "validation_items": 6,
      "resuscitation_quantile": 0.5, "resuscitation_multiplier": 2.0})
  select_preset(preset, PRESETS, default="measure")(config)
  return config
