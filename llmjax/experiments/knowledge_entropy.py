"""Knowledge entropy (Kim et al. 2025, "Knowledge Entropy Decay during Language Model
Pretraining Hinders New Knowledge Acquisition"; experiment `knowledge_entropy`).

`mode = "measure"`: the knowledge entropy (llmjax.analysis.knowledge_entropy) of every
checkpoint named by `config.checkpoints` on the documents of `config.corpus`, one metrics row
per checkpoint, resumable (llmjax.experiments.knowledge_entropy_series), and the curve of
entropy against training step.
"""

import os

from llmjax import checks, plotting
from llmjax.errors import UserError
from llmjax.experiments.knowledge_entropy_series import (expand_checkpoints, measure_series,
                                                         read_corpus)
from llmjax.parallel import Parallel

MODES = ("measure",)


def run(config, workdir: str) -> dict:
  if config.mode not in MODES:
    raise UserError(f"config.mode = {config.mode!r}: expected one of {MODES}")
  checks.positive_ints(config, "config", "batch_size", "length_bucket", "max_tokens")
  checkpoints = expand_checkpoints(config.checkpoints)
  texts = read_corpus(config.corpus, config.text_field, config.text_unit)
  if config.max_documents:
    texts = texts[:config.max_documents]
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
