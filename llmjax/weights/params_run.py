"""Params written as an llmjax run directory (config.json + checkpoints/STEP holding only
`params`), which `load_model`, `train.init_from` and every checkpoint spec read like a trained
run: the output of a params transform such as resuscitation."""

import dataclasses
import os
from typing import Any

from llmjax import runio
from llmjax.models import ModelConfig
from llmjax.weights.checkpoint import Checkpointer


def save_params_run(directory: str, params: Any, model_config: ModelConfig, step: int,
                    tokenizer: str, extra_config: dict | None = None) -> str:
  """Writes `params` as step `step` of an llmjax run at `directory`; returns the checkpoint
  spec (DIRECTORY/checkpoints/STEP). `tokenizer`: the spec the run's config records."""
  os.makedirs(directory, exist_ok=True)
  runio.write_json(os.path.join(directory, "config.json"),
                   {**(extra_config or {}), "model": dataclasses.asdict(model_config),
                    "data": {"tokenizer": tokenizer}})
  checkpointer = Checkpointer(os.path.join(directory, "checkpoints"), async_save=False)
  try:
    checkpointer.save(step, {"params": params})
  finally:
    checkpointer.close()
  return os.path.join(directory, "checkpoints", str(step))
