"""The coverage principle: compositional generalization by pattern matching (experiment
`coverage`).

Presets (select with `--config configs/coverage.py:PRESET`):

cpu (default) — two-hop task over N = 20 tokens, 70% of each function's domain seen, 90% of the
  inputs that compose seen entries for training (3,527), a 4-layer GPT-2-style model (d_model
  128), 4,000 steps; coverage labels at k = 3 (at N = 20 two fragments agree on a context by
  chance with probability 1/20, and 1-equivalence then merges nearly all fragments: the
  1-coverage of this training set is almost the whole domain).
  python -m llmjax.main --config configs/coverage.py --workdir runs/coverage
  Runtime: about 1 min 50 s on 2 CPU cores (measured 2026-11-29).
  Expected: both_seen accuracy 0.99, unseen types 0.07-0.14 (chance 0.05); pooled over the test
  types, accuracy 0.95 inside the 3-coverage vs 0.10 outside (summary.json `covered_accuracy`,
  `uncovered_accuracy`; `by_k` for k = 1..5).
paper — two-hop over N = 50, the paper's GPT-2 (8 layers, 12 heads, d_model 768), lr 8e-4,
  weight decay 0.1, constant schedule with warmup, the paper's batch size 4,096 and 62,500
  steps (accelerator-sized).
path_ambiguity / cot — the paper task (N = 50) with the path-ambiguous graph
  (b = f1(x1, x2), t = f2(b, x2, x3)) or with chain-of-thought supervision (the bridge entity is
  emitted before the answer).
three_hop / parallel_two_hop — the other graphs, N = 12, CPU-sized.
sweep — data required for two-hop generalization vs N (N = 20 .. 50), 3 seeds per point and
  2 bisection steps near each N's threshold, exponent fit beside the theory's
  N^(2.5 - 0.5/k) (accelerator-sized).
sweep_cpu — the same at N = 8 .. 14 on CPU, 2 seeds per point and one bisection step (up to 64
  trainings of 2,000 steps: hours on 2 cores; not run with seeds and bisection yet). Measured
  2026-11-29 with one seed, 1,500 steps and four fractions (16 minutes): no N reached 0.8 (best
  0.54-0.59 at 90% of the pool for N <= 12), so no exponent at this scale — see
  docs/benchmarks.md.
The paper-sized presets (paper, path_ambiguity, cot, sweep) and three_hop/parallel_two_hop have
not been run to completion yet: no runtime or result is claimed for them.

Outputs: W/summary.json (accuracy per test type, covered vs uncovered accuracy at
`coverage.k`, coverage fraction per test type, and `by_k` for k = 1..max_k), W/data/*.jsonl
(every split with `covered` labels), plots/accuracy_vs_coverage.png, plots/loss.png; the sweep
writes data_required, the fitted exponent with its 95% interval and plots/data_vs_n.png.
"""

import ml_collections

from llmjax.config_base import base_config, model_config, select_preset


def _gpt2(d_model: int, n_layers: int, n_heads: int, dropout: float = 0.0):
  # vocab_size and max_len are set from the task by the experiment.
  return model_config(vocab_size=1, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                      d_ff=4 * d_model, activation="gelu", norm="layernorm", norm_eps=1e-5,
                      positions="learned", max_len=8, tie_embeddings=True, qkv_bias=True,
                      out_bias=True, mlp_bias=True, dropout=dropout)


def _cpu(config):
  config.task.update(n_tokens=20, train_fraction=0.9)
  config.coverage.k = 3
  config.model = _gpt2(d_model=128, n_layers=4, n_heads=4)
  config.optim.update(lr=1e-3, warmup_steps=100, weight_decay=0.1)
  config.train.update(steps=4000, batch_size=128, log_every=100, eval_every=500,
                      checkpoint_every=1000)


def _paper(config):
  config.task.update(n_tokens=50, train_fraction=0.5)
  config.model = _gpt2(d_model=768, n_layers=8, n_heads=12)
  config.optim.update(lr=8e-4, warmup_steps=1000, weight_decay=0.1)
  config.train.update(steps=62_500, batch_size=4096, log_every=500, eval_every=2500,
                      checkpoint_every=5000)


def _path_ambiguity(config):
  _paper(config)
  config.task.kind = "path_ambiguous"


def _cot(config):
  _paper(config)
  config.task.cot = True


def _three_hop(config):
  _cpu(config)
  config.task.update(kind="three_hop", n_tokens=12, train_fraction=0.9)


def _parallel_two_hop(config):
  _cpu(config)
  config.task.update(kind="parallel_two_hop", n_tokens=12, train_fraction=0.9)


def _sweep(config):
  _paper(config)
  config.mode = "sweep"
  config.sweep.update(n_tokens=(20, 30, 40, 50), seeds=3, refine=2)


def _sweep_cpu(config):
  _cpu(config)
  config.mode = "sweep"
  config.train.update(steps=2000)
  config.sweep.update(n_tokens=(8, 10, 12, 14), seeds=2, refine=1)


PRESETS = {"cpu": _cpu, "paper": _paper, "path_ambiguity": _path_ambiguity, "cot": _cot,
           "three_hop": _three_hop, "parallel_two_hop": _parallel_two_hop, "sweep": _sweep,
           "sweep_cpu": _sweep_cpu}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
  config = base_config(experiment="coverage")
  config.mode = "single"  # single | sweep
  config.task = ml_collections.ConfigDict({
      # two_hop | three_hop | parallel_two_hop | path_ambiguous
      "kind": "two_hop", "n_tokens": 20, "seen_fraction": 0.7,
      # Training inputs: num_train if set (> 0), else train_fraction of the inputs that compose
      # seen entries.
      "num_train": 0, "train_fraction": 0.35, "num_test": 2000, "cot": False,
  })
  config.coverage = ml_collections.ConfigDict({"k": 1, "max_k": 5})
  config.sweep = ml_collections.ConfigDict({
      "n_tokens": (8, 10, 12, 14), "target_accuracy": 0.8,
      "train_fractions": (0.1, 0.15, 0.2, 0.3, 0.45, 0.65, 0.9),
      # Seeds per point (the accuracy compared with the target is their mean) and bisection
      # steps between the last fraction below the target and the first at it.
      "seeds": 1, "refine": 1,
  })
  config.eval_batch_size = 512
  config.optim.schedule = "constant"
  select_preset(preset, PRESETS, "cpu")(config)
  return config
