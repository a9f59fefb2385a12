"""The DID paper's synthetic experiments (experiment `did_synthetic`; method in
llmjax/experiments/preference/did_synthetic.py): energy-model pi_ref and pi* over an enumerable
output space, matched and mismatched rejected-response policies, a tabular policy and a tiny decoder
trained with DPO, SimPO and IPO. Writes summary.json (the three claims' numbers),
js_tabular.png, js_decoder.png, margins.png and displacement.png.

  python -m llmjax.main --config configs/did_synthetic.py --workdir runs/did
Runtime: 4 min 30 s on host C (2-core AMD EPYC, docs/benchmarks.md). Result (seed 0): tabular
DPO reaches pi* only with the matched pi_l (JS 2e-8 against 0.09-0.45), the margin ordering
holds in the mean, low-entropy DIDs concentrate the policy, and the chosen log-likelihood
falls most for them (displacement_vs_entropy_corr +0.94); the README's DID section says what
reproduces.
"""

import ml_collections

from llmjax.config_base import base_config, model_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config(experiment="did_synthetic")
  # Strings of 1..max_length letters over `tokens` letters (+ EOS): 258 outputs; max_length 4
  # gives 1,554 (the tabular loss holds N x N pairs: about 30x slower).
  config.space = ml_collections.ConfigDict({"tokens": 6, "max_length": 3})
  # pi_ref ~ exp(-reference_scale E_ref); pi* ~ pi_ref^target_power exp(-target_scale E*).
  config.energy = ml_collections.ConfigDict({"reference_scale": 1.5, "target_power": 1.0,
                                             "target_scale": 1.0})
  # Targets of the DID-entropy sweep: pi_ref exp(-s E*) for each s; their DID ~ exp(-s E*)
  # does not depend on pi_ref, and its entropy falls as |s| grows.
  # (|s| = 4 does not converge in 2,000 steps: pairs seldom reach the outputs it favours.)
  config.sweep = ml_collections.ConfigDict({
      "did_scales": [-3.0, -2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0, 3.0],
      "steps": 2000, "lr": 0.2})
  # DPO's beta is also the matched pi_l's power; the wrong power is this factor times it.
  # These settings replace config.dpo's loss_type, beta and simpo_gamma in every decoder run.
  config.objectives = ml_collections.ConfigDict({
      "dpo_beta": 0.5, "simpo_beta": 2.5, "simpo_gamma": 0.5, "ipo_beta": 0.5})
  config.wrong_power_factor = 3.0
  config.tabular = ml_collections.ConfigDict({"steps": 600, "lr": 0.05, "log_every": 25})

  config.data = ml_collections.ConfigDict({"tokenizer": "byte", "loss_on_prompt": False})
  config.init = ""
  config.model = model_config(vocab_size=264, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=256, max_len=16)
  config.decoder = ml_collections.ConfigDict({
      "sft_examples": 20000, "sft_eval_examples": 512, "train_pairs": 8192, "eval_pairs": 512})
  config.sft = ml_collections.ConfigDict({
      "train": dict(config.train.to_dict(), steps=200, batch_size=32, seq_len=64, log_every=50,
                    eval_every=100, checkpoint_every=200, eval_batches=2),
      "optim": dict(config.optim.to_dict(), lr=3e-3, warmup_steps=20, weight_decay=0.0)})
  config.dpo = ml_collections.ConfigDict({
      "loss_type": "sigmoid", "beta": 0.5, "label_smoothing": 0.0, "simpo_gamma": 0.5,
      "reference_free": False, "reference": "", "precompute_ref_logprobs": False})
  config.train.update(steps=300, batch_size=64, seq_len=8, log_every=50, eval_every=100,
                      checkpoint_every=100, keep_checkpoints=4, eval_batches=2)
  config.optim.update(lr=1e-3, warmup_steps=10, weight_decay=0.0)
  return config
