"""One program compiled for a topology, read back: memory per chip from XLA's memory analysis,
FLOPs and bytes from its cost analysis, the fit verdict and a roofline bound.

XLA's figures are per device (a chip): a sharded program's `flops` row is their sum over the
chips. XLA counts a loop's body once: a step's micro-batch loop is scaled by its trip count
(`Program.repeats`; the optimizer update outside it is then counted that many times too, about
12 FLOPs per parameter each: negligible beside 6 per parameter per token).

The roofline bound of one call is max(FLOPs / peak FLOP/s, bytes accessed / HBM bandwidth) per
chip, and `mfu_ceiling` the share of that time the chip could spend computing:
no schedule of this program reaches a higher MFU (XLA's FLOPs count remat's recomputation).
"""

import re
import time

from llmjax.aot.programs import Program
from llmjax.aot.topology import Topology

# The TPU compiler refuses a program that cannot fit, in one of two wordings: "... Used 21.3G of
# 15.75G hbm ..." or "the total memory required for HLO temporaries (534.11G) exceeds available
# HBM (15.75G)" (then the figure is the temporaries alone: at least what the chip would need).
_OUT_OF_MEMORY = (re.compile(r"Used ([\d.]+)([KMGT]?) of [\d.]+[KMGT]? hbm"),
                  re.compile(r"HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM"))
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def analyse(program: Program, topology: Topology) -> dict:
  """The program's JSON row (see llmjax.aot)."""
  chip = topology.chip
  row = {"program": program.name, "topology": topology.name, "chips": topology.chips,
         "params": program.params}
  start = time.perf_counter()
  try:
    compiled = program.lower().compile()
  except Exception as e:  # noqa: BLE001 -- only the compiler's out-of-memory verdict is read
    used = next((m for m in (p.search(str(e)) for p in _OUT_OF_MEMORY) if m), None)
    if used is None:
      raise
    per_chip = int(float(used.group(1)) * _UNITS[used.group(2)])
    row.update(per_chip_bytes=per_chip, hbm_bytes=chip.hbm_bytes, fits=False, flops=None,
               per=program.per, roofline_s=None, mfu_ceiling=None, refused_by_compiler=True,
               compile_s=round(time.perf_counter() - start, 1))
    return row
  memory = compiled.memory_analysis()
  per_chip = (memory.argument_size_in_bytes + memory.output_size_in_bytes
              + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_chip = float(cost.get("flops", 0.0)) * program.repeats
  bytes_per_chip = float(cost.get("bytes accessed", 0.0)) * program.repeats
  compute_s = flops_per_chip / chip.peak_flops
  bound_s = max(compute_s, bytes_per_chip / chip.hbm_bandwidth)
  row.update(per_chip_bytes=per_chip, hbm_bytes=chip.hbm_bytes,
             fits=per_chip <= chip.hbm_bytes, flops=flops_per_chip * topology.chips,
             per=program.per, roofline_s=bound_s,
             mfu_ceiling=round(compute_s / bound_s, 4) if bound_s else None,
             compile_s=round(time.perf_counter() - start, 1))
  if program.model_flops:
    row["model_flops"] = program.model_flops
  return row


def advice(row: dict) -> str:
  """What to change when a program does not fit."""
  if row["program"].endswith("train_step") or row["program"].endswith("eval"):
    return ("more chips or fsdp over them (config.mesh), a smaller train.batch_size per "
            "micro-step (train.grad_accum_steps), model.remat='full', or train.loss_chunk_len")
  return "more chips or fsdp over them (config.mesh), or a smaller batch"
