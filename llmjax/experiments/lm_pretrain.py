"""Language-model pretraining: a corpus, a tokenizer, the decoder, the engine's train loop."""

import jax

from llmjax import checks, plotting, runio
from llmjax.data.corpora import make_corpus
from llmjax.data.pipeline import lm_batches, take
from llmjax.data.tokenizers import load_tokenizer
from llmjax.errors import UserError
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.lm import lm_trainer


def run(config, workdir: str) -> dict:
  check_config(config)  # before building the corpus, which can take a while
  return train_on_corpus(config, workdir, make_corpus(config.data))


def check_config(config) -> tuple:
  """(tokenizer, model config) of a pretraining config, or a UserError naming the bad key."""
  checks.positive_ints(config.train, "train", "eval_batches")
  checks.positive_ints(config.data, "data", "max_chunks_per_document")
  if config.data.num_shards is not None:
    checks.positive_ints(config.data, "data", "num_shards")
  tokenizer = load_tokenizer(config.data.tokenizer)
  model_config = ModelConfig.from_dict(config.model.to_dict())
  if model_config.vocab_size < tokenizer.vocab_size:
    raise UserError(f"model.vocab_size = {model_config.vocab_size} is smaller than the "
                    f"tokenizer's vocabulary ({tokenizer.vocab_size})")
  if model_config.positions == "learned" and model_config.max_len < config.train.seq_len:
    raise UserError(f"model.max_len = {model_config.max_len} < train.seq_len = "
                    f"{config.train.seq_len} with learned positions")
  return tokenizer, model_config


def train_on_corpus(config, workdir: str, corpus: dict) -> dict:
  """Pretraining on a built corpus ({'train', 'validation'} sources, llmjax.data.corpora);
  returns the summary. Resumes from workdir's checkpoints when config.resume."""
  tokenizer, model_config = check_config(config)
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  trainer = lm_trainer(model_config, config.train, config.optim, parallel)

  def batches(split, train):
    return lm_batches(corpus[split], tokenizer, config.train.seq_len, config.train.batch_size,
                      seed=config.seed, train=train, mask_prompt=config.data.mask_prompt,
                      max_chunks_per_document=config.data.max_chunks_per_document,
                      num_shards=config.data.num_shards)

  eval_batches = take(batches("validation", train=False), config.train.eval_batches)
  if not eval_batches:
    raise UserError(f"the validation split has too little text for one batch of "
                    f"{config.train.batch_size} x {config.train.seq_len} tokens")
  result = trainer.fit(workdir, iter(batches("train", train=True)), eval_batches,
                       seed=config.seed, resume=config.resume, overwrite=config.overwrite)

  train_rows, eval_rows = runio.read_metrics(workdir, "train"), runio.read_metrics(workdir, "eval")
  plotting.plot_curves(f"{workdir}/plots/loss.png", {
      "train": ([r["step"] for r in train_rows], [r["loss"] for r in train_rows]),
      "eval": ([r["step"] for r in eval_rows], [r["loss"] for r in eval_rows]),
  }, ylabel="cross-entropy (nats/token)", title=f"{config.experiment}: loss")

  steps = result["step"]
  summary = {
      "steps": steps,
      "tokens_seen": steps * config.train.batch_size * config.train.seq_len,
      "num_params": model_config.num_params(),
      "resumed_from_step": result["resumed_from_step"],
      "stopped_early": result["stopped_early"],
      "devices": jax.device_count(),
  }
  if train_rows:
    last = train_rows[-1]
    summary.update(final_train_loss=last["loss"], final_train_accuracy=last["accuracy"],
                   tokens_per_s=last["tokens_per_s"], mfu=last["mfu"])
  if eval_rows:
    summary.update(final_eval_loss=eval_rows[-1]["loss"],
                   final_eval_accuracy=eval_rows[-1]["accuracy"])
  return summary


def aot_programs(config, parallel: Parallel) -> list:
  """The programs a run compiles, for llmjax.aot: the train step and the evaluation (no
  tokenizer or corpus is read: the model's vocabulary is config.model's)."""
  from llmjax.aot.programs import lm_batch_shapes, trainer_programs
  trainer = lm_trainer(ModelConfig.from_dict(config.model.to_dict()), config.train,
                       config.optim, parallel)
  return trainer_programs(trainer, lm_batch_shapes(config.train.batch_size,
                                                   config.train.seq_len))
