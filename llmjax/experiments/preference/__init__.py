"""Preference optimization and the Differential Information Distribution: the `dpo` experiment
(dpo, with the tiny SFT -> pairs -> DPO pipeline in dpo_tiny on the sorting task) and the DID's
synthetic experiments (did_synthetic, did, tabular_policy). The pair trainer that other systems
reuse is the engine's (llmjax.experiments.pair_training). See README.md."""
