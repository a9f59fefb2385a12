"""The coverage principle (experiment `coverage`; Chang et al. 2025).

Method. A model that generalizes by pattern matching can only reach inputs connected to its
training inputs by substituting functionally equivalent fragments (k_coverage.py).
We build a compositional task (compositional.py), train a GPT-2-style decoder from the
engine on the training split, and measure final-answer accuracy on every test type. Each test
input is labelled by whether it lies in the k-coverage of the training set, for k = 1..5; the
prediction is that accuracy is high inside coverage and near chance (1/N) outside.

Modes:
  single  one task, one model: accuracy per type, covered vs uncovered accuracy per k, coverage
          fraction per test type (summary.json; plots/accuracy_vs_coverage.png).
  sweep   for each N in `sweep.n_tokens`, train on growing training sets (fractions of the inputs
          that compose seen entries) until the both-seen accuracy, averaged over
          `sweep.seeds` seeds (each its own tables and split), reaches
          `sweep.target_accuracy`; then bisect `sweep.refine` times between the last fraction
          below the target and the first at it, so the threshold is read on a finer grid.
          Fit log(data required) = alpha * log(N) + c and report alpha with its 95% confidence
          interval (paper: alpha >= 2), beside the paper's k-dependent theory
          N_req ~ N^(2.5 - 0.5/k) for k = 1, 2, 3 (plots/data_vs_n.png).
Every run exports its splits to W/data/<split>.jsonl with `covered` labels at `coverage.k`,
and beside them what recomputing those labels needs and nothing else: W/data/domain.json (the
task kind, the domain size N and input length n, k, each function's table and its seen-entry
table) and W/data/full_targets.npz (the target of every one of the N^n inputs, which the
k-coverage definition ranges over). `covered` follows from train.jsonl and these two files
alone (tests/test_coverage.py recomputes it with the literal definition).
"""

import json
import os
import sys

import ml_collections
import numpy as np
import scipy.stats

from llmjax import checks, plotting, runio
from llmjax.data.batches import lm_batch
from llmjax.data.pipeline import row_batches
from llmjax.errors import UserError
from llmjax.experiments.coverage import compositional
from llmjax.experiments.coverage.k_coverage import k_coverage
from llmjax.infer import Generator, SamplingParams
from llmjax.models import ModelConfig
from llmjax.parallel import Parallel
from llmjax.train.lm import lm_trainer


def _make_task(task_config, n_tokens: int, num_train: int, seed: int):
  return compositional.make_task(task_config.kind, n_tokens, num_train,
                                 task_config.seen_fraction, task_config.num_test, seed)


def _num_train(task_config, n_tokens: int) -> int:
  """`task.num_train` rows, or the `task.train_fraction` of the inputs composing seen entries."""
  if task_config.num_train:
    return int(task_config.num_train)
  pool = compositional.max_train_size(task_config.kind, n_tokens, task_config.seen_fraction)
  return max(1, int(task_config.train_fraction * pool))


def export_splits(task, covered_mask, cot: bool, directory: str, k: int) -> None:
  """W/data/<split>.jsonl: input, target, type, (bridges with CoT), covered on test rows; and
  W/data/domain.json + full_targets.npz, from which `covered` can be recomputed."""
  if not runio.is_writer():
    return
  os.makedirs(directory, exist_ok=True)
  domain = {"kind": task.kind, "n_tokens": task.n_tokens, "num_inputs": task.num_inputs,
            "domain_size": task.n_tokens ** task.num_inputs, "k": k,
            "tables": [t.tolist() for t in task.tables],
            "seen": [s.astype(int).tolist() for s in task.seen]}
  with runio.atomic_output(os.path.join(directory, "domain.json")) as tmp, open(tmp, "w") as f:
    json.dump(domain, f)
  with runio.atomic_output(os.path.join(directory, "full_targets.npz")) as tmp:
    with open(tmp, "wb") as f:
      np.savez_compressed(f, full_targets=task.full_targets().astype(np.int32))
  for name, split in task.splits.items():
    covered = covered_mask[tuple(split.inputs.T)]
    with runio.atomic_output(os.path.join(directory, f"{name}.jsonl")) as tmp, open(tmp, "w") as f:
      for i in range(len(split)):
        row = {"input": split.inputs[i].tolist(), "target": int(split.targets[i]),
               "type": name}
        if cot:
          row["bridges"] = split.bridges[i].tolist()
        if name != "train":
          row["covered"] = bool(covered[i])
        f.write(json.dumps(row) + "\n")


def train_model(config, task, workdir: str):
  """Trains the decoder on the training split; returns (model config, params, trainer, the
  trainer's fit result)."""
  cot = config.task.cot
  rows = compositional.sequences(task.splits["train"], cot)
  length = rows.shape[1] - 1
  model_values = dict(config.model.to_dict(), vocab_size=task.n_tokens, max_len=length)
  model_config = ModelConfig.from_dict(model_values)
  train_config = ml_collections.ConfigDict(config.train.to_dict())
  train_config.seq_len = length
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  trainer = lm_trainer(model_config, train_config, config.optim, parallel)
  n = task.num_inputs

  def to_batch(batch_rows):
    return lm_batch(batch_rows, n)

  # Teacher-forced loss/accuracy on both-seen test inputs, logged during training.
  held_out = compositional.sequences(task.splits[compositional.seen_type(task.kind)], cot)
  B = train_config.batch_size
  eval_batches = [to_batch(held_out[i:i + B]) for i in range(0, len(held_out) - B + 1, B)]
  result = trainer.fit(workdir, iter(row_batches(rows, B, config.seed, to_batch)),
                       eval_batches[:config.train.eval_batches], seed=config.seed,
                       resume=config.resume, overwrite=config.overwrite)
  return model_config, result["state"].params, trainer, result


def answer_accuracy(model_config, params, parallel, task, cot: bool, batch_size: int):
  """Per split, whether the greedy final answer is right (bridges generated first with CoT)."""
  steps = (task.splits["train"].bridges.shape[1] if cot else 0) + 1
  generator = Generator(model_config, parallel, batch_size=batch_size,
                        length_bucket=task.num_inputs)
  correct = {}
  for name, split in task.splits.items():
    if name == "train" or len(split) == 0:
      correct[name] = np.zeros(0, bool)
      continue
    completions = generator.generate_ids(params, split.inputs.tolist(),
                                         SamplingParams(max_new_tokens=steps))
    answers = np.array([c[0].tokens[-1] for c in completions])
    correct[name] = answers == split.targets
  return correct


def coverage_report(task, correct, ks) -> tuple[dict, dict]:
  """(per-k masks per split, summary numbers): coverage fractions, covered/uncovered accuracy."""
  full_targets = task.full_targets()
  train_inputs = task.splits["train"].inputs
  masks, report = {}, {}
  both_seen = compositional.seen_type(task.kind)
  for k in ks:
    mask = k_coverage(train_inputs, full_targets, k)
    masks[k] = mask
    covered = {name: mask[tuple(s.inputs.T)] for name, s in task.splits.items()
               if name != "train" and len(s)}
    report[f"k{k}"] = {
        "coverage_fraction": {name: float(c.mean()) for name, c in covered.items()},
        **_split_accuracy(correct[both_seen], covered[both_seen], prefix=f"{both_seen}_"),
        **_split_accuracy(
            np.concatenate([correct[n] for n in covered if n != "train_inferred"]),
            np.concatenate([covered[n] for n in covered if n != "train_inferred"]),
            prefix="test_"),
    }
  return masks, report


def _split_accuracy(correct, covered, prefix: str) -> dict:
  def mean(x):
    return float(x.mean()) if len(x) else None
  return {f"{prefix}covered_accuracy": mean(correct[covered]),
          f"{prefix}uncovered_accuracy": mean(correct[~covered]),
          f"{prefix}covered_count": int(covered.sum()),
          f"{prefix}uncovered_count": int((~covered).sum())}


def run_single(config, workdir: str) -> dict:
  n_tokens = config.task.n_tokens
  task = _make_task(config.task, n_tokens, _num_train(config.task, n_tokens), config.seed)
  model_config, params, trainer, result = train_model(config, task, workdir)
  correct = answer_accuracy(model_config, params, trainer.parallel, task, config.task.cot,
                            config.eval_batch_size)
  ks = list(range(1, config.coverage.max_k + 1))
  if config.coverage.k not in ks:
    ks.append(config.coverage.k)
  masks, report = coverage_report(task, correct, ks)
  export_splits(task, masks[config.coverage.k], config.task.cot, os.path.join(workdir, "data"),
                config.coverage.k)
  _plot_accuracy_vs_coverage(os.path.join(workdir, "plots", "accuracy_vs_coverage.png"),
                             report, task)
  train_rows = runio.read_metrics(workdir, "train")
  eval_rows = runio.read_metrics(workdir, "eval")
  plotting.plot_curves(os.path.join(workdir, "plots", "loss.png"), {
      "train": ([r["step"] for r in train_rows], [r["loss"] for r in train_rows]),
      "both-seen (teacher-forced)": ([r["step"] for r in eval_rows],
                                     [r["loss"] for r in eval_rows])},
      ylabel="cross-entropy", title="coverage: loss", logy=True)
  headline = report[f"k{config.coverage.k}"]
  return {
      "task": config.task.kind, "n_tokens": n_tokens, "cot": bool(config.task.cot),
      "num_train": len(task.splits["train"]), "steps": result["step"],
      "stopped_early": result["stopped_early"], "chance_accuracy": 1.0 / n_tokens,
      "accuracy": {name: float(c.mean()) for name, c in correct.items() if len(c)},
      "test_sizes": {name: len(s) for name, s in task.splits.items()},
      "coverage_k": config.coverage.k,
      "covered_accuracy": headline["test_covered_accuracy"],
      "uncovered_accuracy": headline["test_uncovered_accuracy"],
      "coverage_fraction": headline["coverage_fraction"],
      "by_k": report,
  }


def _plot_accuracy_vs_coverage(path, report, task) -> None:
  if not runio.is_writer():
    return
  import matplotlib.pyplot as plt
  ks = sorted(int(key[1:]) for key in report)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  width = 0.38
  for offset, (kind, label) in enumerate((("covered", "inside k-coverage"),
                                          ("uncovered", "outside"))):
    values = [report[f"k{k}"][f"test_{kind}_accuracy"] for k in ks]
    axes[0].bar(np.array(ks) + (offset - 0.5) * width,
                [np.nan if v is None else v for v in values], width, label=label)
  axes[0].axhline(1.0 / task.n_tokens, color="gray", ls="--", lw=1, label="chance")
  axes[0].set(xlabel="k", ylabel="accuracy (test types pooled)", xticks=ks,
              title="accuracy inside vs outside k-coverage", ylim=(0, 1.05))
  axes[0].legend()
  for name in [n for n in task.splits if n != "train"]:
    axes[1].plot(ks, [report[f"k{k}"]["coverage_fraction"].get(name, np.nan) for k in ks],
                 marker="o", label=name)
  axes[1].set(xlabel="k", ylabel="fraction of the test set covered", ylim=(0, 1.05), xticks=ks,
              title="k-coverage of each test set")
  axes[1].legend(fontsize=8)
  plotting.save_figure(fig, path)


def fit_power_law(n_values, data_required, confidence: float = 0.95) -> dict:
  """OLS fit of log(data) = alpha log(N) + c; alpha with its t-interval."""
  x, y = np.log(np.asarray(n_values, float)), np.log(np.asarray(data_required, float))
  fit = scipy.stats.linregress(x, y)
  dof = len(x) - 2
  half = (scipy.stats.t.ppf(0.5 + confidence / 2, dof) * fit.stderr
          if dof > 0 else float("nan"))
  return {"alpha": float(fit.slope), "alpha_ci": [float(fit.slope - half),
                                                  float(fit.slope + half)],
          "intercept": float(fit.intercept), "r2": float(fit.rvalue ** 2)}


def search_data_required(fractions, accuracy_at, target: float, refine: int):
  """The smallest training fraction whose accuracy reaches `target`.

  Tries `fractions` in increasing order until one reaches the target, then bisects `refine`
  times between it and the fraction before it (none before: no bisection). `accuracy_at`
  (fraction -> accuracy) is called once per fraction tried. Returns the smallest fraction found
  at the target, or None if none of `fractions` reaches it.
  """
  below = None
  for fraction in sorted(fractions):
    if accuracy_at(fraction) >= target:
      above = fraction
      break
    below = fraction
  else:
    return None
  if below is not None:
    for _ in range(refine):
      middle = (below + above) / 2
      if accuracy_at(middle) >= target:
        above = middle
      else:
        below = middle
  return above


THEORY_KS = (1, 2, 3)


def theory_exponent(k: int) -> float:
  """The paper's bound on the data required for k-coverage: N_req ~ N^(2.5 - 0.5/k)."""
  return 2.5 - 0.5 / k


def run_sweep(config, workdir: str) -> dict:
  sweep = config.sweep
  if len(sweep.n_tokens) < 2:
    raise UserError("sweep.n_tokens needs at least two token-set sizes to fit an exponent")
  both_seen = compositional.seen_type(config.task.kind)
  runs, required = [], {}
  for n_tokens in sweep.n_tokens:
    pool = compositional.max_train_size(config.task.kind, n_tokens, config.task.seen_fraction)
    sizes = {}

    def accuracy_at(fraction):
      num_train = max(1, int(fraction * pool))
      accuracies = []
      for s in range(sweep.seeds):
        seed = config.seed + s
        run_dir = os.path.join(workdir, "sweep", f"N{n_tokens}_train{num_train}_seed{seed}")
        task = _make_task(config.task, n_tokens, num_train, seed)
        model_config, params, trainer, result = train_model(config, task, run_dir)
        correct = answer_accuracy(model_config, params, trainer.parallel, task,
                                  config.task.cot, config.eval_batch_size)
        accuracies.append(float(correct[both_seen].mean()))
        runs.append({"n_tokens": n_tokens, "num_train": num_train, "seed": seed,
                     "steps": result["step"], f"{both_seen}_accuracy": accuracies[-1]})
      accuracy = float(np.mean(accuracies))
      sizes[fraction] = num_train
      print(f"sweep: N={n_tokens} train={num_train} {both_seen} accuracy={accuracy:.3f} "
            f"(mean of {sweep.seeds} seeds)", file=sys.stderr, flush=True)
      return accuracy

    found = search_data_required(sweep.train_fractions, accuracy_at, sweep.target_accuracy,
                                 sweep.refine)
    if found is not None:
      required[n_tokens] = sizes[found]
  reached = sorted(required)
  summary = {"task": config.task.kind, "cot": bool(config.task.cot),
             "target_accuracy": sweep.target_accuracy, "seeds_per_point": sweep.seeds,
             "refine": sweep.refine, "runs": runs,
             "data_required": {str(n): required[n] for n in reached},
             "not_reached": [n for n in sweep.n_tokens if n not in required],
             "theory_exponents": {f"k{k}": theory_exponent(k) for k in THEORY_KS}}
  if len(reached) >= 2:
    summary["fit"] = fit_power_law(reached, [required[n] for n in reached])
    _plot_data_vs_n(os.path.join(workdir, "plots", "data_vs_n.png"), reached,
                    [required[n] for n in reached], summary["fit"])
  return summary


def _plot_data_vs_n(path, n_values, data, fit) -> None:
  if not runio.is_writer():
    return
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.5, 4))
  ax.loglog(n_values, data, "o", label="data required")
  xs = np.geomspace(min(n_values), max(n_values), 50)
  lo, hi = fit["alpha_ci"]
  ax.loglog(xs, np.exp(fit["intercept"]) * xs ** fit["alpha"],
            label=f"fit: alpha = {fit['alpha']:.2f} [{lo:.2f}, {hi:.2f}]")
  # The theory's slopes, drawn through the geometric centre of the measured points.
  centre_x = np.exp(np.mean(np.log(n_values)))
  centre_y = np.exp(np.mean(np.log(data)))
  for k, style in zip(THEORY_KS, (":", "--", "-.")):
    exponent = theory_exponent(k)
    ax.loglog(xs, centre_y * (xs / centre_x) ** exponent, style, color="gray",
              label=f"theory k={k}: N^{exponent:.2f}")
  ax.set(xlabel="token-set size N", ylabel="training examples needed",
         title="data required vs N")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  plotting.save_figure(fig, path)


def check_config(config) -> None:
  """The experiment's own settings, before anything is built or compiled."""
  checks.positive_ints(config.task, "task", "n_tokens", "num_test")
  checks.non_negative_ints(config.task, "task", "num_train")
  checks.positive_ints(config.coverage, "coverage", "k", "max_k")
  checks.positive_ints(config, "config", "eval_batch_size")
  checks.positive_ints(config.train, "train", "eval_batches")
  for key in ("seen_fraction", "train_fraction"):
    value = config.task[key]
    checks.expect(0 < value <= 1, f"task.{key}", value, "a fraction in (0, 1]")
  checks.expect(0 <= config.sweep.target_accuracy <= 1, "sweep.target_accuracy",
                config.sweep.target_accuracy, "a fraction in [0, 1]")
  checks.positive_ints(config.sweep, "sweep", "seeds")
  checks.non_negative_ints(config.sweep, "sweep", "refine")


def run(config, workdir: str) -> dict:
  check_config(config)
  if config.mode == "single":
    return run_single(config, workdir)
  if config.mode == "sweep":
    return run_sweep(config, workdir)
  raise UserError(f"config.mode = {config.mode!r}: expected 'single' or 'sweep'")

