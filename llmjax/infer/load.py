"""Load a model to run inference with: an llmjax run's checkpoint or a Hugging Face directory.

Checkpoint specs:
  hf:DIR        a Hugging Face directory (config.json, *.safetensors, tokenizer files);
  RUN_DIR       an llmjax run (its config.json and checkpoints/): the latest step;
  RUN_DIR/checkpoints/STEP  that step.
"""

import dataclasses
import json
import os


from llmjax.data.tokenizers import Tokenizer, load_tokenizer
from llmjax.errors import UserError
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel


@dataclasses.dataclass
class LoadedModel:
  config: ModelConfig
  params: object
  tokenizer: Tokenizer | None
  source: str


def _tokenizer_or_none(directory: str) -> Tokenizer | None:
  """The directory's own tokenizer, None if it ships none (a broken one is an error)."""
  if not any(os.path.isfile(os.path.join(directory, name))
             for name in ("tokenizer.json", "tokenizer.model")):
    return None
  return load_tokenizer(f"hf:{directory}")


def load_model(spec: str, parallel: Parallel, tokenizer: str = "",
               dtype: str = "") -> LoadedModel:
  """Loads params into `parallel`'s shardings.

  Args:
    spec: see the module docstring.
    tokenizer: a tokenizer spec overriding the checkpoint's own ('' keeps it).
    dtype: parameter/compute dtype for HF checkpoints ('' = the checkpoint's).
  """
  if spec.startswith("hf:"):
    from llmjax.interop import load_hf
    directory = spec[len("hf:"):]
    if not os.path.isdir(directory):
      raise UserError(f"checkpoint {spec}: directory not found")
    config, params, family = load_hf(directory, parallel, dtype or None)
    return LoadedModel(config, params, load_tokenizer(tokenizer) if tokenizer else
                       _tokenizer_or_none(directory), f"{family} from {directory}")
  return _load_llmjax(spec, parallel, tokenizer)


def _load_llmjax(spec: str, parallel: Parallel, tokenizer: str) -> LoadedModel:
  from llmjax.interop.hf_checkpoint import decoder_params_layout
  from llmjax.train.checkpoint import Checkpointer

  path = os.path.abspath(spec)
  step = None
  if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == (
      "checkpoints"):
    step, path = int(os.path.basename(path)), os.path.dirname(os.path.dirname(path))
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path) or not os.path.isdir(os.path.join(path, "checkpoints")):
    raise UserError(f"checkpoint {spec}: expected 'hf:DIR', an llmjax run directory (with "
                    "config.json and checkpoints/) or RUN/checkpoints/STEP")
  with open(config_path) as f:
    run_config = json.load(f)
  if "model" not in run_config:
    raise UserError(f"{config_path}: the run has no `model` config")
  model_config = ModelConfig.from_dict(run_config["model"])
  checkpointer = Checkpointer(os.path.join(path, "checkpoints"), async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise UserError(f"checkpoint {spec}: the run has no checkpoints yet")
    params = checkpointer.restore_params(step, decoder_params_layout(model_config, parallel))
  finally:
    checkpointer.close()
  spec_tokenizer = tokenizer or run_config.get("data", {}).get("tokenizer", "")
  return LoadedModel(model_config, params,
                     load_tokenizer(spec_tokenizer) if spec_tokenizer else None,
                     f"{path} step {step}")
