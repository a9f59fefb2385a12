"""Supervised fine-tuning (experiment `sft`).

  python -m llmjax.main --config configs/sft.py --workdir W --config.init=hf:DIR \\
      --config.data.train=train.jsonl --config.data.eval=dev.jsonl

`init`: hf:DIR (a Hugging Face directory), an llmjax run (its latest checkpoint),
RUN/checkpoints/STEP, or '' for a fresh model from `config.model` and `config.seed` (then
`data.tokenizer` is required: byte, spm:PATH.model or hf:DIR). Rows: {"prompt", "completion"}
strings, or {"messages": [...]} ending with the assistant's turn (rendered through the
tokenizer's chat template). The loss covers the completion's tokens (`data.loss_on_prompt`:
every token); examples are packed several to a row of `train.seq_len` tokens, never attending
across examples; longer ones lose the start of their prompt (counted in the summary).
Dtypes: the trained parameters are float32 master weights whatever the checkpoint holds
(`model.param_dtype`), computing in the checkpoint's dtype (`model.dtype` '', e.g. bfloat16).
Writes the run contract; the run's config.json records the loaded model (both dtypes
included), so `generate`, `score` and another experiment's `init` can read the run back, and
`python -m llmjax.export W OUT_DIR` writes it as a Hugging Face directory.
Runtime and result: as the model and data; tests/test_sft.py trains a 2-layer byte model in
seconds. Presets: none.
"""

import ml_collections

from llmjax.config_base import base_config, model_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config(experiment="sft")
  config.init = ""
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=192, max_len=256)
  config.model.dtype = ""  # compute dtype: a checkpoint's own (float32 if fresh)
  config.data = ml_collections.ConfigDict({"train": "", "eval": "", "tokenizer": "",
                                           "loss_on_prompt": False})
  config.optim.update(lr=1e-4, warmup_steps=20, weight_decay=0.0)
  config.train.update(steps=200, batch_size=8, seq_len=256, log_every=20, eval_every=100,
                      eval_batches=4, checkpoint_every=100)
  return config
