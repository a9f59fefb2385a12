"""Preference optimization (experiment `dpo`): DPO and its variants on the engine's loop.

Method:
  1. Start from `config.init` (hf:DIR, an llmjax run, RUN/checkpoints/STEP) or a fresh model.
  2. Pairs: JSONL rows {prompt, chosen, rejected} (or chat messages; llmjax.data.examples),
     both completions of a pair in the same batch, the loss on completion tokens only.
  3. Reference: `dpo.reference` ('' = the initial params, or a checkpoint spec). Its log-probs
     come from frozen params at every step, or, with `dpo.precompute_ref_logprobs`, once before
     training (cached in W/reference_logprobs.npz, reused while pairs and reference agree).
  4. Loss: `dpo.loss_type` with TRL's names (beta, label_smoothing, loss_type; simpo_gamma) —
     formulas in llmjax/train/preference.py; `dpo.reference_free` drops the reference.
  5. Train; evaluate reward accuracy, margins, log-probs and their drift on held-out pairs.

The `tiny` preset (`task.kind = sorting`) is a whole pipeline at CPU scale (llmjax.pipeline):
SFT a small model on digit sorting with a share of wrong answers, sample the SFT policy on
held-out prompts, keep pairs whose chosen answer is verified right and rejected one verified
wrong, DPO from the SFT params, and compare the greedy task accuracy of both policies.
"""

import hashlib
import json
import os

import ml_collections
import numpy as np

from llmjax import checks, runio
from llmjax.data.examples import Examples, pair_batch, read_examples
from llmjax.data.pipeline import row_batches
from llmjax.errors import UserError
from llmjax.experiments.starting_point import StartingPoint, record_model, starting_point
from llmjax.models import Decoder
from llmjax.parallel import Parallel
from llmjax.train.dpo import (needs_reference_params, params_fingerprint, preference_objective,
                              reference_logprobs, with_reference)
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
  checks.positive_ints(cfg, "train", "eval_batches")
  model = Decoder(start.model_config)
  # A reference-free loss gets the initial params' log-probs, computed once, as the baseline of
  # its drift metrics (the loss does not read them).
  precompute = bool(config.dpo.precompute_ref_logprobs) or not loss.uses_reference
  trainer = Trainer(model, preference_objective(model, loss, precompute), cfg, config.optim,
                    parallel, flops_per_step=start.model_config.flops_per_token(cfg.seq_len)
                    * 2 * cfg.batch_size * cfg.seq_len)
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
                                                 trainer.to_device, parallel))
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
             "truncated_sequences": train.truncated + evaluation.truncated}
  evals = runio.read_metrics(workdir, "eval")
  if evals:
    summary.update({f"eval_{k}": v for k, v in evals[-1].items() if k not in ("step", "split")})
  if "train" in result:
    summary.update({f"train_{k}": v for k, v in result["train"].items()
                    if k in ("loss", "reward_accuracy", "reward_margin", "chosen_drift",
                             "rejected_drift", "kl")})
  return summary


def run(config, workdir: str) -> dict:
  if config.task.kind:
    from llmjax.experiments import dpo_tiny  # the procedural pipeline of the tiny preset
    return dpo_tiny.run(config, workdir)
  if not config.data.train or not config.data.eval:
    raise UserError("config.data.train and config.data.eval are required: JSONL files of "
                    "{prompt, chosen, rejected} rows")
  preference_loss(config)  # settings first, before anything is loaded
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  start = starting_point(config, parallel)
  record_model(config, workdir, start)
  length = config.train.seq_len + 1
  train = read_examples(config.data.train, start.tokenizer, length, ("chosen", "rejected"))
  evaluation = read_examples(config.data.eval, start.tokenizer, length, ("chosen", "rejected"))
  result = train_dpo(config, workdir, start, parallel, train, evaluation)
  return {"init": start.source, **summarise(workdir, result, train, evaluation)}


def stage_config(config, **sections) -> ml_collections.ConfigDict:
  """A copy of `config` with some sections replaced (a pipeline stage's own settings)."""
  copy = ml_collections.ConfigDict(config.to_dict())
  for name, values in sections.items():
    copy[name].update(values)
  return copy
