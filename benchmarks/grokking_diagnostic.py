"""Does the symmetry violation anticipate generalization? Over many seeds and task families,
against a matched control.

  python benchmarks/grokking_diagnostic.py [--seeds 10] [--eval_every 25]

For each task family, trains `--seeds` seeds and reads each seed's curves. Every signal is put
through the same rule (llmjax/experiments/grokking/stages.py: after memorization, the first step
at which it falls below 10% of its peak since memorization), and its lead is the step at which test
accuracy reaches 0.99 minus that crossing step. Signals:

  violation_max_invariances  the maximum instance violation of the invariances (identities
                         comparing two inputs' answers: commutativity, converse) over the whole
                         table: the paper's statistic on the stage rule's default identities
  violation_mean_invariances  their mean instance violation
  violation_max          the maximum instance violation of every identity, compositions
                         (associativity, transitivity) included
  violation_mean         the mean instance violation over the whole table
  violation_max_train    the same on training inputs only (instances whose inputs are all
                         training inputs; what a run can see without its test set)
  violation_mean_train
  violation_max_invariances_train, violation_mean_invariances_train   the invariances' on
                         training inputs only
  violation_max_<identity>  the maximum over one identity's instances (e.g. commutativity,
                         associativity): which identity the whole-table maximum waits for
  control_test_loss      the test loss itself: a signal that falls as test accuracy rises,
                         so a violation lead is only informative where it beats this one

Prints one JSON line: per family and signal, how many seeds had both a crossing and a
generalization step, the fraction in which the crossing came strictly first, and the leads
(median and all).
"""

import argparse
import json
import os
import tempfile

import numpy as np

from llmjax import runio
from llmjax import main as llmjax_main
from llmjax.experiments.grokking import stages

FAMILIES = {
    "algebraic_x+y_mod59": [],
    "comparison_grid3d": ["--config.task.family=comparison", "--config.task.grid=grid3d",
                          "--config.task.train_fraction=0.3", "--config.train.steps=1500"],
}
SIGNALS = {"violation_max_invariances": "violation_invariance_max",
           "violation_mean_invariances": "violation_invariance",
           "violation_max": "violation_max", "violation_mean": "violation",
           "violation_max_train": "violation_max_train",
           "violation_mean_train": "violation_train",
           "violation_max_invariances_train": "violation_invariance_max_train",
           "violation_mean_invariances_train": "violation_invariance_train",
           "control_test_loss": "test_loss"}


def crossing(curve: list[dict], key: str, threshold: float) -> int | None:
  found = stages.detect_stages([r["step"] for r in curve], [r["train_accuracy"] for r in curve],
                               [r["test_accuracy"] for r in curve], [r[key] for r in curve],
                               [r["effective_dimension"] for r in curve], threshold)
  return found["step_symmetry"]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--eval_every", type=int, default=25)
  args = parser.parse_args()
  result = {"benchmark": "grokking_diagnostic", "seeds": args.seeds}
  for family, overrides in FAMILIES.items():
    with tempfile.TemporaryDirectory() as workdir:
      summary = llmjax_main.run([
          "--config", "configs/grokking.py", "--workdir", workdir,
          f"--config.num_seeds={args.seeds}", f"--config.train.eval_every={args.eval_every}",
          "--config.train.checkpoint_every=100000", "--config.train.progress=False", *overrides])
      rows = runio.read_metrics(os.path.join(workdir), "eval")
    threshold = summary["violation_threshold"]
    out = {"violation_threshold": threshold}
    per_identity = {f"violation_max_{key[len('violation_'):-len('_max')]}": key
                    for key in sorted(rows[0]) if key.startswith("violation_")
                    and key.endswith("_max")
                    and key not in ("violation_max", "violation_invariance_max")}
    for signal, key in {**SIGNALS, **per_identity}.items():
      leads = []
      for i in range(args.seeds):
        curve = [r for r in rows if r["seed"] == i]
        crossed, generalized = crossing(curve, key, threshold), summary[
            f"step_generalized_seed{i}"]
        if crossed is not None and generalized is not None:
          leads.append(generalized - crossed)
      out[signal] = {
          "seeds_with_both": len(leads),
          "fraction_first": sum(lead > 0 for lead in leads) / len(leads) if leads else None,
          "median_lead_steps": float(np.median(leads)) if leads else None,
          "lead_steps": leads,
      }
    result[family] = out
  print(json.dumps(result))


if __name__ == "__main__":
  main()
