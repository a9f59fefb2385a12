"""Language-model pretraining (experiment `lm_pretrain`).

Presets (select with `--config configs/pretrain.py:PRESET`):

tiny (default) — a 0.13M-parameter Llama-style model (GQA 4/2) on the procedural corpus; needs
  no data.
  python -m llmjax.main --config configs/pretrain.py:tiny --workdir runs/tiny
  Runtime: about 25 s on 2 CPU cores (measured 2026-11-28), about 40,000 tokens/s.
  Expected: eval loss falls from 5.6 (uniform over 259 bytes) to 0.49 nats/byte, next-byte
  accuracy 0.80, by step 300.

gsm8k_tiny — a 0.66M-parameter byte-level model on the questions and answers of
  ../shared/data/gsm8k (train split for training, test split for evaluation).
  python -m llmjax.main --config configs/pretrain.py:gsm8k_tiny --workdir runs/gsm8k
  Runtime: about 2.5 minutes on 2 CPU cores (measured 2026-11-28, first run, which also builds
  the corpus), about 12,700 tokens/s.
  Expected: eval loss 1.73 nats/byte, next-byte accuracy 0.49, after 400 steps.

llama_1b — a Llama-3.2-1B-shaped model (1.24B parameters, GQA 32/8, rope 5e5, tied embeddings,
  bf16 compute, jax.nn.dot_product_attention: cuDNN flash attention on GPUs, the loss's logits
  in chunks of 512 positions) for accelerators; point `data.corpus`/`data.path` at real text and
  use a sentencepiece tokenizer (`data.tokenizer=spm:PATH.model`, `model.vocab_size` to match).
  python -m llmjax.main --config configs/pretrain.py:llama_1b --workdir gs://.../run
  Runtime and throughput: not measured yet (no accelerator has been available); measure the
  step time and MFU with `python benchmarks/mfu.py` on one. Its parameter count
  (1,235,814,400, as Llama 3.2 1B) is checked by the tests.
"""

import ml_collections
from ml_collections import config_dict

from llmjax.config_base import base_config, model_config, select_preset


def _data(**values) -> ml_collections.ConfigDict:
  data = ml_collections.ConfigDict({
      "corpus": "procedural", "seed": 0, "num_docs": 4000, "path": "", "eval_path": "",
      "text_field": "text", "prompt_field": "", "text_unit": "paragraph",
      "tokenizer": "byte", "mask_prompt": False, "cache_dir": "",
      "max_chunks_per_document": 256,
      # Data shards (default: one per process). Fix it to get the same batches, and so the same
      # losses, on any number of processes that divides it.
      "num_shards": config_dict.placeholder(int),
  })
  data.update(values)
  return data


def _tiny(config):
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=192, max_len=128)
  config.data = _data()
  config.optim.update(lr=3e-3, warmup_steps=30)
  config.train.update(steps=300, batch_size=16, seq_len=128, log_every=25, eval_every=100,
                      eval_batches=4, checkpoint_every=100)


def _gsm8k_tiny(config):
  config.model = model_config(vocab_size=264, d_model=128, n_layers=3, n_heads=4, n_kv_heads=2,
                              d_ff=384, max_len=256)
  config.data = _data(corpus="gsm8k", path="../shared/data/gsm8k")
  config.optim.update(lr=2e-3, warmup_steps=40)
  config.train.update(steps=400, batch_size=16, seq_len=256, log_every=25, eval_every=100,
                      eval_batches=8, checkpoint_every=200)


def _llama_1b(config):
  config.model = model_config(vocab_size=128_256, d_model=2048, n_layers=16, n_heads=32,
                              n_kv_heads=8, d_head=64, d_ff=8192, rope_theta=500_000.0,
                              norm_eps=1e-5, tie_embeddings=True, max_len=8192,
                              dtype="bfloat16", attention_impl="dot_product")
  config.data = _data(corpus="text")
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  config.optim.update(lr=3e-4, warmup_steps=2000, weight_decay=0.1)
  # The loss takes the 128k-wide logits 512 positions at a time: the whole [B, 2048, 128256]
  # logits and their gradient would be most of the step's memory.
  # Sized for a v5e-8 slice (python -m llmjax.aot ... --topology v5e:2x4): 32 micro-batches of
  # one sequence per chip, each layer recomputed in the backward pass. Without remat XLA's
  # attention holds every layer's [H, L, L] scores (20.3 GiB per chip; a v5e chip has 16).
  config.model.remat = "full"
  config.train.update(steps=100_000, batch_size=256, seq_len=2048, log_every=10,
                      eval_every=1000, checkpoint_every=1000, loss_chunk_len=512,
                      grad_accum_steps=32)


PRESETS = {"tiny": _tiny, "gsm8k_tiny": _gsm8k_tiny, "llama_1b": _llama_1b}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="lm_pretrain")
  select_preset(preset, PRESETS, default="tiny")(config)
  return config
