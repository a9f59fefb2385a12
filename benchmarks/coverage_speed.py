"""k-coverage: the vectorised computation against the literal brute-force definition.

  python benchmarks/coverage_speed.py [--big_n 100] [--big_train 100000]

Both on the same small two-hop instance (N = 16, 1,000 training inputs; they must agree), then the
vectorised one alone at the issue's scale (N = 100 with 100,000 training inputs, 10^6 inputs in
the domain). Prints one JSON line.
"""

import argparse
import json
import time

import numpy as np

from llmjax.experiments.coverage.compositional import make_task
from llmjax.experiments.coverage.k_coverage import k_coverage, k_coverage_brute_force


def timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--big_n", type=int, default=100)
  parser.add_argument("--big_train", type=int, default=100_000)
  args = parser.parse_args()
  small = make_task("two_hop", 16, 1000, seed=0)
  inputs, targets = small.splits["train"].inputs, small.full_targets()
  fast, fast_s = timed(k_coverage, inputs, targets, 2)
  brute, brute_s = timed(k_coverage_brute_force, inputs, targets, 2)
  big = make_task("two_hop", args.big_n, args.big_train, seed=0)
  big_inputs, big_targets = big.splits["train"].inputs, big.full_targets()
  result = {"benchmark": "coverage_speed",
            "small": {"n_tokens": 16, "num_train": 1000, "k": 2, "llmjax_s": round(fast_s, 3),
                      "brute_force_s": round(brute_s, 3), "ratio": round(brute_s / fast_s, 1),
                      "agree": bool(np.array_equal(fast, brute))}}
  for k in (1, 3, 5):
    covered, seconds = timed(k_coverage, big_inputs, big_targets, k)
    result[f"n{args.big_n}_train{args.big_train}_k{k}"] = {
        "seconds": round(seconds, 2), "covered_fraction": round(float(covered.mean()), 4)}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
