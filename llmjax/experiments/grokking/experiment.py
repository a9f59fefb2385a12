"""Grokking driven by intrinsic task symmetry (Hwang & Park 2026).

Method, in the paper's order:
  1. Data. An algorithmic task is a finite table (algorithmic.py); a seed picks the
     training fraction of it. The model sees [operands..., =] and answers at '='.
  2. Model. The engine's decoder as a 1-layer, 4-head, ReLU, no-LayerNorm transformer, trained
     full-batch with AdamW; `num_seeds` replicas train at once (llmjax.train.multiseed).
  3. Measurement. At every evaluation, on the whole table: train and test accuracy, the
     symmetry violation (symmetry.py) and the effective dimension of the entity
     embeddings (geometry.py). Afterwards: the stage boundaries
     (stages.py), PCA of the embeddings at the end of each stage, and for modular
     tasks the Fourier spectrum, key frequencies and restricted/excluded loss.
  4. Intervention (config.acceleration.method):
       symmetry   add lambda * violation to the loss. By default (symmetry_inputs="train")
                  only on training inputs: an identity instance counts only when every input it
                  reads is a training input, so no test input's answer enters the loss (for
                  x+y that keeps the commutativity pairs whose both orders are in training and
                  no associativity instance, since a composition reads whole rows of the
                  table). symmetry_inputs="all" is the transductive variant (every instance,
                  the whole table, test inputs included), labelled "symmetry (transductive)";
       geometry   add priors on the entity embedding matrix E (rows centred):
                    nuclear   ||E||_* / ||E||_F, the nuclear norm at unit scale (low rank);
                    entropy   -sum_i s_i log s_i with s_i = sigma_i^2 / sum_j sigma_j^2, the
                              spectral entropy (few dominant directions);
                    lipschitz mean ||E_u - E_v||^2 over neighbours (u, v) divided by its mean
                              over all pairs (neighbours close, relative to the spread);
       grokfast_ema / grokfast_ma  the Grokfast gradient filters (grokfast.py).

The stage rules (stages.py) read the maximum instance violation by default, as the
paper's soft threshold does (`analysis.violation_statistic`), over the task's invariances
(`analysis.stage_identities`, symmetry.py); stages a seed never reaches are null
in summary.json.
"""

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax import checks, runio
from llmjax.errors import UserError
from llmjax.experiments.grokking import geometry, stages, symmetry
from llmjax.experiments.grokking import plots as grokking_plots
from llmjax.experiments.grokking.algorithmic import Task, make_task
from llmjax.experiments.grokking.grokfast import grokfast_ema, grokfast_ma
from llmjax.models import Decoder, ModelConfig
from llmjax.numerics import argmax_first
from llmjax.train.loop import check_train_config, run_loop
from llmjax.train.multiseed import MultiSeedProgram, MultiSeedTrainer
from llmjax.train.optim import build_optimizer

METHODS = ("none", "symmetry", "geometry", "grokfast_ema", "grokfast_ma")
SYMMETRY_INPUTS = ("train", "all")
VIOLATION_STATISTICS = ("max", "mean")
STAGE_IDENTITIES = ("invariances", "all")


def stage_signal(analysis) -> str:
  """The logged column the symmetry stage reads (symmetry.violation_summary)."""
  group = "_invariance" if analysis.stage_identities == "invariances" else ""
  return f"violation{group}{'_max' if analysis.violation_statistic == 'max' else ''}"


def method_label(acceleration) -> str:
  """The method as summaries and benchmarks name it; the transductive variant says so."""
  if acceleration.method == "symmetry" and acceleration.symmetry_inputs == "all":
    return "symmetry (transductive)"
  return acceleration.method


# ---- the model and its losses ----------------------------------------------------------------

def answer_logits(model: Decoder, params, inputs_NxT):
  """Logits at the '=' position, [N, V]."""
  return model.apply({"params": params}, inputs_NxT, last_positions=1)[:, 0].astype(jnp.float32)


def cross_entropy_rows(logits_NxV, targets_N):
  return -jnp.take_along_axis(jax.nn.log_softmax(logits_NxV), targets_N[:, None], 1)[:, 0]


def geometry_prior(emb_ExD, neighbours_Ex2, weights) -> jax.Array:
  """The weighted sum of the nuclear, entropy and Lipschitz priors (module docstring)."""
  centred = emb_ExD - emb_ExD.mean(axis=0, keepdims=True)
  total = 0.0
  if weights.nuclear or weights.entropy:
    singular = jnp.linalg.svd(centred, compute_uv=False)
    if weights.nuclear:
      total += weights.nuclear * singular.sum() / jnp.sqrt((singular ** 2).sum() + 1e-12)
    if weights.entropy:
      share = singular ** 2 / ((singular ** 2).sum() + 1e-12)
      total += weights.entropy * -(share * jnp.log(share + 1e-12)).sum()
  if weights.lipschitz:
    near = jnp.sum((emb_ExD[neighbours_Ex2[:, 0]] - emb_ExD[neighbours_Ex2[:, 1]]) ** 2, -1).mean()
    spread = 2.0 * jnp.sum(centred ** 2, -1).mean()  # mean ||E_u - E_v||^2 over all pairs
    total += weights.lipschitz * near / (spread + 1e-12)
  return total


def make_loss_and_eval(model: Decoder, task: Task, config, train_mask_SxN=None):
  """The grokking objective and evaluation. `train_mask_SxN` (every seed's training inputs)
  lets leak-free symmetry prompting skip identities none of whose instances read only
  training inputs in any seed: they are masked out of the loss anyway, so computing them
  would cost time and change nothing."""
  method = config.acceleration.method
  prompt_task = task
  if method == "symmetry" and train_mask_SxN is not None:
    live = [name for name in task.symmetry if any(
        np.asarray(symmetry.instance_masks(task, mask)[name]).any() for mask in train_mask_SxN)]
    prompt_task = dataclasses.replace(task, symmetry={n: task.symmetry[n] for n in live})
  entity_tokens = jnp.asarray(task.entity_tokens)
  neighbours = jnp.asarray(task.neighbours_Ex2)

  def entity_embeddings(params):
    return params["embed"]["embedding"][entity_tokens].astype(jnp.float32)

  def loss_fn(params, batch, rng, frozen):
    del rng, frozen  # full batch, no dropout: every step is deterministic
    aux = {}
    if method == "symmetry" and config.acceleration.symmetry_inputs == "all":
      # Transductive: the identities read the model's answers on test inputs too.
      logits_NxV = answer_logits(model, params, batch["inputs"])
      ce = cross_entropy_rows(logits_NxV[batch["train_rows"]],
                              batch["targets"][batch["train_rows"]]).mean()
      aux["symmetry_loss"] = symmetry.violation_loss(logits_NxV, task)
      loss = ce + config.acceleration.symmetry_weight * aux["symmetry_loss"]
    elif method == "symmetry":
      # Training inputs only: the model runs on them alone; the rows of the table it does not
      # read stay zero and every instance touching them is masked out of the loss.
      rows = batch["train_rows"]
      train_logits = answer_logits(model, params, batch["inputs"][rows])
      ce = cross_entropy_rows(train_logits, batch["targets"][rows]).mean()
      logits_NxV = jnp.zeros((task.size, train_logits.shape[-1]), train_logits.dtype)
      logits_NxV = logits_NxV.at[rows].set(train_logits)
      aux["symmetry_loss"] = (
          symmetry.violation_loss(logits_NxV, prompt_task, batch["train_mask"])
          if prompt_task.symmetry else jnp.zeros((), jnp.float32))
      loss = ce + config.acceleration.symmetry_weight * aux["symmetry_loss"]
    else:
      rows = batch["train_rows"]
      ce = cross_entropy_rows(answer_logits(model, params, batch["inputs"][rows]),
                              batch["targets"][rows]).mean()
      loss = ce
    if method == "geometry":
      aux["geometry_loss"] = geometry_prior(entity_embeddings(params), neighbours,
                                            config.acceleration.geometry)
      loss = loss + aux["geometry_loss"]
    aux["train_loss"] = ce
    return loss, aux

  def eval_fn(params, batch):
    logits_NxV = answer_logits(model, params, batch["inputs"])
    ce_N = cross_entropy_rows(logits_NxV, batch["targets"])
    correct_N = (argmax_first(logits_NxV) == batch["targets"]).astype(jnp.float32)
    train_N = batch["train_mask"]
    test_N = 1.0 - train_N
    out = {
        "train_loss": (ce_N * train_N).sum() / train_N.sum(),
        "test_loss": (ce_N * test_N).sum() / test_N.sum(),
        "train_accuracy": (correct_N * train_N).sum() / train_N.sum(),
        "test_accuracy": (correct_N * test_N).sum() / test_N.sum(),
        "effective_dimension": geometry.effective_dimension(entity_embeddings(params)),
    }
    out.update(symmetry.violation_summary(logits_NxV, task, row_mask_N=train_N))
    return out

  return loss_fn, eval_fn


def build_optimizer_for(config):
  tx, _ = build_optimizer(config.optim, config.train.steps)
  method, acc = config.acceleration.method, config.acceleration
  if method == "grokfast_ema":
    tx = optax.chain(grokfast_ema(acc.grokfast_alpha, acc.grokfast_ema_lambda), tx)
  elif method == "grokfast_ma":
    tx = optax.chain(grokfast_ma(acc.grokfast_window, acc.grokfast_ma_lambda), tx)
  elif method not in METHODS:
    raise UserError(f"acceleration.method = {method!r}: expected one of {METHODS}")
  return tx


# ---- the run -------------------------------------------------------------------------------

def run(config, workdir: str) -> dict:
  checks.positive_ints(config, "config", "num_seeds")
  checks.expect(0 < config.task.train_fraction < 1, "task.train_fraction",
                config.task.train_fraction, "a fraction in (0, 1)")
  checks.expect(0 < config.analysis.violation_threshold < 1, "analysis.violation_threshold",
                config.analysis.violation_threshold, "a fraction in (0, 1)")
  checks.expect(0 <= config.analysis.organized_min_drop < 1, "analysis.organized_min_drop",
                config.analysis.organized_min_drop, "a fraction in [0, 1)")
  checks.expect(config.analysis.violation_statistic in VIOLATION_STATISTICS,
                "analysis.violation_statistic", config.analysis.violation_statistic,
                f"one of {VIOLATION_STATISTICS}")
  checks.expect(config.analysis.stage_identities in STAGE_IDENTITIES,
                "analysis.stage_identities", config.analysis.stage_identities,
                f"one of {STAGE_IDENTITIES}")
  checks.expect(config.acceleration.symmetry_inputs in SYMMETRY_INPUTS,
                "acceleration.symmetry_inputs", config.acceleration.symmetry_inputs,
                f"one of {SYMMETRY_INPUTS} ('all' is transductive: it reads test inputs)")
  task = make_task(config.task)
  model_values = config.model.to_dict()
  model_values.update(vocab_size=task.vocab_size, max_len=task.inputs_NxT.shape[1])
  model = Decoder(ModelConfig.from_dict(model_values))
  check_train_config(config.train)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  splits = [task.split(seed, config.task.train_fraction) for seed in seeds]
  train_mask = np.zeros((len(seeds), task.size), np.float32)
  for i, (train_rows, _) in enumerate(splits):
    train_mask[i, train_rows] = 1.0
  # The whole table is shared by the seeds; each seed has its own training rows.
  batch = {"inputs": jnp.asarray(task.inputs_NxT), "targets": jnp.asarray(task.targets_N),
           "train_rows": jnp.asarray(np.stack([s[0] for s in splits])),
           "train_mask": jnp.asarray(train_mask)}

  loss_fn, eval_fn = make_loss_and_eval(model, task, config, train_mask)
  dummy = jnp.asarray(task.inputs_NxT[:1])
  trainer = MultiSeedTrainer(lambda rng: nn.unbox(model.init(rng, dummy)["params"]),
                             build_optimizer_for(config), loss_fn, eval_fn,
                             seed_keys=("train_rows", "train_mask"))
  snapshots = grokking_plots.EmbeddingSnapshots(os.path.join(workdir, "embeddings.npz"))

  def evaluate_rows(state, step):
    metrics = jax.device_get(trainer.evaluate(state, batch))
    snapshots.add(step, jax.device_get(state.params["embed"]["embedding"])[0][task.entity_tokens])
    return [{"seed": i, **{k: float(v[i]) for k, v in metrics.items()}}
            for i in range(len(seeds))]

  result = run_loop(MultiSeedProgram(trainer, seeds, batch, evaluate_rows), workdir,
                    config.train, config.resume, config.overwrite, eval_at_start=True,
                    progress_keys=("train_accuracy", "test_accuracy",
                                   stage_signal(config.analysis)),
                    on_save=lambda step: snapshots.save(), on_start=snapshots.keep_through)
  summary = summarise(config, workdir, task, model, result.state, snapshots, train_mask)
  summary["stopped_early"] = result.stopped_early
  return summary


def summarise(config, workdir, task, model, state, snapshots, train_mask_SxN) -> dict:
  """Stage detection per seed, geometry at the end, plots; returns the flat summary.

  Stage steps a seed never reached are None (null in summary.json); a stage's median is over
  the seeds that reached it, `num_seeds_<stage>` says how many did, and `stages_ordered` how many
  seeds reached every stage in order (memorized <= symmetry <= generalized <= organized).
  `step_time_s` is the median wall-clock of one training step of all seeds together (the first
  logged window, which compiles, left out), so `step_generalized * step_time_s` is the seconds
  to generalization of the vmapped run.
  """
  rows = runio.read_metrics(workdir, "eval")
  num_seeds = config.num_seeds
  threshold = config.analysis.violation_threshold
  statistic = stage_signal(config.analysis)
  if rows and statistic not in rows[0]:
    raise UserError(f"{os.path.join(workdir, 'metrics.jsonl')}: no '{statistic}' column to read "
                    "the symmetry stage from (written by an older llmjax); rerun with "
                    "--config.overwrite=true")
  per_seed = []
  for i in range(num_seeds):
    curve = [r for r in rows if r["seed"] == i]
    found = stages.detect_stages([r["step"] for r in curve],
                                 [r["train_accuracy"] for r in curve],
                                 [r["test_accuracy"] for r in curve],
                                 [r[statistic] for r in curve],
                                 [r["effective_dimension"] for r in curve], threshold,
                                 config.analysis.organized_min_drop)
    found.update(final_train_accuracy=curve[-1]["train_accuracy"],
                 final_test_accuracy=curve[-1]["test_accuracy"],
                 effective_dimension=curve[-1]["effective_dimension"],
                 final_violation=curve[-1][statistic])
    per_seed.append((curve, found))

  summary = {"task": task.name, "family": task.family, "num_seeds": num_seeds,
             "steps": int(jax.device_get(state.step)),
             "train_fraction": config.task.train_fraction,
             "violation_threshold": threshold, "violation_statistic": statistic,
             "method": method_label(config.acceleration)}
  for key in per_seed[0][1]:
    values = [found[key] for _, found in per_seed]
    for i, value in enumerate(values):
      summary[f"{key}_seed{i}"] = value
    if key == "ordered":
      summary["stages_ordered"] = sum(values)
      continue
    reached = [v for v in values if v is not None]
    summary[key] = float(np.median(reached)) if reached else None
    if key.startswith("step_"):
      summary[f"num_seeds_{key[5:]}"] = len(reached)
  step_times = [r["step_time_s"] for r in runio.read_metrics(workdir, "train")
                if r.get("seed") == 0][1:]
  summary["step_time_s"] = float(np.median(step_times)) if step_times else None
  if config.acceleration.method == "symmetry":
    for name, mask in symmetry.instance_masks(task, train_mask_SxN[0]).items():
      summary[f"symmetry_prompt_instances_{name}_seed0"] = (
          int(np.asarray(mask).sum()) if config.acceleration.symmetry_inputs == "train"
          else int(np.asarray(mask).size))

  # On the host: slicing device arrays here would compile one small program per leaf.
  seed0_params = jax.tree.map(lambda x: x[0], jax.device_get(state.params))
  keys = []
  if task.family == "algebraic":
    emb = np.asarray(seed0_params["embed"]["embedding"])[task.entity_tokens]
    power = geometry.fourier_power(emb)
    keys = geometry.key_frequencies(power)
    summary["key_frequencies_seed0"] = ",".join(map(str, keys))
    if task.name == "x+y":
      p = task.modulus
      # jitted: run eagerly, the model would compile op by op (~4 s on a 2-core host)
      logits = np.asarray(jax.jit(functools.partial(answer_logits, model))(
          seed0_params, jnp.asarray(task.inputs_NxT)))
      restricted, excluded = geometry.restricted_and_excluded_loss(
          logits[:, task.answer_tokens].reshape(p, p, p), task.targets_N.reshape(p, p), keys)
      summary.update(restricted_loss_seed0=restricted, excluded_loss_seed0=excluded)
    grokking_plots.fourier(os.path.join(workdir, "plots", "fourier.png"), power, keys)
  grokking_plots.structure(os.path.join(workdir, "plots", "structure.png"),
                           np.asarray(seed0_params["embed"]["embedding"])[task.entity_tokens],
                           task, keys)
  grokking_plots.all_curves(os.path.join(workdir, "plots"), per_seed, threshold, statistic)
  grokking_plots.stage_pca(os.path.join(workdir, "plots", "pca_stages.png"), snapshots,
                           per_seed[0][1], task)
  return summary
