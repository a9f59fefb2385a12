"""Steps to grokking: baseline against symmetry prompting, geometry prompting and Grokfast-EMA.

  python benchmarks/grokking_acceleration.py [--seeds 5] [--steps 1200] [--eval_every 25]
      [--config.KEY=VALUE ...]   (extra overrides apply to every method, e.g. another task)

Every method trains the same seeds on the same task (the default grokking preset unless
overridden) for the same step budget. Prints one JSON line: per method the median step at which
test accuracy first reaches 0.99 (a seed that never does counts as past the budget) and the
speed-up over the baseline (baseline median / method median).
"""

import argparse
import json
import math
import tempfile

import numpy as np

from llmjax import main as llmjax_main

METHODS = {
    "baseline": "none", "symmetry": "symmetry", "geometry": "geometry",
    "grokfast_ema": "grokfast_ema",
}


def steps_to_generalize(method: str, seeds: int, steps: int, eval_every: int,
                        overrides: list[str]) -> list[float]:
  with tempfile.TemporaryDirectory() as workdir:
    summary = llmjax_main.run([
        "--config", "configs/grokking.py", "--workdir", workdir, f"--config.num_seeds={seeds}",
        f"--config.train.steps={steps}", f"--config.train.eval_every={eval_every}",
        f"--config.train.checkpoint_every={steps}", f"--config.acceleration.method={method}",
        "--config.train.progress=False", *overrides])
  values = [summary[f"step_generalized_seed{i}"] for i in range(seeds)]
  return [math.inf if v is None else float(v) for v in values]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=1200)
  parser.add_argument("--eval_every", type=int, default=25)
  args, overrides = parser.parse_known_args()
  result = {"benchmark": "grokking_acceleration", "seeds": args.seeds, "step_budget": args.steps,
            "overrides": overrides}
  medians = {}
  for name, method in METHODS.items():
    per_seed = steps_to_generalize(method, args.seeds, args.steps, args.eval_every, overrides)
    medians[name] = float(np.median(per_seed))
    result[f"{name}_median_steps"] = medians[name] if math.isfinite(medians[name]) else "never"
    result[f"{name}_steps_per_seed"] = [v if math.isfinite(v) else "never" for v in per_seed]
  for name in METHODS:
    if name != "baseline":
      ratio = medians["baseline"] / medians[name]
      result[f"speedup_{name}"] = round(ratio, 3) if math.isfinite(ratio) else str(ratio)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
