"""llmjax: one JAX/Flax engine for a family of language-model research systems."""

__version__ = "0.1.0"
