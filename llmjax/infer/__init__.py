"""Inference on the engine's decoder: KV-cache generation, sampling and log-prob scoring."""

from llmjax.infer.generate import Completion, Generator, generate_text
from llmjax.infer.sampling import SamplingParams
from llmjax.infer.scoring import Scorer

__all__ = ["Completion", "Generator", "SamplingParams", "Scorer", "generate_text"]
