"""Supervised fine-tuning (experiment `sft`): prompt/completion examples, the loss on the
completion's tokens (or, with `data.loss_on_prompt`, on every token after the first), several
examples packed per row with segment ids so that none attends to another, from a checkpoint
(`config.init`: hf:DIR, an llmjax run or RUN/checkpoints/STEP) or a fresh model. The same
training serves Self-Explore's SFT and RFT stages and the `dpo` tiny preset (`train_sft`).
"""

import numpy as np

from llmjax import checks, runio
from llmjax.data.examples import Examples, read_examples
from llmjax.data.pipeline import lm_batches, take
from llmjax.errors import UserError
from llmjax.experiments.starting_point import (StartingPoint, record_model, starting_model_config,
                                              starting_point)
from llmjax.parallel import Parallel
from llmjax.train.epochs import steps_from_epochs
from llmjax.train.lm import lm_trainer


def example_rows(examples: Examples, loss_on_prompt: bool) -> list[dict]:
  """Tokenized rows for the packing pipeline: tokens, and the targets that count."""
  rows = []
  for prompt, completion, where in zip(examples.prompts, examples.completions[0],
                                       examples.where):
    tokens = np.asarray(prompt + completion, np.int32)
    loss_mask = np.ones_like(tokens)
    if not loss_on_prompt:
      loss_mask[:len(prompt)] = 0
    rows.append({"tokens": tokens, "loss_mask": loss_mask, "where": where})
  return rows


def train_sft(config, workdir: str, start: StartingPoint, parallel: Parallel,
              train: Examples, evaluation: Examples) -> dict:
  """Fine-tunes `start` on the examples through the engine's loop; returns Trainer.fit's
  result (with 'state')."""
  cfg = config.train

  def batches(examples, is_train):
    return lm_batches(example_rows(examples, config.data.loss_on_prompt), None, cfg.seq_len,
                      cfg.batch_size, seed=config.seed, train=is_train)

  if cfg.get("epochs"):  # an epoch: the packed batches of one ordered pass over the examples
    cfg = steps_from_epochs(cfg, sum(1 for _ in batches(train, False)),
                            f"{len(train):,} examples")
  trainer = lm_trainer(start.model_config, cfg, config.optim, parallel)

  eval_batches = take(batches(evaluation, False), cfg.eval_batches)
  if not eval_batches:
    raise UserError(f"the evaluation examples fill no batch of {cfg.batch_size} x "
                    f"{cfg.seq_len} tokens")
  return trainer.fit(workdir, iter(batches(train, True)), eval_batches, seed=config.seed,
                     resume=config.resume, overwrite=config.overwrite,
                     init_from=start.params)


def run(config, workdir: str) -> dict:
  checks.positive_ints(config.train, "train", "eval_batches")
  if not config.data.train or not config.data.eval:
    raise UserError("config.data.train and config.data.eval are required: JSONL files of "
                    "{prompt, completion} or {messages} rows")
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  start = starting_point(config, parallel)
  record_model(config, workdir, start)
  length = config.train.seq_len + 1
  train = read_examples(config.data.train, start.tokenizer, length, ("completion",))
  evaluation = read_examples(config.data.eval, start.tokenizer, length, ("completion",))
  result = train_sft(config, workdir, start, parallel, train, evaluation)
  summary = {"init": start.source, "steps": result["step"], "train_examples": len(train),
             "eval_examples": len(evaluation),
             "truncated_examples": train.truncated + evaluation.truncated,
             "stopped_early": result["stopped_early"],
             "resumed_from_step": result["resumed_from_step"]}
  rows = runio.read_metrics(workdir, "eval")
  if rows:
    summary.update(final_eval_loss=rows[-1]["loss"], final_eval_accuracy=rows[-1]["accuracy"])
  if "train" in result:
    summary["final_train_loss"] = result["train"]["loss"]
  return summary


def aot_programs(config, parallel: Parallel) -> list:
  """The programs a run compiles, for llmjax.aot: the train step and the evaluation."""
  from llmjax.aot.programs import lm_batch_shapes, trainer_programs
  trainer = lm_trainer(starting_model_config(config), config.train, config.optim, parallel)
  return trainer_programs(trainer, lm_batch_shapes(config.train.batch_size,
                                                   config.train.seq_len))
