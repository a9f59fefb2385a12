"""Knowledge entropy (Kim et al. 2025, "Knowledge Entropy Decay during Language Model
Pretraining Hinders New Knowledge Acquisition"; experiment `knowledge_entropy`).

Modes (`config.mode`):
  measure      the knowledge entropy (entropy.py) of every checkpoint
               named by `config.checkpoints` on the documents of `config.corpus`, one metrics
               row per checkpoint, resumable (series.py), and
               the curve of entropy against training step;
  resuscitate  one checkpoint with its low-coefficient memories scaled up (resuscitation p, q,
               measured on `config.corpus`), written as an llmjax run or an HF directory;
  inject       per checkpoint of `config.checkpoints`: its knowledge entropy on `config.corpus`
               (when set), then continual training on `config.data` with the fictional
               knowledge injected, and its acquisition and forgetting (the paper's Table 1);
  demo         pretraining, the entropy curve, knowledge injection from an early, a late and a
               resuscitated checkpoint (demo.py).
"""

import os

from llmjax import checks, plotting
from llmjax.errors import UserError
from llmjax.experiments.knowledge_entropy.series import (expand_checkpoints, measure_series,
                                                         read_corpus)
from llmjax.parallel import Parallel
from llmjax.run_history import DEFAULT_FREE_KEYS

MODES = ("measure", "resuscitate", "inject", "demo")
# What a rerun in the same workdir must keep (llmjax/run_history.py): one entropy series is
# measured on one corpus, cut and tokenized one way; `checkpoints` may grow to extend it.
HISTORY_KEYS = ("seed", "mode", "corpus", "text_field", "text_unit", "tokenizer", "add_bos",
                "max_documents", "max_tokens", "include_padding", "data", "injection",
                "pretrain.model", "pretrain.data", "resuscitation")
FREE_KEYS = (*DEFAULT_FREE_KEYS, "pretrain.data.cache_dir", "pretrain.data.num_shards")
FORMATS = ("llmjax", "hf")


def run(config, workdir: str) -> dict:
  if config.mode not in MODES:
    raise UserError(f"config.mode = {config.mode!r}: expected one of {MODES}")
  checks.positive_ints(config, "config", "batch_size", "length_bucket", "max_tokens")
  if config.mode == "demo":
    from llmjax.experiments.knowledge_entropy.demo import run_demo
    return run_demo(config, workdir)
  if config.mode == "resuscitate":
    return resuscitate_checkpoint(config, workdir)
  if config.mode == "inject":
    return inject_series(config, workdir)
  checkpoints = expand_checkpoints(config.checkpoints)
  texts = read_corpus(config)
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  rows = measure_series(config, workdir, checkpoints, texts, parallel)
  plot_entropy_curve(os.path.join(workdir, "plots", "knowledge_entropy.png"), rows)
  last = rows[-1]
  return {"checkpoints": len(rows), "checkpoint": last["checkpoint"], "step": last["step"],
          "knowledge_entropy": last["knowledge_entropy"],
          "layer_entropy": last["layer_entropy"],
          "max_knowledge_entropy": last["max_knowledge_entropy"],
          "documents": last["documents"], "positions": last["positions"]}


def plot_entropy_curve(path: str, rows: list[dict]) -> None:
  """Knowledge entropy against step, for the rows whose step is known."""
  stepped = [r for r in rows if r["step"] is not None]
  if stepped:
    plotting.plot_curves(path, {"knowledge entropy": ([r["step"] for r in stepped],
                                                      [r["knowledge_entropy"] for r in stepped])},
                         ylabel="knowledge entropy (nats)", title="knowledge entropy")


def resuscitate_checkpoint(config, workdir: str) -> dict:
  """Measures one checkpoint's coefficients on the corpus, scales its low-coefficient memories
  (entropy.resuscitate) and writes the result."""
  import numpy as np

  from llmjax.experiments.knowledge_entropy.entropy import resuscitate
  from llmjax.interop import save_hf
  from llmjax.weights import RunCheckpoint, load_model
  from llmjax.weights.params_run import save_params_run

  res = config.resuscitation
  if res.format not in FORMATS:
    raise UserError(f"config.resuscitation.format = {res.format!r}: expected one of {FORMATS}")
  checkpoints = expand_checkpoints(config.checkpoints)
  if len(checkpoints) != 1:
    raise UserError(f"config.checkpoints names {len(checkpoints)} checkpoints; resuscitation "
                    "takes one")
  (spec, step), = checkpoints
  texts = read_corpus(config)
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  rows = measure_series(config, os.path.join(workdir, "before"), checkpoints, texts, parallel)
  coefficients = np.load(os.path.join(workdir, "before", rows[0]["coefficients"]))
  loaded = load_model(spec, parallel, config.tokenizer)
  params, counts = resuscitate(loaded.params, coefficients["mean_coefficients"], res.quantile,
                               res.multiplier)
  if res.format == "hf":
    out = os.path.join(workdir, "resuscitated_hf")
    save_hf(out, loaded.config, params)
    if spec.startswith("hf:"):  # the tokenizer files travel with the weights
      import shutil
      for name in os.listdir(spec[3:]):
        if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
          shutil.copy(os.path.join(spec[3:], name), out)
    out_spec = f"hf:{out}"
  else:
    tokenizer = config.tokenizer or (spec if spec.startswith("hf:") else
                                     RunCheckpoint.parse(spec).tokenizer)
    if not tokenizer:
      raise UserError(f"checkpoint {spec}: its run records no tokenizer; set config.tokenizer")
    out_spec = save_params_run(os.path.join(workdir, "resuscitated"), params, loaded.config,
                               step or 0, tokenizer)
  after = measure_series(config, os.path.join(workdir, "after"), [(out_spec, step)], texts,
                         parallel)
  return {"checkpoint": spec, "resuscitated": out_spec, "quantile": res.quantile,
          "multiplier": res.multiplier, "scaled_memories": counts.tolist(),
          "knowledge_entropy_before": rows[0]["knowledge_entropy"],
          "knowledge_entropy_after": after[0]["knowledge_entropy"]}


def inject_series(config, workdir: str) -> dict:
  """Knowledge injection from each checkpoint in turn (WORKDIR/inject_<n>/, resumable; a
  finished one is read back from its result.json), with its entropy when config.corpus is
  set; the table of entropy, A and F per checkpoint in the summary."""
  import json

  from llmjax import runio
  from llmjax.data.corpora import make_corpus
  from llmjax.experiments.knowledge_entropy import injection as injection_lib
  from llmjax.weights import load_model

  inj = config.injection
  checkpoints = expand_checkpoints(config.checkpoints)
  parallel = Parallel.from_config(config.mesh, config.sharding_rules)
  plan = injection_lib.plan_injection(inj.root, inj.injections, inj.paraphrased_items,
                                      inj.once_per_injection)
  entropy = {}
  if config.corpus:
    texts = read_corpus(config)
    entropy = {r["checkpoint"]: r["knowledge_entropy"]
               for r in measure_series(config, os.path.join(workdir, "entropy"), checkpoints,
                                       texts, parallel)}
  corpus = make_corpus(config.data)
  table = []
  for n, (spec, step) in enumerate(checkpoints):
    directory = os.path.join(workdir, f"inject_{n}")
    result_path = os.path.join(directory, "result.json")
    if os.path.isfile(result_path):
      with open(result_path) as f:
        table.append(json.load(f))
      continue
    loaded = load_model(spec, parallel, config.tokenizer)
    if loaded.tokenizer is None:
      raise UserError(f"checkpoint {spec} comes with no tokenizer; set config.tokenizer")
    result = injection_lib.continual_training(
        directory, loaded.config, loaded.tokenizer, corpus, plan, loaded.params, config.train,
        config.optim, inj.interval, inj.rows_per_step, parallel, seed=config.seed,
        placement=inj.placement)
    row = {"checkpoint": spec, "step": step, "knowledge_entropy": entropy.get(spec),
           **{k: v for k, v in result.items() if k not in ("first", "last")}}
    runio.write_json(result_path, row)
    injection_lib.plot_retention(os.path.join(workdir, "plots", f"retention_{n}.png"),
                                 directory, f"probes during injection from {spec}")
    table.append(row)
  return {"table": table}
