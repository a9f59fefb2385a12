"""Command line: python -m llmjax.main --config configs/NAME.py[:PRESET] --workdir DIR
                                        [--config.KEY=VALUE ...] [multi-process flags]

Multi-process flags (see llmjax/distributed.py): --distributed (JAX cluster auto-detection),
or --coordinator_address HOST:PORT --num_processes N --process_id I, and --local_device_ids.

Loads the config, applies the overrides (typed by the config's own values), runs the experiment
named by `config.experiment`, and writes the run contract: DIR/config.json before the run,
DIR/summary.json after it. A user mistake prints one `error: ...` line and exits 2.

The workdir is the run's record (llmjax/rundir.py): one run holds it at a time; a run rejected
before it wrote anything leaves it as it found it; a run that fails after training began keeps
its config.json and writes a summary.json saying it failed; `resume=False` never mixes a new
history into an earlier run's checkpoints. SIGTERM and Ctrl-C save a checkpoint and stop (exit
0 and 130).
"""

import difflib
import importlib.util
import inspect
import os
import sys
from typing import Sequence

from absl import flags
from ml_collections import config_dict, config_flags

from llmjax import checks, distributed, hostenv, run_history, rundir, runio
from llmjax.errors import StorageError, UserError
from llmjax.train import preemption

USAGE = ("usage: python -m llmjax.main --config configs/NAME.py[:PRESET] --workdir DIR "
         "[--config.KEY=VALUE ...]")


def load_config_file(spec: str) -> config_dict.ConfigDict:
  """Imports `path[:preset]` and returns its `get_config(preset)`."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"config file {path}: not found")
  if not path.endswith(".py"):
    raise UserError(f"config file {path}: expected a Python file (configs/NAME.py) defining "
                    "get_config()")
  module_spec = importlib.util.spec_from_file_location(f"llmjax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f"config file {path}:{e.lineno}: not valid Python ({e.msg})") from None
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path}: defines no get_config()")
  takes_preset = bool(inspect.signature(module.get_config).parameters)
  if preset and not takes_preset:
    raise UserError(f"config file {path} has no presets, but ':{preset}' was given")
  config = module.get_config(preset or None) if takes_preset else module.get_config()
  if not isinstance(config, config_dict.ConfigDict):
    raise UserError(f"config file {path}: get_config() returned {type(config).__name__}; "
                    "expected an ml_collections.ConfigDict")
  if not isinstance(config.get("experiment"), str) or not config.experiment:
    raise UserError(f"config file {path}: the config names no experiment (set "
                    "config.experiment, e.g. with llmjax.config_base.base_config)")
  return config


def config_keys(config, prefix: str = "") -> list[str]:
  """Every dotted key of a (nested) ConfigDict."""
  keys = []
  for name, value in config.items(preserve_field_references=True):
    key = f"{prefix}{name}"
    keys.append(key)
    if isinstance(value, config_dict.ConfigDict):
      keys.extend(config_keys(value, key + "."))
  return keys


def take_flag(argv: Sequence[str], name: str, usage: str) -> tuple[str | None, list[str]]:
  """(the value of `--NAME VALUE` or `--NAME=VALUE` in argv, None if absent; the other
  arguments), before absl sees them: a flag whose value must be known first (--config decides
  which flags exist). A trailing `--NAME` without its value is a UserError."""
  value, args, rest = None, [], list(argv)
  while rest:
    arg = rest.pop(0)
    if arg == f"--{name}":
      if not rest:
        raise UserError(f"--{name} needs a value; {usage}")
      value = rest.pop(0)
    elif arg.startswith(f"--{name}="):
      value = arg[len(f"--{name}="):]
    else:
      args.append(arg)
  return value, args


def parse_args(argv: Sequence[str], require_workdir: bool = True):
  """Returns (config with overrides applied, workdir, DistributedOptions). Benchmarks that
  write no run directory pass require_workdir=False."""
  spec, args = take_flag(argv, "config", USAGE)
  if spec is None:
    raise UserError(f"--config is required; {USAGE}")
  config = load_config_file(spec)

  overrides = [a for a in args if a.startswith("--config.")]
  known = set(config_keys(config))
  for arg in overrides:
    key = arg[len("--config."):].split("=", 1)[0]
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise UserError(f"unknown config key {key!r}{hint}")

  flag_values = flags.FlagValues()
  try:
    config_holder = config_flags.DEFINE_config_dict(
        "config", config, flag_values=flag_values, lock_config=True,
        sys_argv=["llmjax"] + args)
    flags.DEFINE_string("workdir", None, "output directory of the run", flag_values=flag_values)
    flags.DEFINE_bool("distributed", False, "initialise jax.distributed by cluster "
                      "auto-detection", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "number of processes", flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "this process's index", flag_values=flag_values)
    flags.DEFINE_string("local_device_ids", None, "comma-separated local accelerator ids",
                        flag_values=flag_values)
    positional = flag_values(["llmjax"] + args)[1:]
  except flags.IllegalFlagValueError as e:
    raise UserError(f"bad config value: {str(e).splitlines()[0]}") from None
  except flags.UnrecognizedFlagError as e:
    raise UserError(f"unknown flag --{e.flagname}; {USAGE}") from None
  except flags.Error as e:
    raise UserError(str(e).splitlines()[0]) from None
  if positional:  # absl leaves what is not a flag (or a flag's value) to the program
    arg = positional[0]
    hint = f"; did you mean --{arg}?" if arg.startswith("config.") else ""
    raise UserError(f"unexpected argument {arg!r}{hint} ({USAGE})")
  if require_workdir and not flag_values.workdir:
    raise UserError(f"--workdir is required; {USAGE}")
  distributed_options = distributed.options_from(
      {name: flag_values[name].value for name in ("distributed", "coordinator_address",
                                                  "num_processes", "process_id",
                                                  "local_device_ids")})
  return config_holder.value, flag_values.workdir, distributed_options


def run(argv: Sequence[str]) -> dict:
  """Parses `argv`, runs the experiment, writes config.json and summary.json; returns the
  summary. Raises UserError for user mistakes."""
  config, workdir, distributed_options = parse_args(argv)
  distributed.initialize(distributed_options)  # before anything touches a device
  # after parsing: keeps `--help`-speed errors
  from llmjax.experiments import get_experiment, history_keys
  experiment = get_experiment(config.experiment)
  if runio.is_writer():
    rundir.prepare(workdir)
  rundir.reset()
  preemption.reset()
  train = config.get("train")
  stop_after_steps = train.get("stop_after_steps") if train else None
  with rundir.WorkdirLock(workdir), preemption.run_stops_after(stop_after_steps):
    if stop_after_steps is not None:  # every stage obeys it: checked before any stage runs
      checks.positive_ints(train, "train", "stop_after_steps")
    _refuse_to_mix_histories(config, workdir)
    settings = runio.jsonable(config.to_dict())
    _check_same_run(workdir, settings, *history_keys(config.experiment))
    rundir.remember_given_config(workdir, settings)
    before = set(os.listdir(workdir)) if runio.is_writer() else set()
    config_path = os.path.join(workdir, "config.json")
    previous = open(config_path).read() if os.path.exists(config_path) else None
    rundir.remember_previous_config(workdir, previous)
    try:
      runio.write_json(config_path, settings)
    except OSError as e:
      raise StorageError(f"{config_path}: cannot be written ({e.strerror or e}); nothing was "
                         "run") from None
    try:
      summary = experiment(config, workdir)
    except preemption.StoppedEarly as e:  # a pipeline stage stopped, as a single run can
      summary = {"status": "stopped", "stopped_early": True, "stage": e.stage, "step": e.step}
    except BaseException as e:  # a mistake, Ctrl-C, or a bug: the record stays consistent
      if not runio.is_writer():
        raise
      if rundir.began():  # keep the record whole: config.json describes the checkpoints
        _write_failed_summary(workdir, e)
      else:  # a run stopped before it wrote anything leaves the workdir as it found it
        _roll_back(workdir, before, config_path, previous)
      raise
    summary.setdefault("status", "stopped" if summary.get("stopped_early") else "completed")
    runio.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def _check_same_run(workdir: str, settings: dict, history: tuple, free: tuple) -> None:
  """The workdir's owner and history keys (llmjax/run_history.py), checked by process 0; every
  process of a multi-process run learns its answer, so all of them stop."""
  problem = None
  if runio.is_writer():
    try:
      run_history.check_same_run(run_history.read_previous_config(workdir), settings, workdir,
                                 history, free, bool(rundir.earlier_checkpoints(workdir)))
    except UserError as e:
      problem = e
  if distributed.broadcast_flag(problem is not None):
    raise problem or UserError(f"workdir {workdir}: the run was refused by process 0 (its "
                               "error line says why)")


def _write_failed_summary(workdir: str, error: BaseException) -> None:
  """summary.json of a run that failed (or was interrupted) after it began: the error's first
  line, behind its type unless it is a UserError."""
  first = str(error).splitlines()[0] if str(error) else ""
  if isinstance(error, KeyboardInterrupt):
    status, message = "interrupted", "KeyboardInterrupt"
  elif isinstance(error, UserError):
    status, message = "failed", first or "UserError"
  else:
    status, message = "failed", f"{type(error).__name__}: {first}" if first else (
        type(error).__name__)
  try:
    runio.write_json(os.path.join(workdir, "summary.json"), {"status": status, "error": message})
  except OSError:  # the disk that failed the run cannot take its summary either
    pass


def _refuse_to_mix_histories(config, workdir: str) -> None:
  """resume=False on a workdir with another run's checkpoints, without overwrite: refused
  before anything is written. (With overwrite the train loop moves that run aside once the new
  one begins training, so a run rejected before then changes nothing; the loop also guards
  the checkpoints of experiments that train in subfolders.)"""
  steps = rundir.earlier_checkpoints(workdir)
  if config.get("resume", True) or config.get("overwrite", False) or not steps:
    return
  raise UserError(f"workdir {workdir} holds checkpoints of an earlier run (steps {steps}); "
                  "config.resume=False would mix two histories: use a new --workdir, or add "
                  "--config.overwrite=True to move the earlier run aside")


def _roll_back(workdir: str, before: set[str], config_path: str, previous: str | None) -> None:
  for name in set(os.listdir(workdir)) - before - {"config.json"}:
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.listdir(path):  # e.g. an empty checkpoints/
      os.rmdir(path)
  if previous is None:
    os.remove(config_path)
  else:
    runio.atomic_write_text(config_path, previous)


def main(argv: Sequence[str] | None = None) -> int:
  try:
    run(sys.argv[1:] if argv is None else argv)
  except UserError as e:
    runio.unmute_stderr()  # muted after a failed write (weights/checkpoint.py)
    print(f"error: {e}", file=sys.stderr)
    _EXIT_WITHOUT_HANDLERS[0] = isinstance(e, StorageError)
    return 2
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return 130
  # Ctrl-C inside a training loop saved a checkpoint and stopped it, as SIGTERM does.
  return 130 if preemption.stopped_by() == "SIGINT" else 0


# Set when a failed write ended the run: the libraries' exit handlers (TensorBoard's flush,
# orbax's pending writes) would fail on the same disk and print their tracebacks after the one
# error line.
_EXIT_WITHOUT_HANDLERS = [False]


if __name__ == "__main__":
  hostenv.reexec_with_huge_page_malloc()
  code = main()
  if _EXIT_WITHOUT_HANDLERS[0]:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  sys.exit(code)
