"""Checkpoint and tokenizer interop with the Hugging Face ecosystem (local files only)."""

from llmjax.interop.hf_checkpoint import load_hf, save_hf
from llmjax.interop.hf_config import FAMILIES, model_config_from_hf

__all__ = ["FAMILIES", "load_hf", "model_config_from_hf", "save_hf"]
