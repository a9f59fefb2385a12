"""The judge layer that every LM-as-judge system shares: judge backends (local JAX models,
OpenAI-compatible endpoints), strict verdict parsers and the resumable judging loop. The
benchmarks' own prompts and reports live in their packages (llmjax/experiments/biggen, flask)."""
