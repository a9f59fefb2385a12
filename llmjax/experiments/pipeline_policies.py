"""What the stages of a fine-tuning pipeline share (the dpo `tiny` preset, self_explore): the
starting model and tokenizer, the SFT recipe's config, one batched generator, the params an
earlier stage trained (in memory, or read back from its checkpoints in a new process), and text
completion of prompts."""

import json

import numpy as np

from llmjax import runio
from llmjax.data.examples import read_examples
from llmjax.experiments.pair_training import stage_config
from llmjax.experiments.sft import train_sft
from llmjax.experiments.starting_point import StartingPoint, record_model, starting_point
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

  def fine_tune(self, ctx, rows: list[dict], name: str, dev_share: float, seed: int,
                starting: StartingPoint | None = None, sft_config=None) -> dict:
    """The SFT recipe on {prompt, completion} rows, as a pipeline stage: a seeded `dev_share`
    of the rows is written to `name`_dev.jsonl and the rest to `name`_train.jsonl in the
    stage's directory, read back at the SFT config's sequence length, and trained on from
    `starting` (default: the run's starting model) with `sft_config` (default: the run's SFT
    config); the trained params are kept for later stages. Returns {"rows", "steps",
    "truncated"}."""
    starting = self.start if starting is None else starting
    sft_config = self.sft_config if sft_config is None else sft_config
    write_split(ctx, rows, name, dev_share, seed, held_out="dev")
    paths = {part: ctx.path(f"{name}_{part}.jsonl") for part in ("train", "dev")}
    length = sft_config.train.seq_len + 1
    train, dev = (read_examples(paths[part], self.tokenizer, length, ("completion",))
                  for part in ("train", "dev"))
    record_model(sft_config, ctx.directory, starting)
    result = train_sft(sft_config, ctx.directory, starting, self.parallel, train, dev)
    ctx.keep("params", result["state"].params)
    return {"rows": len(rows), "steps": result["step"],
            "truncated": train.truncated + dev.truncated}

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


def write_split(ctx, rows: list, name: str, share: float, seed: int,
                held_out: str = "eval") -> int:
  """Writes `name`_train.jsonl and `name`_`held_out`.jsonl (a seeded `share` of the rows, as
  split_rows) in the stage's directory; returns how many training rows."""
  train_rows, held_rows = split_rows(rows, share, seed)
  write_rows(ctx.path(f"{name}_train.jsonl"), train_rows)
  write_rows(ctx.path(f"{name}_{held_out}.jsonl"), held_rows)
  return len(train_rows)


def split_rows(rows: list, share: float, seed: int) -> tuple[list, list]:
  """(train, held-out) rows in a seeded random order: a `share` of them (at least one) held
  out for evaluation."""
  order = np.random.default_rng(seed).permutation(len(rows))
  cut = max(1, int(round(share * len(rows))))
  return [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]
