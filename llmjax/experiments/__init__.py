"""The experiment registry: `config.experiment` names a module whose `run(config, workdir)`
returns the summary dict. Modules are imported only when selected."""

import difflib
import importlib
from typing import Any, Callable

from llmjax.errors import UserError

EXPERIMENTS = {
    "lm_pretrain": "llmjax.experiments.lm_pretrain",
    "grokking": "llmjax.experiments.grokking",
    "coverage": "llmjax.experiments.coverage",
    "generate": "llmjax.experiments.generate",
    "score": "llmjax.experiments.score",
}


def get_experiment(name: str) -> Callable[[Any, str], dict]:
  if name not in EXPERIMENTS:
    close = difflib.get_close_matches(name, EXPERIMENTS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"config.experiment = {name!r} is not registered{hint}; expected one of "
                    f"{sorted(EXPERIMENTS)}")
  return importlib.import_module(EXPERIMENTS[name]).run
