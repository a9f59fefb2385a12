"""Defaults every experiment config starts from, so a config file states only what is its own.

A config file under configs/ defines `get_config(preset)` and usually begins with
`config = base_config(experiment=...)`. Optional values are typed placeholders, so they can be
set from the command line (`--config.train.stop_after_steps=100`).
"""

import dataclasses
from typing import Callable, Mapping

import ml_collections
from ml_collections import config_dict

from llmjax.errors import UserError
from llmjax.models.config import ModelConfig
from llmjax.parallel import DEFAULT_RULES

_OPTIONAL_MODEL_FIELDS = {"n_kv_heads": int, "d_head": int, "sliding_window": int,
                          "clip_qkv": float, "rope_llama3_scaling": tuple}


def model_config(**values) -> ml_collections.ConfigDict:
  """A `config.model` ConfigDict holding every ModelConfig field (defaults, then `values`)."""
  cfg = ml_collections.ConfigDict()
  for field in dataclasses.fields(ModelConfig):
    if field.name in values:
      value = values.pop(field.name)
    elif field.default is not dataclasses.MISSING:
      value = field.default
    else:
      raise UserError(f"model_config: {field.name} is required")
    if value is None:
      value = config_dict.placeholder(_OPTIONAL_MODEL_FIELDS[field.name])
    setattr(cfg, field.name, value)
  if values:
    raise UserError(f"model_config: unknown field {sorted(values)[0]!r}")
  return cfg


def base_config(experiment: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = experiment
  config.seed = 0
  config.resume = True  # continue from the latest checkpoint in the workdir, if any
  # With resume=False on a workdir holding checkpoints: move that run into replaced-<time>/
  # (without it such a run is refused, so two histories never mix).
  config.overwrite = False

  # Mesh axis sizes; one may be -1 to take the remaining devices.
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.sharding_rules = [list(rule) for rule in DEFAULT_RULES]

  config.optim = ml_collections.ConfigDict({
      # warmup_ratio > 0: that share of the run's steps warms up instead of warmup_steps
      "name": "adamw", "lr": 3e-4, "schedule": "cosine", "warmup_steps": 100,
      "warmup_ratio": 0.0,
      "end_lr_fraction": 0.1, "b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
      "momentum": 0.9, "clip_norm": 1.0, "decay_norms_and_biases": False,
  })
  config.train = ml_collections.ConfigDict({
      "steps": 1000, "batch_size": 32, "seq_len": 256, "grad_accum_steps": 1,
      # passes over the training data, for the experiments that read a dataset (sft, dpo and
      # the pipelines' stages): when > 0 it sets `steps` once the data is read
      "epochs": 0.0,
      "log_every": 50, "eval_every": 200, "eval_batches": 8,
      "checkpoint_every": 500, "keep_checkpoints": 3, "async_checkpoint": True,
      "z_loss": 0.0,
      # Positions per chunk of the loss's logits (0: all at once). Large vocabularies: the
      # [B, L, V] logits and their gradient are then never held whole (train/losses.py).
      "loss_chunk_len": 0,
      # Save and stop after this many steps of this invocation (for time-limited jobs).
      "stop_after_steps": config_dict.placeholder(int),
      # Peak FLOP/s per device for MFU; None looks the device up in train/flops.py.
      "peak_flops_per_device": config_dict.placeholder(float),
      "progress": True,
      # What a fresh run starts from: '' (params from config.seed), an llmjax run directory
      # (its latest checkpoint), RUN/checkpoints/STEP, or hf:DIR.
      "init_from": "",
      # Regular expression of the trained params' paths (e.g. 'layer_1/.*|final_norm/.*'); the
      # others stay fixed and get no optimizer state. '' trains every param.
      "trainable_params": "",
  })
  return config


def select_preset(preset: str | None, presets: Mapping[str, Callable], default: str):
  """Returns presets[preset or default], or a UserError listing the valid presets."""
  name = preset or default
  if name not in presets:
    raise UserError(f"unknown preset {name!r}; expected one of {sorted(presets)}")
  return presets[name]


def inference_config(experiment: str) -> ml_collections.ConfigDict:
  """Defaults of the inference experiments (`generate`, `score`): a checkpoint, a JSONL of
  requests and the batching of the compiled programs."""
  config = ml_collections.ConfigDict()
  config.experiment = experiment
  config.seed = 0
  # hf:DIR, an llmjax run directory (latest checkpoint) or RUN/checkpoints/STEP.
  config.checkpoint = ""
  config.prompts = ""  # JSONL: `prompt` (or chat `messages`), optional `id`
  config.tokenizer = ""  # '' = the checkpoint's own; else byte | spm:PATH.model | hf:DIR
  config.dtype = ""  # '' = the checkpoint's (HF); float32 | bfloat16 to override
  config.chat = False  # render each prompt as a user message through the chat template
  config.batch_size = 16
  config.length_bucket = 64  # prompt lengths round up to a multiple of this (one compile each)
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.sharding_rules = [list(rule) for rule in DEFAULT_RULES]
  return config


def judge_config() -> ml_collections.ConfigDict:
  """`config.judge` of the LM-as-judge experiments (llmjax.evals.backends)."""
  return ml_collections.ConfigDict({
      "backend": "local",  # local | openai
      # local: an llmjax run or hf:DIR (e.g. Prometheus-2 7B), batched on config.mesh
      "checkpoint": "", "tokenizer": "", "dtype": "", "batch_size": 16, "length_bucket": 128,
      # openai: any OpenAI-compatible endpoint (vLLM, a hosted API, python -m llmjax.serve)
      "base_url": "", "model": "", "api_key_env": "", "concurrency": 8, "timeout_s": 120.0,
      "http_retries": 5, "backoff_s": 1.0,
      # sampling (upstream Prometheus defaults) and parse retries (only of failed items)
      "temperature": 1.0, "top_p": 0.9, "max_tokens": 1024, "repetition_penalty": 1.03,
      "max_retries": 10,
      # a parse retry at temperature 0 would repeat its output: retries sample at this
      # temperature instead (0: no retries there)
      "retry_temperature": 1.0,
      # prompts longer than this many of the judge's tokens (0: no limit of ours; the
      # openai backend counts with judge.tokenizer) are recorded as too long, or, with
      # truncate_response, the response under evaluation is cut to fit
      "max_prompt_tokens": 0, "truncate_response": False,
  })
