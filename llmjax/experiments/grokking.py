"""Grokking driven by intrinsic task symmetry (Hwang & Park 2026).

Method, in the paper's order:
  1. Data. An algorithmic task is a finite table (llmjax.tasks.algorithmic); a seed picks the
     training fraction of it. The model sees [operands..., =] and answers at '='.
  2. Model. The engine's decoder as a 1-layer, 4-head, ReLU, no-LayerNorm transformer, trained
     full-batch with AdamW; `num_seeds` replicas train at once (llmjax.train.multiseed).
  3. Measurement. At every evaluation, on the whole table: train and test accuracy, the
     symmetry violation (llmjax.analysis.symmetry) and the effective dimension of the entity
     embeddings (llmjax.analysis.geometry). Afterwards: the stage boundaries
     (llmjax.analysis.stages), PCA of the embeddings at the end of each stage, and for modular
     tasks the Fourier spectrum, key frequencies and restricted/excluded loss.
  4. Intervention (config.acceleration.method):
       symmetry   add lambda * violation (all identities, whole table) to the loss;
       geometry   add priors on the entity embedding matrix E (rows centred):
                    nuclear   ||E||_* / ||E||_F, the nuclear norm at unit scale (low rank);
                    entropy   -sum_i s_i log s_i with s_i = sigma_i^2 / sum_j sigma_j^2, the
                              spectral entropy (few dominant directions);
                    lipschitz mean ||E_u - E_v||^2 over neighbours (u, v) divided by its mean
                              over all pairs (neighbours close, relative to the spread);
       grokfast_ema / grokfast_ma  the Grokfast gradient filters (llmjax.train.grokfast).
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax import runio
from llmjax.analysis import geometry, stages, symmetry
from llmjax.errors import TrainingDivergedError, UserError
from llmjax.experiments import grokking_plots
from llmjax.models import Decoder, ModelConfig
from llmjax.numerics import argmax_first
from llmjax.tasks.algorithmic import Task, make_task
from llmjax.train.checkpoint import Checkpointer
from llmjax.train.grokfast import grokfast_ema, grokfast_ma
from llmjax.train.multiseed import MultiSeedTrainer
from llmjax.train.optim import build_optimizer
from llmjax.train.preemption import SigtermFlag

METHODS = ("none", "symmetry", "geometry", "grokfast_ema", "grokfast_ma")


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


def make_loss_and_eval(model: Decoder, task: Task, config):
  method = config.acceleration.method
  entity_tokens = jnp.asarray(task.entity_tokens)
  neighbours = jnp.asarray(task.neighbours_Ex2)

  def entity_embeddings(params):
    return params["embed"]["embedding"][entity_tokens].astype(jnp.float32)

  def loss_fn(params, shared, per_seed, rng):
    del rng  # full batch, no dropout: every step is deterministic
    aux = {}
    if method == "symmetry":  # needs the answers on inputs outside the training set too
      logits_NxV = answer_logits(model, params, shared["inputs"])
      ce = cross_entropy_rows(logits_NxV[per_seed["train_rows"]],
                              shared["targets"][per_seed["train_rows"]]).mean()
      aux["symmetry_loss"] = symmetry.violation_loss(logits_NxV, task)
      loss = ce + config.acceleration.symmetry_weight * aux["symmetry_loss"]
    else:
      rows = per_seed["train_rows"]
      ce = cross_entropy_rows(answer_logits(model, params, shared["inputs"][rows]),
                              shared["targets"][rows]).mean()
      loss = ce
    if method == "geometry":
      aux["geometry_loss"] = geometry_prior(entity_embeddings(params), neighbours,
                                            config.acceleration.geometry)
      loss = loss + aux["geometry_loss"]
    aux["train_loss"] = ce
    return loss, aux

  def eval_fn(params, shared, per_seed):
    logits_NxV = answer_logits(model, params, shared["inputs"])
    ce_N = cross_entropy_rows(logits_NxV, shared["targets"])
    correct_N = (argmax_first(logits_NxV) == shared["targets"]).astype(jnp.float32)
    train_N = per_seed["train_mask"]
    test_N = 1.0 - train_N
    out = {
        "train_loss": (ce_N * train_N).sum() / train_N.sum(),
        "test_loss": (ce_N * test_N).sum() / test_N.sum(),
        "train_accuracy": (correct_N * train_N).sum() / train_N.sum(),
        "test_accuracy": (correct_N * test_N).sum() / test_N.sum(),
        "effective_dimension": geometry.effective_dimension(entity_embeddings(params)),
    }
    out.update(symmetry.violation_summary(logits_NxV, task))
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
  task = make_task(config.task)
  model_values = config.model.to_dict()
  model_values.update(vocab_size=task.vocab_size, max_len=task.inputs_NxT.shape[1])
  model = Decoder(ModelConfig.from_dict(model_values))
  if config.num_seeds < 1:
    raise UserError(f"num_seeds = {config.num_seeds}: expected at least 1")
  seeds = [config.seed + i for i in range(config.num_seeds)]
  splits = [task.split(seed, config.task.train_fraction) for seed in seeds]
  train_mask = np.zeros((len(seeds), task.size), np.float32)
  for i, (train_rows, _) in enumerate(splits):
    train_mask[i, train_rows] = 1.0
  shared = {"inputs": jnp.asarray(task.inputs_NxT), "targets": jnp.asarray(task.targets_N)}
  per_seed = {"train_rows": jnp.asarray(np.stack([s[0] for s in splits])),
              "train_mask": jnp.asarray(train_mask)}

  loss_fn, eval_fn = make_loss_and_eval(model, task, config)
  dummy = jnp.asarray(task.inputs_NxT[:1])
  trainer = MultiSeedTrainer(lambda rng: nn.unbox(model.init(rng, dummy)["params"]),
                             build_optimizer_for(config), loss_fn, eval_fn)
  state = trainer.init(seeds)

  train = config.train
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), train.keep_checkpoints,
                              train.async_checkpoint)
  snapshots = grokking_plots.EmbeddingSnapshots(os.path.join(workdir, "embeddings.npz"))
  start = 0
  latest = checkpointer.latest_step() if config.resume else None
  if latest is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)
    state = checkpointer.restore(latest, abstract)
    start = latest
  snapshots.keep_through(start)
  writer = runio.MetricsWriter(workdir, keep_through_step=start)

  def evaluate_and_log(step):
    metrics = jax.device_get(trainer.evaluate(state, shared, per_seed))
    for i in range(len(seeds)):
      writer.write(step, "eval", {"seed": i, **{k: float(v[i]) for k, v in metrics.items()}})
    emb = jax.device_get(state.params["embed"]["embedding"][0][task.entity_tokens])
    snapshots.add(step, emb)
    return metrics

  progress = runio.progress_bar(train.steps, start, train.progress, "grokking")
  stopped_early, last_good_checkpoint = False, latest
  with SigtermFlag() as sigterm:
    try:
      if start == 0:
        evaluate_and_log(0)
      step = start
      while step < train.steps:
        chunk = min(train.eval_every - step % train.eval_every, train.steps - step)
        state, _ = trainer.train(state, shared, per_seed, chunk)
        step += chunk
        metrics = evaluate_and_log(step)
        if not np.all(np.isfinite(metrics["train_loss"])):
          raise TrainingDivergedError(
              f"loss is not finite at step {step}; training stopped. The last good checkpoint "
              f"(step {last_good_checkpoint}) is kept in {checkpointer.directory}")
        progress.update(chunk)
        progress.set_postfix(train_acc=f"{np.median(metrics['train_accuracy']):.3f}",
                             test_acc=f"{np.median(metrics['test_accuracy']):.3f}",
                             violation=f"{np.median(metrics['violation']):.3g}")
        stopped_early = sigterm.is_set() and step < train.steps
        if step % train.checkpoint_every == 0 or step == train.steps or stopped_early:
          checkpointer.save(step, state)
          snapshots.save()
          last_good_checkpoint = step
        if stopped_early:
          break
    finally:
      progress.close()
      writer.close()
      checkpointer.close()

  summary = summarise(config, workdir, task, model, state, snapshots)
  summary["stopped_early"] = stopped_early
  return summary


def summarise(config, workdir, task, model, state, snapshots) -> dict:
  """Stage detection per seed, geometry at the end, plots; returns the flat summary."""
  rows = runio.read_metrics(workdir, "eval")
  num_seeds = config.num_seeds
  threshold = config.analysis.violation_threshold
  per_seed = []
  for i in range(num_seeds):
    curve = [r for r in rows if r["seed"] == i]
    found = stages.detect_stages([r["step"] for r in curve],
                                 [r["train_accuracy"] for r in curve],
                                 [r["test_accuracy"] for r in curve],
                                 [r["violation"] for r in curve],
                                 [r["effective_dimension"] for r in curve], threshold)
    found.update(final_train_accuracy=curve[-1]["train_accuracy"],
                 final_test_accuracy=curve[-1]["test_accuracy"],
                 effective_dimension=curve[-1]["effective_dimension"],
                 min_violation=min(r["violation"] for r in curve))
    per_seed.append((curve, found))

  summary = {"task": task.name, "family": task.family, "num_seeds": num_seeds,
             "steps": int(jax.device_get(state.step)),
             "train_fraction": config.task.train_fraction,
             "violation_threshold": threshold, "method": config.acceleration.method}
  for key in per_seed[0][1]:
    values = [found[key] for _, found in per_seed]
    for i, value in enumerate(values):
      summary[f"{key}_seed{i}"] = value if value is not None else "never"
    reached = [v for v in values if v is not None]
    summary[key] = float(np.median(reached)) if reached else "never"
    if key.startswith("step_"):
      summary[f"num_seeds_{key[5:]}"] = len(reached)

  seed0_params = jax.tree.map(lambda x: x[0], state.params)
  if task.family == "algebraic":
    emb = np.asarray(seed0_params["embed"]["embedding"])[task.entity_tokens]
    power = geometry.fourier_power(emb)
    keys = geometry.key_frequencies(power)
    summary["key_frequencies_seed0"] = ",".join(map(str, keys))
    if task.name == "x+y":
      p = task.modulus
      logits = np.asarray(answer_logits(model, seed0_params, jnp.asarray(task.inputs_NxT)))
      restricted, excluded = geometry.restricted_and_excluded_loss(
          logits[:, task.answer_tokens].reshape(p, p, p), task.targets_N.reshape(p, p), keys)
      summary.update(restricted_loss_seed0=restricted, excluded_loss_seed0=excluded)
    grokking_plots.fourier(os.path.join(workdir, "plots", "fourier.png"), power, keys)
  grokking_plots.all_curves(os.path.join(workdir, "plots"), per_seed, threshold)
  grokking_plots.stage_pca(os.path.join(workdir, "plots", "pca_stages.png"), snapshots,
                           per_seed[0][1], task)
  return summary
