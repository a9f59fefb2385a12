"""Weights on disk: orbax checkpoints of the train state, and loading params from an llmjax run
or a Hugging Face directory for inference and as the start of training."""

from llmjax.weights.checkpoint import Checkpointer, check_compatible
from llmjax.weights.load import (LoadedModel, RunCheckpoint, load_initial_params, load_model,
                                 model_config_of)

__all__ = ["Checkpointer", "LoadedModel", "RunCheckpoint", "check_compatible",
           "load_initial_params", "load_model", "model_config_of"]
