"""Steps and seconds to grokking: the baseline against symmetry prompting (leak-free and
transductive), geometry prompting and Grokfast (EMA and MA, ours and at their published
settings).

  python benchmarks/grokking_acceleration.py [--seeds 5] [--steps 1200] [--eval_every 25]
      [--methods NAME,NAME,...] [--config.KEY=VALUE ...]
      (extra overrides apply to every method, e.g. another task: --config.task.op=x-y)

Every method trains the same seeds on the same task (the default grokking preset unless
overridden) for the same step budget, its seeds vmapped in one run. Per method it reports the
step at which each seed's test accuracy first reaches 0.99 (a seed that never does counts as
past the budget), their median, the wall-clock of one training step of all seeds together
(`step_time_s`, the method's cost: the symmetry loss runs the model on more inputs, the
geometry prior takes an SVD, Grokfast-MA keeps a window of gradients), and the seconds to
generalization (median step x step time). Speed-ups over the baseline are given in steps and in
seconds. Prints one JSON line.

The geometry prompting weights (entropy 0.1, Lipschitz 1.0) were chosen on the default task
(x+y mod 59); run with another task's overrides to see them on a task they were not tuned on.
"""

import argparse
import json
import math
import tempfile

import numpy as np

from llmjax import main as llmjax_main

# name -> overrides. "published" = the Grokfast authors' algorithmic-task settings (their README
# and main.py: AdamW lr 1e-3, betas (0.9, 0.98); EMA alpha 0.98, lambda 2, weight decay 0.005;
# MA window 100, lambda 5, weight decay 0.01). The others keep the preset's optimizer.
METHODS = {
    "baseline": ["--config.acceleration.method=none"],
    "symmetry": ["--config.acceleration.method=symmetry"],
    "symmetry_transductive": ["--config.acceleration.method=symmetry",
                              "--config.acceleration.symmetry_inputs=all"],
    "geometry": ["--config.acceleration.method=geometry"],
    "grokfast_ema": ["--config.acceleration.method=grokfast_ema"],
    "grokfast_ema_published": ["--config.acceleration.method=grokfast_ema",
                               "--config.acceleration.grokfast_alpha=0.98",
                               "--config.acceleration.grokfast_ema_lambda=2.0",
                               "--config.optim.lr=1e-3", "--config.optim.weight_decay=0.005"],
    "grokfast_ma": ["--config.acceleration.method=grokfast_ma"],
    "grokfast_ma_published": ["--config.acceleration.method=grokfast_ma",
                              "--config.acceleration.grokfast_window=100",
                              "--config.acceleration.grokfast_ma_lambda=5.0",
                              "--config.optim.lr=1e-3", "--config.optim.weight_decay=0.01"],
}


def run_method(overrides: list[str], seeds: int, steps: int, eval_every: int) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    summary = llmjax_main.run([
        "--config", "configs/grokking.py", "--workdir", workdir, f"--config.num_seeds={seeds}",
        f"--config.train.steps={steps}", f"--config.train.eval_every={eval_every}",
        f"--config.train.checkpoint_every={steps}", "--config.train.progress=False",
        *overrides])
  per_seed = [summary[f"step_generalized_seed{i}"] for i in range(seeds)]
  return {"steps": [math.inf if v is None else float(v) for v in per_seed],
          "step_time_s": summary["step_time_s"], "label": summary["method"]}


def _finite(value):
  return value if math.isfinite(value) else None


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=1200)
  parser.add_argument("--eval_every", type=int, default=25)
  parser.add_argument("--methods", default=",".join(METHODS))
  args, overrides = parser.parse_known_args()
  names = args.methods.split(",")
  unknown = [n for n in names if n not in METHODS]
  if unknown or "baseline" not in names:
    parser.error(f"--methods: {unknown or 'baseline missing'}; expected baseline and any of "
                 f"{list(METHODS)}")
  result = {"benchmark": "grokking_acceleration", "seeds": args.seeds, "step_budget": args.steps,
            "eval_every": args.eval_every, "overrides": overrides}
  measured = {}
  for name in names:
    measured[name] = run_method(METHODS[name] + overrides, args.seeds, args.steps,
                                args.eval_every)
    median = float(np.median(measured[name]["steps"]))
    measured[name]["median"] = median
    measured[name]["seconds"] = median * measured[name]["step_time_s"]
    result[name] = {
        "label": measured[name]["label"],
        "steps_per_seed": [_finite(v) for v in measured[name]["steps"]],
        "median_steps": _finite(median),
        "step_time_ms": round(1000 * measured[name]["step_time_s"], 2),
        "seconds_to_generalize": _finite(round(measured[name]["seconds"], 2)),
    }
  base = measured["baseline"]
  for name in names:
    if name != "baseline":
      for unit, key in (("steps", "median"), ("seconds", "seconds")):
        # A side that never generalized within the budget has no ratio (null), not 0 or inf.
        both = math.isfinite(base[key]) and math.isfinite(measured[name][key])
        result[name][f"speedup_{unit}"] = (round(base[key] / measured[name][key], 3)
                                           if both else None)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
