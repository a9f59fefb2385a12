"""Where a fine-tuning experiment (sft, dpo) starts: a checkpoint's model, params and
tokenizer, or a fresh model from config.model and config.seed; and the run's config.json made
to record what was actually loaded, so the run can be read back (generate, score, a later
stage's `init`)."""

import dataclasses
import os
from typing import Any

from llmjax import rundir, runio
from llmjax.data.tokenizers import Tokenizer, load_tokenizer
from llmjax.errors import UserError
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.weights import load_model


@dataclasses.dataclass
class StartingPoint:
  model_config: ModelConfig
  params: Any  # None: initialise from config.seed
  tokenizer: Tokenizer
  source: str


def starting_point(config, parallel: Parallel) -> StartingPoint:
  """config.init: '' (config.model, fresh from config.seed), an llmjax run, RUN/checkpoints/STEP
  or hf:DIR; config.data.tokenizer: '' (the checkpoint's own) or a tokenizer spec."""
  spec, tokenizer_spec = config.init, config.data.tokenizer
  if not spec:
    if not tokenizer_spec:
      raise UserError("config.data.tokenizer is required when config.init is '' (a fresh "
                      "model has no tokenizer of its own): byte, spm:PATH.model or hf:DIR")
    model_config = ModelConfig.from_dict(config.model.to_dict())
    tokenizer = load_tokenizer(tokenizer_spec)
    params, source = None, f"seed {config.seed}"
  else:
    loaded = load_model(spec, parallel, tokenizer_spec)
    if loaded.tokenizer is None:
      raise UserError(f"config.init = {spec!r} comes with no tokenizer; set "
                      "config.data.tokenizer (byte, spm:PATH.model or hf:DIR)")
    model_config, params, tokenizer, source = (loaded.config, loaded.params, loaded.tokenizer,
                                               loaded.source)
  if model_config.vocab_size < tokenizer.vocab_size:
    raise UserError(f"model vocab_size = {model_config.vocab_size} is smaller than the "
                    f"tokenizer's vocabulary ({tokenizer.vocab_size})")
  return StartingPoint(model_config, params, tokenizer, source)


def record_model(config, workdir: str, start: StartingPoint) -> None:
  """Writes the loaded model's config (and the tokenizer it came with) into the run's
  config.json, so that `load_model(workdir)` rebuilds this model."""
  resolved = config.to_dict()
  resolved["model"] = dataclasses.asdict(start.model_config)
  if not resolved["data"].get("tokenizer") and config.init:
    spec = config.init
    resolved["data"]["tokenizer"] = spec if spec.startswith("hf:") else _run_tokenizer(spec)
  given = rundir.given_config(workdir)
  if given is not None:  # the run's own config.json: a resume is checked against what it was given
    resolved["as_given"] = given
  runio.write_json(os.path.join(workdir, "config.json"), resolved)


def _run_tokenizer(spec: str) -> str:
  from llmjax.weights import RunCheckpoint
  return RunCheckpoint.parse(spec).tokenizer
