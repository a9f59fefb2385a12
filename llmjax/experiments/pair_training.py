"""Preference training of a decoder on pairs through the engine's loop: the part of the `dpo`
experiment that other experiments reuse (the tiny preset's pipeline, did_synthetic, Self-Explore).
See llmjax/experiments/preference/dpo.py for the method."""

import hashlib
import json
import os

import ml_collections
import numpy as np

from llmjax import checks, runio
from llmjax.data.examples import Examples, pair_batch
from llmjax.data.pipeline import row_batches
from llmjax.errors import UserError
from llmjax.experiments.starting_point import StartingPoint
from llmjax.models import Decoder
from llmjax.parallel import Parallel
from llmjax.train.epochs import steps_from_epochs
from llmjax.train.dpo import (needs_reference_params, params_fingerprint, preference_objective,
                              reference_logprobs, reference_logprobs_fn, with_reference)
from llmjax.train.preference import PreferenceLoss
from llmjax.train.trainer import Trainer


def preference_loss(config) -> PreferenceLoss:
  d = config.dpo
  return PreferenceLoss(d.loss_type, float(d.beta), float(d.label_smoothing),
                        float(d.simpo_gamma), bool(d.reference_free))


def train_dpo(config, workdir: str, start: StartingPoint, parallel: Parallel, train: Examples,
              evaluation: Examples) -> dict:
  """Preference-trains `start` on the pairs through the engine's loop; returns Trainer.fit's
  result (with 'state')."""
  cfg, loss = config.train, preference_loss(config)
  checks.positive_ints(cfg, "train", "eval_batches", "batch_size")
  cfg = steps_from_epochs(cfg, len(train) / cfg.batch_size, f"{len(train):,} pairs")
  model, precompute, trainer = preference_trainer(config, cfg, start.model_config, parallel)
  initial = start.params if start.params is not None else trainer.init_state(config.seed).params
  reference = initial
  if loss.uses_reference and config.dpo.reference:
    reference = trainer.initial_params(config.dpo.reference, config.seed)
  B, L, pad = cfg.batch_size, cfg.seq_len, start.tokenizer.pad_id
  ref_logps = {}
  if precompute:
    for name, pairs in (("train", train), ("eval", evaluation)):
      ref_logps[name] = _cached_reference(
          os.path.join(workdir, f"reference_logprobs_{name}.npz"), pairs, reference, config,
          lambda pairs=pairs: reference_logprobs(model, reference, pairs, B, L, pad,
                                                 trainer.to_device, parallel,
                                                 cfg.grad_accum_steps, cfg.loss_chunk_len))
    reference = None  # no longer needed in memory

  def host_batch(name, pairs, indices):
    batch = pair_batch(pairs, indices, L, pad)
    return with_reference(batch, ref_logps[name]) if precompute else batch

  if len(evaluation) < B:
    raise UserError(f"{len(evaluation)} evaluation pairs fill no batch of "
                    f"train.batch_size={B}")
  eval_batches = [host_batch("eval", evaluation, range(i, i + B))
                  for i in range(0, len(evaluation) - B + 1, B)][:cfg.eval_batches]
  batches = row_batches(np.arange(len(train)), B, config.seed,
                        lambda indices: host_batch("train", train, indices))
  frozen = reference if needs_reference_params(loss, precompute) else None
  result = trainer.fit(workdir, iter(batches), eval_batches, seed=config.seed,
                       resume=config.resume, overwrite=config.overwrite, frozen=frozen,
                       init_from=initial)
  result["eval_pairs_evaluated"] = len(eval_batches) * B
  return result


def preference_trainer(config, train_config, model_config, parallel: Parallel):
  """(the Decoder, whether reference log-probs are precomputed, the Trainer) of `train_dpo`."""
  loss, cfg = preference_loss(config), train_config
  model = Decoder(model_config)
  # A reference-free loss gets the initial params' log-probs, computed once, as the baseline of
  # its drift metrics (the loss does not read them).
  precompute = bool(config.dpo.precompute_ref_logprobs) or not loss.uses_reference
  trainer = Trainer(model, preference_objective(model, loss, precompute, cfg.loss_chunk_len),
                    cfg, config.optim, parallel,
                    flops_per_step=model_config.flops_per_token(cfg.seq_len)
                    * 2 * cfg.batch_size * cfg.seq_len)
  return model, precompute, trainer


def preference_programs(config, model_config, parallel: Parallel, prefix: str = "") -> list:
  """What `train_dpo` compiles, for llmjax.aot: the train step (with the reference's params
  frozen beside the trained ones, in the trained params' dtype and shardings, as the run holds
  them), the evaluation and, when precomputed, the reference log-prob pass."""
  from llmjax.aot.programs import (Program, abstract_batch, lowered, micro_batches,
                                   pair_batch_shapes, param_count, trainer_programs)
  cfg = config.train
  model, precompute, trainer = preference_trainer(config, cfg, model_config, parallel)
  shapes = pair_batch_shapes(cfg.batch_size, cfg.seq_len, precompute)
  params = trainer.abstract_state.params
  frozen = params if needs_reference_params(preference_loss(config), precompute) else None
  programs = trainer_programs(trainer, shapes, frozen, prefix)
  if precompute:
    reference_pass = reference_logprobs_fn(model, cfg.batch_size, parallel,
                                           cfg.grad_accum_steps, cfg.loss_chunk_len)
    batch = abstract_batch(shapes, trainer.batch_shardings)
    programs.append(Program(f"{prefix}reference_logprobs", param_count(params),
                            lambda: lowered(parallel, reference_pass, params, batch),
                            per="batch", repeats=micro_batches(trainer)))
  return programs


def _cached_reference(path: str, pairs: Examples, reference, config, compute) -> np.ndarray:
  """The reference log-probs of `pairs`, reused from `path` when the pairs, the reference's
  values and the model are the ones they were computed for."""
  key = hashlib.sha256(json.dumps([pairs.prompts, pairs.completions,
                                   params_fingerprint(reference), config.model.to_dict()],
                                  default=str).encode()).hexdigest()
  if os.path.isfile(path):
    with np.load(path) as saved:
      if str(saved["key"]) == key:
        return saved["logps"]
  logps = compute()
  if runio.is_writer():
    with runio.atomic_output(path) as tmp:
      np.savez(tmp, key=key, logps=logps)
  return logps


def summarise(workdir: str, result: dict, train: Examples, evaluation: Examples) -> dict:
  summary = {"steps": result["step"], "stopped_early": result["stopped_early"],
             "resumed_from_step": result["resumed_from_step"], "train_pairs": len(train),
             "eval_pairs": len(evaluation),
             "eval_pairs_evaluated": result["eval_pairs_evaluated"],
             "truncated_sequences": train.truncated + evaluation.truncated,
             "identical_pairs_dropped": train.identical + evaluation.identical}
  evals = runio.read_metrics(workdir, "eval")
  if evals:
    summary.update({f"eval_{k}": v for k, v in evals[-1].items() if k not in ("step", "split")})
  if "train" in result:
    summary.update({f"train_{k}": v for k, v in result["train"].items()
                    if k in ("loss", "reward_accuracy", "reward_margin", "chosen_drift",
                             "rejected_drift", "kl")})
  return summary


def stage_config(config, **sections) -> ml_collections.ConfigDict:
  """A copy of `config` with some sections replaced (a pipeline stage's own settings)."""
  copy = ml_collections.ConfigDict(config.to_dict())
  for name, values in sections.items():
    copy[name].update(values)
  return copy
