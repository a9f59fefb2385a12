"""The CoT Encyclopedia (Lee et al. 2025): criteria, rubrics and classifications asked of a judge
and read back strictly (prompts), clustering of criteria (clustering), and comparisons of
models' strategy use (statistics)."""
