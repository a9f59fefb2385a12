"""python -m llmjax.aot --config configs/X.py[:PRESET] --topology NAME [--config.KEY=VALUE ...]

Prints one JSON line per program the run compiles: program, topology, chips, params,
per_chip_bytes (arguments + temporaries + outputs - aliased, from XLA's memory analysis),
hbm_bytes, fits, flops (summed over the chips, per `per`: a step or a batch), roofline_s,
mfu_ceiling and compile_s. Exit 0 when every program fits; 2 with one line naming the first
that does not (its bytes per chip against the chip's, and what to change: the programs after it
are not compiled), or for bad input.
"""

import json
import os
import sys
from typing import Sequence

USAGE = ("usage: python -m llmjax.aot --config configs/NAME.py[:PRESET] --topology NAME "
         "[--config.KEY=VALUE ...]")


def split_topology(argv: Sequence[str]) -> tuple[str, list[str]]:
  """(--topology's value, the other arguments)."""
  from llmjax.errors import UserError
  from llmjax.main import take_flag
  topology, rest = take_flag(argv, "topology", USAGE)
  if not topology:
    raise UserError(f"--topology is required (e.g. v5e:2x4); {USAGE}")
  return topology, rest


def run(argv: Sequence[str]) -> list[dict]:
  """Compiles every program of the config for the topology; prints and returns the rows."""
  from llmjax.aot.report import advice, analyse
  from llmjax.aot.topology import GiB, tpu_topology
  from llmjax.errors import UserError
  from llmjax.experiments import get_module
  from llmjax.main import parse_args
  from llmjax.parallel import Parallel
  name, rest = split_topology(argv)
  config, _, _ = parse_args(rest, require_workdir=False)
  module = get_module(config.experiment)
  if not hasattr(module, "aot_programs"):
    raise UserError(f"experiment {config.experiment!r} describes no programs for an "
                    "ahead-of-time compile (its module has no aot_programs)")
  topology = tpu_topology(name)
  parallel = Parallel.from_config(config.mesh, config.get("sharding_rules"),
                                  devices=topology.devices)
  programs = module.aot_programs(config, parallel)
  if not programs:
    print(f"experiment {config.experiment!r} compiles no program of its own with these "
          "settings (its model runs behind an endpoint)", file=sys.stderr)
  rows = []
  for program in programs:  # in the order the run compiles them; stops at the first misfit
    row = analyse(program, topology)
    print(json.dumps(row), flush=True)
    rows.append(row)
    if not row["fits"]:
      raise UserError(
          f"program {row['program']} needs {row['per_chip_bytes'] / GiB:.2f} GiB per chip; a "
          f"{topology.chip.generation} chip has {row['hbm_bytes'] / GiB:.2f} GiB: try "
          f"{advice(row)}")
  return rows


def main(argv: Sequence[str] | None = None) -> int:
  # This host compiles for the TPU and runs nothing: jax's own backend stays the CPU.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from llmjax.errors import UserError
  try:
    run(sys.argv[1:] if argv is None else argv)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
