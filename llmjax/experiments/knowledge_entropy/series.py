"""Knowledge entropy over a series of checkpoints on one corpus: what `knowledge_entropy`
measures (entropy.py for the definition).

Checkpoint specs (comma-separated; each may be a glob):
  hf:DIR                 a Hugging Face directory (OLMo, OLMo-2, Llama families, ...); its step
                         is read from a `step<N>` in the directory name (OLMo's revisions)
  RUN                    an llmjax run: every checkpoint step it holds
  RUN/checkpoints/STEP   one step

One row per checkpoint in WORKDIR/metrics.jsonl (`checkpoint`, `step`, `knowledge_entropy`,
`layer_entropy`, ...), rewritten atomically after each checkpoint, and its mean coefficients and
normalised distributions in WORKDIR/coefficients/<n>.npz; a rerun skips every checkpoint already
in metrics.jsonl.
"""

import glob
import json
import os
import re
from typing import Any

import numpy as np

from llmjax import rundir, runio
from llmjax.data import readers
from llmjax.errors import DataError, UserError
from llmjax.experiments.knowledge_entropy.entropy import (CoefficientStats, KnowledgeEntropyProbe,
                                                          max_knowledge_entropy)
from llmjax.parallel import Parallel
from llmjax.weights import load_model
from llmjax.weights.checkpoint import Checkpointer

_GLOB = re.compile(r"[*?\[]")


def expand_checkpoints(specs: str) -> list[tuple[str, int | None]]:
  """[(spec, step or None)] in the order given (a glob or a run's steps sorted by step)."""
  out: list[tuple[str, int | None]] = []
  for spec in (s.strip() for s in specs.split(",")):
    if not spec:
      continue
    hf = spec.startswith("hf:")
    pattern = spec[3:] if hf else spec
    paths = sorted(glob.glob(pattern)) if _GLOB.search(pattern) else [pattern]
    if not paths:
      raise UserError(f"config.checkpoints: {spec!r} matches nothing")
    found = []
    for path in paths:
      if hf:
        if not os.path.isdir(path):
          raise UserError(f"config.checkpoints: hf:{path}: directory not found")
        match = re.search(r"step(\d+)", os.path.basename(os.path.normpath(path)))
        found.append((f"hf:{path}", int(match[1]) if match else None))
      else:
        found.extend(_run_checkpoints(path))
    found.sort(key=lambda item: (item[1] is None, item[1] or 0))
    out.extend(found)
  if not out:
    raise UserError("config.checkpoints is empty: expected hf:DIR, an llmjax run, "
                    "RUN/checkpoints/STEP or a glob of them, comma-separated")
  return out


def _run_checkpoints(path: str) -> list[tuple[str, int | None]]:
  path = os.path.normpath(path)
  if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == (
      "checkpoints"):
    return [(path, int(os.path.basename(path)))]
  directory = os.path.join(path, "checkpoints")
  if not os.path.isfile(os.path.join(path, "config.json")) or not os.path.isdir(directory):
    raise UserError(f"config.checkpoints: {path!r} is not hf:DIR, an llmjax run (config.json "
                    "and checkpoints/) or RUN/checkpoints/STEP")
  checkpointer = Checkpointer(directory, async_save=False)
  try:
    steps = sorted(checkpointer.all_steps())
  finally:
    checkpointer.close()
  if not steps:
    raise UserError(f"config.checkpoints: the run {path} has no checkpoints yet")
  return [(os.path.join(directory, str(step)), step) for step in steps]


def read_corpus(config) -> list[str]:
  """The first `config.max_documents` (0: all) documents of `config.corpus`: a JSONL file
  (`config.text_field` per row) or a text file (split by `config.text_unit`). An empty
  document of a JSONL corpus stops with its file and line."""
  path = config.corpus
  if not path:
    raise UserError("config.corpus is required: a .jsonl file (one document per row, in "
                    "config.text_field) or a text file (documents by config.text_unit)")
  if path.endswith(".jsonl"):
    texts = []
    for line, row in readers.read_jsonl_numbered(path, required=(config.text_field,)):
      text = str(row[config.text_field])
      if not text.strip():
        raise DataError(f"{path}:{line}: empty {config.text_field!r}: a document needs text")
      texts.append(text)
  else:  # read_text yields no empty documents
    texts = list(readers.read_text(path, config.text_unit))
  return texts[:config.max_documents] if config.max_documents else texts


def measure_series(config, workdir: str, checkpoints: list[tuple[str, int | None]],
                   texts: list[str], parallel: Parallel) -> list[dict[str, Any]]:
  """Measures every checkpoint not yet in WORKDIR/metrics.jsonl; returns all rows, in order."""
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  rows = runio.read_metrics(workdir)
  done = {row["checkpoint"] for row in rows}
  os.makedirs(os.path.join(workdir, "coefficients"), exist_ok=True)
  for spec, step in checkpoints:
    if spec in done:
      continue
    loaded = load_model(spec, parallel, config.tokenizer)
    if loaded.tokenizer is None:
      raise UserError(f"checkpoint {spec} comes with no tokenizer; set config.tokenizer")
    # A document that encodes to no tokens stops the probe, which names it.
    documents = [loaded.tokenizer.encode(text, add_bos=config.add_bos)[:config.max_tokens]
                 for text in texts]
    probe = KnowledgeEntropyProbe(loaded.config, parallel, batch_size=config.batch_size,
                                  length_bucket=config.length_bucket,
                                  pad_id=loaded.tokenizer.pad_id)
    stats = probe.coefficient_stats(loaded.params, documents, config.include_padding,
                                    show_progress=config.progress)
    index = len(rows)
    rundir.mark_began()  # the series' rows are this run's record: its config.json stays
    if runio.is_writer():
      with runio.atomic_output(os.path.join(workdir, "coefficients", f"{index}.npz")) as f:
        np.savez(f, mean_coefficients=stats.mean_coefficients_NxF,
                 distributions=stats.distributions_NxF)
    rows.append({**entropy_row(spec, step, stats, len(documents), loaded.config),
                 "coefficients": f"coefficients/{index}.npz"})
    if runio.is_writer():
      runio.atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"{spec}: knowledge entropy {rows[-1]['knowledge_entropy']:.4f}", flush=True)
  return rows


def entropy_row(spec: str, step: int | None, stats: CoefficientStats, documents: int,
                model_config) -> dict[str, Any]:
  return {"checkpoint": spec, "step": step, "split": "entropy",
          "knowledge_entropy": stats.knowledge_entropy,
          "layer_entropy": stats.layer_entropy_N.tolist(),
          "max_knowledge_entropy": max_knowledge_entropy(model_config.n_layers,
                                                         model_config.d_ff),
          "documents": documents, "positions": stats.positions}
