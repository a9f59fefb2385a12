"""Command line: python -m llmjax.main --config configs/NAME.py[:PRESET] --workdir DIR
                                        [--config.KEY=VALUE ...] [multi-process flags]

Multi-process flags (see llmjax/distributed.py): --distributed (JAX cluster auto-detection),
or --coordinator_address HOST:PORT --num_processes N --process_id I, and --local_device_ids.

Loads the config, applies the overrides (typed by the config's own values), runs the experiment
named by `config.experiment`, and writes the run contract: DIR/config.json before the run,
DIR/summary.json after it. A user mistake prints one `error: ...` line and exits 2.
"""

import difflib
import importlib.util
import inspect
import os
import sys
from typing import Sequence

from absl import flags
from ml_collections import config_dict, config_flags

from llmjax import distributed, hostenv, runio
from llmjax.errors import UserError

USAGE = ("usage: python -m llmjax.main --config configs/NAME.py[:PRESET] --workdir DIR "
         "[--config.KEY=VALUE ...]")


def load_config_file(spec: str) -> config_dict.ConfigDict:
  """Imports `path[:preset]` and returns its `get_config(preset)`."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"config file {path}: not found")
  module_spec = importlib.util.spec_from_file_location(f"llmjax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path}: defines no get_config()")
  takes_preset = bool(inspect.signature(module.get_config).parameters)
  if preset and not takes_preset:
    raise UserError(f"config file {path} has no presets, but ':{preset}' was given")
  return module.get_config(preset or None) if takes_preset else module.get_config()


def config_keys(config, prefix: str = "") -> list[str]:
  """Every dotted key of a (nested) ConfigDict."""
  keys = []
  for name, value in config.items(preserve_field_references=True):
    key = f"{prefix}{name}"
    keys.append(key)
    if isinstance(value, config_dict.ConfigDict):
      keys.extend(config_keys(value, key + "."))
  return keys


def parse_args(argv: Sequence[str], require_workdir: bool = True):
  """Returns (config with overrides applied, workdir, DistributedOptions). Benchmarks that
  write no run directory pass require_workdir=False."""
  args, spec = [], None
  rest = list(argv)
  while rest:
    arg = rest.pop(0)
    if arg == "--config":
      if not rest:
        raise UserError(f"--config needs a value; {USAGE}")
      spec = rest.pop(0)
    elif arg.startswith("--config="):
      spec = arg[len("--config="):]
    else:
      args.append(arg)
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
    flag_values(["llmjax"] + args)
  except flags.IllegalFlagValueError as e:
    raise UserError(f"bad config value: {str(e).splitlines()[0]}") from None
  except flags.UnrecognizedFlagError as e:
    raise UserError(f"unknown flag --{e.flagname}; {USAGE}") from None
  except flags.Error as e:
    raise UserError(str(e).splitlines()[0]) from None
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
  from llmjax.experiments import get_experiment  # after parsing: keeps `--help`-speed errors
  experiment = get_experiment(config.experiment)
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, "config.json")
  previous = open(config_path).read() if os.path.exists(config_path) else None
  runio.write_json(config_path, config.to_dict())
  try:
    summary = experiment(config, workdir)
  except UserError:
    # A rejected run leaves the workdir as it found it: config.json describes its checkpoints.
    if runio.is_writer():
      if previous is None:
        os.remove(config_path)
      else:
        runio.atomic_write_text(config_path, previous)
    raise
  runio.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  try:
    run(sys.argv[1:] if argv is None else argv)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  hostenv.reexec_with_huge_page_malloc()
  sys.exit(main())
