"""The experiment registry: `config.experiment` names a module whose `run(config, workdir)`
returns the summary dict. Modules are imported only when selected.

A researcher's own experiment needs no registration: `config.experiment = "my_project.my_exp"`
(a dotted module path importable from the working directory, with a `run(config, workdir)`)
runs on the same command line, run contract and engine.
"""

import difflib
import importlib
import os
from typing import Any, Callable

from llmjax.errors import UserError

EXPERIMENTS = {
    "lm_pretrain": "llmjax.experiments.lm_pretrain",
    "grokking": "llmjax.experiments.grokking.experiment",
    "coverage": "llmjax.experiments.coverage.experiment",
    "generate": "llmjax.experiments.generate",
    "score": "llmjax.experiments.score",
    "sft": "llmjax.experiments.sft",
    "dpo": "llmjax.experiments.preference.dpo",
    "did_synthetic": "llmjax.experiments.preference.did_synthetic",
    "self_explore": "llmjax.experiments.self_explore.experiment",
    "biggen": "llmjax.experiments.biggen.experiment",
    "flask": "llmjax.experiments.flask.experiment",
    "knowledge_entropy": "llmjax.experiments.knowledge_entropy.experiment",
    "music_judge": "llmjax.experiments.music_judge.experiment",
    "cot_encyclopedia": "llmjax.experiments.cot_encyclopedia.experiment",
    "sentence_lm": "llmjax.experiments.sentence_lm.experiment",
}


def get_experiment(name: str) -> Callable[[Any, str], dict]:
  """The `run(config, workdir)` of the experiment `name`."""
  return get_module(name).run


def history_keys(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(history keys, free keys) of the experiment `name`: what a resume in its workdir must keep
  (llmjax/run_history.py), from the module's HISTORY_KEYS / FREE_KEYS or the defaults."""
  from llmjax import run_history
  module = get_module(name)
  return (tuple(getattr(module, "HISTORY_KEYS", run_history.DEFAULT_HISTORY_KEYS)),
          tuple(getattr(module, "FREE_KEYS", run_history.DEFAULT_FREE_KEYS)))


def get_module(name: str):
  """The module of the experiment `name` (registered, or a dotted module path)."""
  if name in EXPERIMENTS:
    return importlib.import_module(EXPERIMENTS[name])
  if "." in name:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name is None or not name.startswith(e.name):
        raise  # the module exists but one of its own imports is missing
      raise UserError(f"config.experiment = {name!r}: no module {e.name!r} importable from "
                      f"{os.getcwd()}") from None
    if not callable(getattr(module, "run", None)):
      raise UserError(f"config.experiment = {name!r}: the module defines no run(config, "
                      "workdir)")
    return module
  close = difflib.get_close_matches(name, EXPERIMENTS, n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  raise UserError(f"config.experiment = {name!r} is not registered{hint}; expected one of "
                  f"{sorted(EXPERIMENTS)} or a dotted module path with a run(config, workdir)")
