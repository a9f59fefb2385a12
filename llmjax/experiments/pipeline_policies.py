"""What the stages of a fine-tuning pipeline share (the dpo `tiny` preset, self_explore): the
starting model and tokenizer, the SFT recipe's config, one batched generator, the params an
earlier stage trained (in memory, or read back from its checkpoints in a new process), and text
completion of prompts."""

import json

import numpy as np

from llmjax import runio
from llmjax.experiments.dpo_training import stage_config
from llmjax.experiments.starting_point import record_model, starting_point
from llmjax.infer import Generator, SamplingParams, generate_text
from llmjax.parallel import Parallel
from llmjax.weights import load_model


class PipelinePolicies:
  """Built once per run; `config.sft` holds the SFT stages' `train` and `optim` sections."""

  def __init__(self, config, workdir: str, sample_batch: int):
    self.parallel = Parallel.from_config(config.mesh, config.sharding_rules)
    self.start = starting_point(config, self.parallel)
    record_model(config, workdir, self.start)
    self.tokenizer = self.start.tokenizer
    self.sft_config = stage_config(config, train=dict(config.sft.train),
                                   optim=dict(config.sft.optim))
    self.generator = Generator(self.start.model_config, self.parallel, batch_size=sample_batch,
                               length_bucket=16, pad_id=self.tokenizer.pad_id)

  def params_of(self, ctx, stage: str):
    """The params stage `stage` kept (or its checkpoint's, when it ran in another process)."""
    return ctx.artifact(stage, "params",
                        lambda directory: load_model(directory, self.parallel).params)

  def complete(self, params, prompts: list[str], sampling: SamplingParams, seed: int = 0,
               progress: bool = False) -> tuple[list[list[str]], float]:
    """(`sampling.n` completion texts per prompt, seconds spent generating)."""
    ids = [self.tokenizer.encode_prompt(p) for p in prompts]
    results, seconds = generate_text(self.generator, params, self.tokenizer, ids, sampling,
                                     seed=seed, stop_token_ids=self.tokenizer.stop_ids,
                                     show_progress=progress)
    return [[c.text for c in completions] for completions in results], seconds


def write_rows(path: str, rows) -> int:
  """Writes dict rows as JSON lines, atomically (a killed stage leaves no half file); returns
  how many. Every process writes the same rows: each reads the file back in the next step."""
  count = 0
  with runio.atomic_output(path) as tmp, open(tmp, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
      count += 1
  return count


def split_rows(rows: list, share: float, seed: int) -> tuple[list, list]:
  """(train, held-out) rows in a seeded random order: a `share` of them (at least one) held
  out for evaluation."""
  order = np.random.default_rng(seed).permutation(len(rows))
  cut = max(1, int(round(share * len(rows))))
  return [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]
