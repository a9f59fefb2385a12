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

olmo_hf — the paper's measurement: local OLMo checkpoint directories (hf:DIR per revision,
  e.g. a glob of step*-tokens* directories) on 2,048 documents of at most 2,048 tokens
  (the authors use the first 2,048 instances of OLMo-1B's training order); accelerator-sized,
  not run here. On one H200 an OLMo-1B pass over 2,048 x 2,048 tokens is about 8.4 PFLOP of
  forward work (a few minutes per checkpoint); load time dominates for small series.
  python -m llmjax.main --config configs/knowledge_entropy.py:olmo_hf --workdir W \\
      --config.checkpoints='hf:/ckpt/OLMo-1B-hf/step*' --config.corpus=dolma_first_2048.jsonl
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
  config.injection.update(injections=5, interval=20, paraphrased_items=4, once_per_injection=1,
                          rows_per_step=8)
  config.train.update(steps=100, batch_size=16, seq_len=256, log_every=10, eval_every=10,
                      eval_batches=4, checkpoint_every=50, async_checkpoint=False)
  config.optim.update(lr=1e-3, warmup_steps=10, weight_decay=0.1)
  config.demo.update(early_step=200, entropy_documents=64, validation_items=6)
  config.update(max_tokens=256, batch_size=16, length_bucket=64)


def _olmo_hf(config):
  config.update(max_documents=2048, max_tokens=2048, batch_size=16, length_bucket=256)


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
  # Knowledge injection (llmjax.experiments.knowledge_injection): the paper injects every 160
  # steps, 10 times, all 70 paraphrase70 items and 6 once60 items per injection.
  config.injection = ml_collections.ConfigDict({
      "root": "../shared/data/fictional_knowledge", "injections": 10, "interval": 160,
      "paraphrased_items": 70, "once_per_injection": 6, "rows_per_step": 76})
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
