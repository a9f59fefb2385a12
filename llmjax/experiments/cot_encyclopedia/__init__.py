"""The CoT Encyclopedia (Lee et al. 2025): criteria, rubrics and classifications asked of a judge
and read back strictly (prompts), clustering of criteria (clustering), comparisons of models'
strategy use (statistics), prediction of a question's successful strategy (prediction), the
judged pipeline (experiment) and its CPU demonstration on strategy sums (demo, strategy_sums).
See README.md."""
