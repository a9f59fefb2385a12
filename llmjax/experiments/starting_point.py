"""Where a fine-tuning experiment (sft, dpo, the pipelines) starts: a checkpoint's model, params
and tokenizer, or a fresh model from config.model and config.seed; and the run's config.json
made to record what was actually loaded, so the run can be read back (generate, score, a later
stage's `init`).

Dtypes of a training start, whatever the checkpoint holds: the trained parameters (and so the
optimizer state) are `model.param_dtype`, float32 by default: master weights, since a bf16
update below half an ulp of a weight is lost (AdamW at 5e-7 changes about 1% of a bf16
model's weights in 300 steps); the forward and backward passes compute in `model.dtype`, ''
by default: the checkpoint's own (bfloat16 for most Hugging Face checkpoints; float32 for a
fresh model). config.json records both.
"""

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
  training_dtypes(config.model)  # a bad dtype name is refused before anything is loaded
  if not spec:
    if not tokenizer_spec:
      raise UserError("config.data.tokenizer is required when config.init is '' (a fresh "
                      "model has no tokenizer of its own): byte, spm:PATH.model or hf:DIR")
    model_config = starting_model_config(config)
    tokenizer = load_tokenizer(tokenizer_spec)
    params, source = None, f"seed {config.seed}"
  else:
    loaded = load_model(spec, parallel, tokenizer_spec)
    if loaded.tokenizer is None:
      raise UserError(f"config.init = {spec!r} comes with no tokenizer; set "
                      "config.data.tokenizer (byte, spm:PATH.model or hf:DIR)")
    model_config = with_training_dtypes(loaded.config, config.model)
    params, tokenizer, source = (cast_params(loaded.params, model_config.param_dtype),
                                 loaded.tokenizer, loaded.source)
  if model_config.vocab_size < tokenizer.vocab_size:
    raise UserError(f"model vocab_size = {model_config.vocab_size} is smaller than the "
                    f"tokenizer's vocabulary ({tokenizer.vocab_size})")
  return StartingPoint(model_config, params, tokenizer, source)


def starting_model_config(config) -> ModelConfig:
  """The ModelConfig `starting_point` trains, with its dtypes, read without loading a weight
  (from config.json for a checkpoint): what an ahead-of-time compile needs (llmjax.aot)."""
  if not config.init:
    compute, stored = training_dtypes(config.model)
    return ModelConfig.from_dict({**config.model.to_dict(), "dtype": compute or "float32",
                                  "param_dtype": stored})
  from llmjax.weights import model_config_of
  return with_training_dtypes(model_config_of(config.init), config.model)


def with_training_dtypes(checkpoint_config: ModelConfig, model) -> ModelConfig:
  """A checkpoint's ModelConfig with the dtypes a config's `model` section asks for (see the
  module docstring): compute in model.dtype or the checkpoint's, params in model.param_dtype."""
  compute, stored = training_dtypes(model)
  return dataclasses.replace(checkpoint_config, dtype=compute or checkpoint_config.dtype,
                             param_dtype=stored)


def training_dtypes(model) -> tuple[str, str]:
  """(compute dtype or '' for the checkpoint's, parameter dtype) from a config's `model`
  section (see the module docstring); a bad name is one UserError line."""
  from llmjax.models.config import DTYPES
  compute, stored = model.get("dtype", ""), model.get("param_dtype", "float32") or "float32"
  if compute and compute not in DTYPES:
    raise UserError(f"model.dtype = {compute!r}: expected '' (the checkpoint's) or one of "
                    f"{tuple(DTYPES)}")
  if stored not in DTYPES:
    raise UserError(f"model.param_dtype = {stored!r}: expected one of {tuple(DTYPES)}")
  return compute, stored


def cast_params(params: Any, dtype: str) -> Any:
  """`params` in `dtype` (floating leaves only), each keeping its sharding."""
  import jax
  import jax.numpy as jnp
  target = jnp.dtype(dtype)

  def cast(x):
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == target:
      return x
    return jax.jit(lambda y: y.astype(target), out_shardings=x.sharding)(x)
  return jax.tree.map(cast, params)


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
