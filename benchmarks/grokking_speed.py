"""Wall-clock of the default grokking run: llmjax against a PyTorch version of it.

  python benchmarks/grokking_speed.py [--steps N] [--seeds 8]

Same task table and split, model, optimizer, steps and evaluation cadence on both sides. llmjax
runs only the '=' position through the last layer's query, MLP and unembedding; the PyTorch
peer (benchmarks/torch_grokking.py) runs twice: with the same last-position readout (the same
work: `same_work` ratios, the headline) and the straightforward way, every position through
every layer (`end_to_end` ratios: what a researcher's eager script costs against llmjax). llmjax
does more than the peer on its side (the symmetry violation and effective dimension at every
evaluation, stage detection, plots), so the ratios understate its speed on equal work.

Prints one JSON line: one seed (llmjax's whole run, compilation included, against one PyTorch
run) and `--seeds` seeds (llmjax vmapping them in one run against sequential PyTorch runs).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from llmjax import main as llmjax_main  # noqa: E402
from llmjax.experiments.grokking.algorithmic import make_task  # noqa: E402
import torch_grokking  # noqa: E402


def llmjax_seconds(num_seeds: int, steps: int) -> tuple[float, dict]:
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    summary = llmjax_main.run(["--config", "configs/grokking.py", "--workdir", workdir,
                               f"--config.num_seeds={num_seeds}", f"--config.train.steps={steps}",
                               "--config.train.progress=False"])
    return time.perf_counter() - start, summary


def torch_seconds(config, seeds: list[int], steps: int,
                  last_only: bool) -> tuple[float, list[dict]]:
  task = make_task(config.task)
  runs = []
  for seed in seeds:
    train_rows, _ = task.split(seed, config.task.train_fraction)
    runs.append(torch_grokking.train(
        task.inputs_NxT, task.targets_N, train_rows, task.vocab_size, steps,
        config.train.eval_every, config.optim.lr, (config.optim.b1, config.optim.b2),
        config.optim.weight_decay, config.model.init_std, seed, last_only=last_only))
  return sum(r["seconds"] for r in runs), runs


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=None, help="default: the config's steps")
  parser.add_argument("--seeds", type=int, default=8)
  args = parser.parse_args()
  config = llmjax_main.load_config_file("configs/grokking.py")
  steps = args.steps or config.train.steps
  torch.set_num_threads(os.cpu_count())
  many = [config.seed + i for i in range(args.seeds)]
  result = {"benchmark": "grokking_speed", "steps": steps, "seeds": args.seeds}
  jax_1, summary_1 = llmjax_seconds(1, steps)
  jax_n, summary_n = llmjax_seconds(args.seeds, steps)
  result.update(task=summary_1["task"], llmjax_1_seed_s=round(jax_1, 2),
                llmjax_n_seeds_s=round(jax_n, 2),
                llmjax_test_accuracy_median_n=summary_n["final_test_accuracy"])
  for name, last_only in (("same_work", True), ("end_to_end", False)):
    torch_1, _ = torch_seconds(config, [config.seed], steps, last_only)
    torch_n, runs_n = torch_seconds(config, many, steps, last_only)
    result.update({
        f"torch_{name}_1_seed_s": round(torch_1, 2), f"torch_{name}_n_seeds_s": round(torch_n, 2),
        f"{name}_speedup_1_seed": round(torch_1 / jax_1, 3),
        f"{name}_speedup_n_seeds": round(torch_n / jax_n, 3),
        f"torch_{name}_test_accuracy_median_n": float(
            np.median([r["test_accuracy"] for r in runs_n]))})
  result["torch_version"] = torch.__version__
  print(json.dumps(result))


if __name__ == "__main__":
  main()
