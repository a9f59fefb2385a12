"""Load weights from an llmjax run's checkpoint or a Hugging Face directory: for inference
(`load_model`: the model, its params and tokenizer) and as the initial params of training
(`load_initial_params`: into the layout of the model being trained, a wrapper included).

Checkpoint specs:
  hf:DIR        a Hugging Face directory (config.json, *.safetensors, tokenizer files);
  RUN_DIR       an llmjax run (its config.json and checkpoints/): the latest step;
  RUN_DIR/checkpoints/STEP  that step.
"""

import dataclasses
import os
from typing import Any

import jax

from llmjax.data.readers import read_json_object
from llmjax.data.tokenizers import Tokenizer, load_tokenizer
from llmjax.errors import UserError
from llmjax.interop import load_hf
from llmjax.interop.hf_checkpoint import read_hf_config
from llmjax.interop.hf_config import model_config_from_hf
from llmjax.models import ModelConfig, decoder_layout, decoder_params, with_decoder_params
from llmjax.models.layout import DECODER_KEY
from llmjax.parallel import Parallel
from llmjax.weights.checkpoint import Checkpointer, check_compatible


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


def _hf_directory(spec: str) -> str:
  directory = spec[len("hf:"):]
  if not os.path.isdir(directory):
    raise UserError(f"checkpoint {spec}: directory not found")
  return directory


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
  """An llmjax run directory, its config and the checkpoint step a spec names."""

  path: str
  config: dict[str, Any]
  step: int | None  # None: the latest

  @classmethod
  def parse(cls, spec: str) -> "RunCheckpoint":
    path, step = os.path.abspath(spec), None
    if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == (
        "checkpoints"):
      step, path = int(os.path.basename(path)), os.path.dirname(os.path.dirname(path))
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path) or not os.path.isdir(os.path.join(path, "checkpoints")):
      raise UserError(f"checkpoint {spec}: expected 'hf:DIR', an llmjax run directory (with "
                      "config.json and checkpoints/) or RUN/checkpoints/STEP")
    return cls(path, read_json_object(config_path), step)

  @property
  def tokenizer(self) -> str:
    """The tokenizer spec the run's config records ('' if none)."""
    return self.config.get("data", {}).get("tokenizer", "")

  def model_config(self) -> ModelConfig:
    if "model" not in self.config:
      raise UserError(f"{self.path}/config.json: the run has no `model` config")
    return ModelConfig.from_dict(self.config["model"])

  def restore_params(self, abstract_params: Any, decoder_only: bool = False) -> tuple[Any, int]:
    """(params restored into `abstract_params`' shardings, the step). `decoder_only`: the
    target is a Decoder's params, found at the top of the saved params or under a wrapper's
    'decoder'. The latest checkpoint of a live run may be deleted while it is read (the run
    saved a newer one and keeps only a few): then the newest is read instead."""
    for attempt in range(_LIVE_RUN_ATTEMPTS):
      checkpointer = Checkpointer(os.path.join(self.path, "checkpoints"), async_save=False)
      try:
        step = checkpointer.latest_step() if self.step is None else self.step
        if step is None:
          raise UserError(f"checkpoint {self.path}: the run has no checkpoints yet")
        try:
          under = None
          if decoder_only:
            saved = checkpointer.saved_params(step)
            if isinstance(saved, dict) and DECODER_KEY in saved and "embed" not in saved:
              under = DECODER_KEY
          return checkpointer.restore_params(step, abstract_params, under), step
        except Exception:
          vanished = not os.path.isdir(os.path.join(self.path, "checkpoints", str(step)))
          if self.step is not None or not vanished or attempt == _LIVE_RUN_ATTEMPTS - 1:
            raise
      finally:
        checkpointer.close()
    raise AssertionError("unreachable")


_LIVE_RUN_ATTEMPTS = 3


def model_config_of(spec: str) -> ModelConfig:
  """The ModelConfig of a checkpoint spec (see the module docstring), read from its config.json
  alone: no weight is opened (an ahead-of-time compile needs nothing else)."""
  if spec.startswith("hf:"):
    return model_config_from_hf(read_hf_config(_hf_directory(spec)))
  return RunCheckpoint.parse(spec).model_config()


def load_model(spec: str, parallel: Parallel, tokenizer: str = "",
               dtype: str = "") -> LoadedModel:
  """Loads a decoder's params into `parallel`'s shardings (a wrapper's run: its decoder).

  Args:
    spec: see the module docstring.
    tokenizer: a tokenizer spec overriding the checkpoint's own ('' keeps it).
    dtype: parameter/compute dtype for HF checkpoints ('' = the checkpoint's).
  """
  if spec.startswith("hf:"):
    directory = _hf_directory(spec)
    config, params, family = load_hf(directory, parallel, dtype or None)
    loaded_tokenizer = (load_tokenizer(tokenizer) if tokenizer else
                        _tokenizer_or_none(directory))
    check_vocabulary(loaded_tokenizer, config, tokenizer or f"{spec}'s", spec)
    return LoadedModel(config, params, loaded_tokenizer, f"{family} from {directory}")
  run = RunCheckpoint.parse(spec)
  model_config = run.model_config()
  spec_tokenizer = tokenizer or run.tokenizer
  loaded_tokenizer = load_tokenizer(spec_tokenizer) if spec_tokenizer else None
  check_vocabulary(loaded_tokenizer, model_config, spec_tokenizer, spec)
  params, step = run.restore_params(decoder_layout(model_config, parallel), decoder_only=True)
  return LoadedModel(model_config, params, loaded_tokenizer, f"{run.path} step {step}")


def check_vocabulary(tokenizer, model_config, tokenizer_name: str, model_name: str) -> None:
  """A tokenizer with more ids than the model has embeddings is refused (its ids past the
  table would read garbage and give NaN log-probs)."""
  if tokenizer is not None and tokenizer.vocab_size > model_config.vocab_size:
    raise UserError(f"tokenizer {tokenizer_name} has {tokenizer.vocab_size} ids, more than the "
                    f"vocab_size {model_config.vocab_size} of {model_name}: use the model's own "
                    "tokenizer or one that fits")


def load_initial_params(spec: str, layout: Any, parallel: Parallel, fresh_params: Any) -> Any:
  """The params a training run starts from, placed in `layout`'s shardings.

  Args:
    spec: see the module docstring.
    layout: abstract params (shape, dtype, sharding) of the model being trained: a Decoder's or
      a wrapper's (whose decoder sits under 'decoder').
    parallel: the mesh.
    fresh_params: seed-initialised params in that layout; what the checkpoint does not hold
      (a wrapper's new heads) is kept from them.
  Returns:
    The params: all of them from an llmjax checkpoint of the same model, or the decoder's part
    from a Decoder checkpoint or `hf:DIR` with the rest fresh. A shape that disagrees stops
    with CheckpointMismatchError naming the parameter.
  """
  target = decoder_params(layout)
  if spec.startswith("hf:"):
    _, loaded, _ = load_hf(_hf_directory(spec), parallel)
    check_compatible(loaded, target)
    loaded = jax.tree.map(lambda x, t: jax.device_put(x.astype(t.dtype), t.sharding), loaded,
                          target)
    return with_decoder_params(fresh_params, loaded)
  run = RunCheckpoint.parse(spec)
  checkpointer = Checkpointer(os.path.join(run.path, "checkpoints"), async_save=False)
  try:
    step = checkpointer.latest_step() if run.step is None else run.step
    saved = checkpointer.saved_params(step) if step is not None else None
  finally:
    checkpointer.close()
  whole = isinstance(saved, dict) and isinstance(layout, dict) and set(saved) == set(layout)
  if whole:
    return run.restore_params(layout)[0]
  return with_decoder_params(fresh_params, run.restore_params(target, decoder_only=True)[0])
