"""A workdir belongs to one run: its owner, and the settings that define its history.

The config.json a run writes into its workdir names its experiment and every setting. A later
run in that workdir is checked against it before anything is written:

- another experiment is refused with one line naming the owner (a `generate` pointed at a
  pretraining run would otherwise replace that run's config.json and summary.json, after which
  its checkpoints could not be loaded);
- a run that resumes (config.resume, the default) must keep the settings that define what has
  been trained or judged so far: the seed, the data, the task, the model's shape and, for a
  judged run, the judge. A change is refused with one line listing the differing keys. Where
  the workdir holds a training run's checkpoints, `--config.resume=False
  --config.overwrite=True` moves that run aside and starts over; judgements, an entropy series
  or a pipeline's stages are not moved, so there a change needs a new workdir. Schedule lengths
  (`train.steps`), cadences, batching for speed and run control may change.

An experiment module narrows or widens what defines its history with a module-level
`HISTORY_KEYS` (dotted prefixes; `FREE_KEYS` for exceptions under them). An experiment that
rewrites config.json with what it resolved (the model and tokenizer of an `init` checkpoint,
llmjax/experiments/starting_point.py) keeps the config it was given there as `as_given`; that
is what a later run is compared with.
"""

import json
import os
from typing import Any, Iterable, Mapping

from llmjax.errors import UserError

# What a resume may not change, as dotted prefixes of config keys (those a config has): what the
# run starts from (`init`, `train.init_from`), learns from, and is.
DEFAULT_HISTORY_KEYS = ("seed", "init", "train.init_from", "data", "task", "model", "judge")

# Settings under those prefixes that change how a run computes or is served, not what it learns
# or judges: free to change on resume.
DEFAULT_FREE_KEYS = (
    "data.cache_dir", "data.num_shards",
    "model.attention_impl", "model.attention_chunk", "model.prefill_chunk", "model.remat",
    "model.dtype",
    # the same judge, served at another address (a restarted vLLM) or batched another way
    "judge.base_url", "judge.batch_size", "judge.length_bucket", "judge.concurrency",
    "judge.timeout_s", "judge.http_retries", "judge.backoff_s", "judge.api_key_env",
    "judge.max_retries", "judge.retry_temperature",
    # a rerun may cut responses that were too long to judge (each record says so)
    "judge.max_prompt_tokens", "judge.truncate_response",
)


def read_previous_config(workdir: str) -> dict | None:
  """The config.json an earlier run left in `workdir` (None when there is none), or a
  UserError naming what is wrong with it."""
  path = os.path.join(workdir, "config.json")
  if not os.path.lexists(path):
    return None
  if os.path.isdir(path):
    raise UserError(f"{path}: is a directory; expected the run's config file (move it away or "
                    "use another --workdir)")
  try:
    with open(path) as f:
      previous = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); it is an earlier run's "
                    "record: move it away or use another --workdir") from None
  except OSError as e:
    raise UserError(f"{path}: cannot be read ({e.strerror})") from None
  if not isinstance(previous, dict):
    raise UserError(f"{path}: expected a JSON object (an llmjax run's config)")
  return previous


def check_same_run(previous: Mapping[str, Any] | None, config: Mapping[str, Any],
                   workdir: str, history_keys: Iterable[str] = DEFAULT_HISTORY_KEYS,
                   free_keys: Iterable[str] = DEFAULT_FREE_KEYS,
                   can_start_over: bool = False) -> None:
  """Raises UserError when `config` (a JSON-able dict) may not run in the workdir holding
  `previous` (its config.json): another experiment, or a resume that changes a history key.

  `can_start_over`: the workdir holds a training run's checkpoints, which `resume=False` with
  `overwrite=True` moves aside when the new run begins training (llmjax/train/loop.py); other
  records (judgements, an entropy series, a pipeline's stages) are not moved, so a changed key
  there is refused whatever `resume` says."""
  if previous is None:
    return
  previous = previous.get("as_given", previous)  # what that run was given, before resolving
  owner, experiment = previous.get("experiment"), config.get("experiment")
  if owner != experiment:
    raise UserError(f"workdir {workdir} belongs to a {owner!r} run (its config.json); a "
                    f"{experiment!r} run there would replace that run's record: use another "
                    "--workdir")
  if not config.get("resume", True) and can_start_over:
    return  # a new history: refused where checkpoints would mix, or the old one moved aside
  before, after = _flatten(previous), _flatten(config)
  history, free = tuple(history_keys), tuple(free_keys)
  changed = sorted(key for key in set(before) | set(after)
                   if _under(key, history) and not _under(key, free)
                   and before.get(key, _MISSING) != after.get(key, _MISSING))
  if changed:
    differences = "; ".join(f"{key} = {_show(before.get(key, _MISSING))} there, "
                            f"{_show(after.get(key, _MISSING))} now" for key in changed)
    remedy = ("use a new --workdir, or add --config.resume=False --config.overwrite=True to "
              "move that run aside" if can_start_over else "use a new --workdir")
    raise UserError(f"workdir {workdir} holds a run with other settings ({differences}); a "
                    f"resume would mix two histories: {remedy}")


_MISSING = object()


def _show(value) -> str:
  return "(unset)" if value is _MISSING else json.dumps(value)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for name, value in tree.items():
    key = f"{prefix}{name}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, key + "."))
    else:
      flat[key] = value
  return flat
