"""Wall-clock of the default grokking run: llmjax against a straightforward PyTorch version.

  python benchmarks/grokking_speed.py [--steps N]

Same task table and split, model, optimizer, steps and evaluation cadence on both sides. Prints
one JSON line: one seed (llmjax's whole run, compilation included, against one PyTorch run) and
8 seeds (llmjax vmapping 8 seeds in one run against 8 sequential PyTorch runs).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from llmjax import main as llmjax_main  # noqa: E402
from llmjax.tasks.algorithmic import make_task  # noqa: E402
import torch_grokking  # noqa: E402


def llmjax_seconds(num_seeds: int, steps: int) -> tuple[float, dict]:
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    summary = llmjax_main.run(["--config", "configs/grokking.py", "--workdir", workdir,
                               f"--config.num_seeds={num_seeds}", f"--config.train.steps={steps}",
                               "--config.train.progress=False"])
    return time.perf_counter() - start, summary


def torch_seconds(config, seeds: list[int], steps: int) -> tuple[float, list[dict]]:
  task = make_task(config.task)
  runs = []
  for seed in seeds:
    train_rows, _ = task.split(seed, config.task.train_fraction)
    runs.append(torch_grokking.train(
        task.inputs_NxT, task.targets_N, train_rows, task.vocab_size, steps,
        config.train.eval_every, config.optim.lr, (config.optim.b1, config.optim.b2),
        config.optim.weight_decay, config.model.init_std, seed))
  return sum(r["seconds"] for r in runs), runs


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=None, help="default: the config's steps")
  args = parser.parse_args()
  config = llmjax_main.load_config_file("configs/grokking.py")
  steps = args.steps or config.train.steps
  torch.set_num_threads(os.cpu_count())
  jax_1, summary_1 = llmjax_seconds(1, steps)
  torch_1, runs_1 = torch_seconds(config, [config.seed], steps)
  jax_8, summary_8 = llmjax_seconds(8, steps)
  torch_8, runs_8 = torch_seconds(config, [config.seed + i for i in range(8)], steps)
  print(json.dumps({
      "benchmark": "grokking_speed", "task": summary_1["task"], "steps": steps,
      "llmjax_1_seed_s": round(jax_1, 2), "torch_1_seed_s": round(torch_1, 2),
      "speedup_1_seed": round(torch_1 / jax_1, 3),
      "llmjax_8_seeds_s": round(jax_8, 2), "torch_8_seeds_s": round(torch_8, 2),
      "speedup_8_seeds": round(torch_8 / jax_8, 3),
      "llmjax_test_accuracy_median_8": summary_8["final_test_accuracy"],
      "torch_test_accuracy_median_8": sorted(r["test_accuracy"] for r in runs_8)[4],
      "torch_version": torch.__version__,
  }))


if __name__ == "__main__":
  main()
