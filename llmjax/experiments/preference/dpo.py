"""Preference optimization (experiment `dpo`): DPO and its variants on the engine's loop.

Method:
  1. Start from `config.init` (hf:DIR, an llmjax run, RUN/checkpoints/STEP) or a fresh model.
  2. Pairs: JSONL rows {prompt, chosen, rejected} (or chat messages; llmjax.data.examples),
     both completions of a pair in the same batch, the loss on completion tokens only.
  3. Reference: `dpo.reference` ('' = the initial params, or a checkpoint spec). Its log-probs
     come from frozen params at every step, or, with `dpo.precompute_ref_logprobs`, once before
     training (cached in W/reference_logprobs.npz, reused while pairs and reference agree).
  4. Loss: `dpo.loss_type` with TRL's names (beta, label_smoothing, loss_type; simpo_gamma) —
     formulas in llmjax/train/preference.py; `dpo.reference_free` drops the reference.
  5. Train; evaluate reward accuracy, margins, log-probs and their drift on held-out pairs.

The `tiny` preset (`task.kind = sorting`) is a whole pipeline at CPU scale (llmjax.pipeline):
SFT a small model on digit sorting with a share of wrong answers, sample the SFT policy on
held-out prompts, keep pairs whose chosen answer is verified right and rejected one verified
wrong, DPO from the SFT params, and compare the greedy task accuracy of both policies.
"""

import sys

from llmjax import runio
from llmjax.data.examples import read_examples
from llmjax.errors import UserError
from llmjax.experiments.pair_training import (preference_loss, preference_programs, summarise,
                                              train_dpo)
from llmjax.experiments.starting_point import (record_model, starting_model_config,
                                              starting_point)
from llmjax.parallel import Parallel


def run(config, workdir: str) -> dict:
  if config.task.kind:
    from llmjax.experiments.preference import dpo_tiny  # the procedural pipeline of the tiny preset
    return dpo_tiny.run(config, workdir)
  if not config.data.train or not config.data.eval:
    raise UserError("config.data.train and config.data.eval are required: JSONL files of "
                    "{prompt, chosen, rejected} rows")
  preference_loss(config)  # settings first, before anything is loaded
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  start = starting_point(config, parallel)
  record_model(config, workdir, start)
  length = config.train.seq_len + 1
  train = read_examples(config.data.train, start.tokenizer, length, ("chosen", "rejected"))
  evaluation = read_examples(config.data.eval, start.tokenizer, length, ("chosen", "rejected"))
  for path, pairs in ((config.data.train, train), (config.data.eval, evaluation)):
    if pairs.identical and runio.is_writer():
      print(f"{path}: dropped {pairs.identical} pairs whose chosen and rejected are the same "
            f"tokens (within train.seq_len + 1 = {length})", file=sys.stderr)
  result = train_dpo(config, workdir, start, parallel, train, evaluation)
  return {"init": start.source, **summarise(workdir, result, train, evaluation)}


def aot_programs(config, parallel: Parallel) -> list:
  """The programs a run compiles, for llmjax.aot (see `preference_programs`)."""
  if config.task.kind:
    raise UserError("the tiny preset's pipeline (task.kind) is a CPU demonstration; compile a "
                    "preset that trains on data files, e.g. configs/dpo.py:hf")
  preference_loss(config)
  return preference_programs(config, starting_model_config(config), parallel)
