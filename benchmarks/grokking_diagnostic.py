"""Does the symmetry violation anticipate generalization? Over many seeds and task families.

  python benchmarks/grokking_diagnostic.py [--seeds 10]

For each task family, trains `--seeds` seeds and reads, per seed, the step at which the
violation falls below its threshold (llmjax/analysis/stages.py) and the step at which test
accuracy reaches 0.99. Prints one JSON line: per family, how many seeds reached both, the
fraction in which the violation crossing came first (strictly earlier), and the lead time in
steps (generalization step minus crossing step; median and all).
"""

import argparse
import json
import tempfile

import numpy as np

from llmjax import main as llmjax_main

FAMILIES = {
    "algebraic_x+y_mod59": [],
    "comparison_grid3d": ["--config.task.family=comparison", "--config.task.grid=grid3d",
                          "--config.task.train_fraction=0.3", "--config.train.steps=1500"],
}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--eval_every", type=int, default=25)
  args = parser.parse_args()
  result = {"benchmark": "grokking_diagnostic", "seeds": args.seeds}
  for name, overrides in FAMILIES.items():
    with tempfile.TemporaryDirectory() as workdir:
      summary = llmjax_main.run([
          "--config", "configs/grokking.py", "--workdir", workdir,
          f"--config.num_seeds={args.seeds}", f"--config.train.eval_every={args.eval_every}",
          "--config.train.checkpoint_every=100000", "--config.train.progress=False", *overrides])
    leads = []
    for i in range(args.seeds):
      crossing, generalized = (summary[f"step_symmetry_seed{i}"],
                               summary[f"step_generalized_seed{i}"])
      if crossing is not None and generalized is not None:
        leads.append(generalized - crossing)
    result[name] = {
        "seeds_with_both": len(leads),
        "fraction_violation_first": (sum(lead > 0 for lead in leads) / len(leads)
                                     if leads else None),
        "median_lead_steps": float(np.median(leads)) if leads else None,
        "lead_steps": leads,
        "violation_threshold": summary["violation_threshold"],
    }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
