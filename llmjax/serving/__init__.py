"""llmjax models behind an OpenAI-compatible HTTP API (`python -m llmjax.serve`)."""
