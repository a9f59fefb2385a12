"""LM-as-judge evaluation: judge prompts and parsers (prometheus.py, flask.py), judge backends
(local JAX models, OpenAI-compatible endpoints) and the resumable judging loop."""
