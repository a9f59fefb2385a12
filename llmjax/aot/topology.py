"""TPU topologies as libtpu names them ('v5e:2x4', 'v5p:2x2x1', 'v4:4x4x4', 'v6e:16x16') or as
gcloud's accelerator types do ('v5litepod-8', 'v4-32', 'v5p-8', 'v6e-256'): their
compile-only devices on this host, and what each chip offers (HBM, peak bf16 FLOP/s, HBM
bandwidth) for the fit verdict and the roofline.

Chip figures are Google Cloud's published per-chip numbers. v4 and v5p chips hold two
TensorCores run as one device (megacore), as on their TPU VMs; v5e and v6e chips hold one.
"""

import dataclasses
import importlib.util
import math
import os
import re

from llmjax.errors import UserError

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str
  hbm_bytes: int  # per chip
  peak_flops: float  # dense bf16 FLOP/s per chip
  hbm_bandwidth: float  # bytes/s per chip
  dims: int  # 2 for a 2-D torus slice name (v5e:2x4), 3 for a 3-D one (v5p:2x2x1)
  megacore: bool


CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 1.2e12, 3, True),
    "v5e": Chip("v5e", 16 * GiB, 197e12, 8.19e11, 2, False),
    "v5p": Chip("v5p", 95 * GiB, 459e12, 2.765e12, 3, True),
    "v6e": Chip("v6e", 32 * GiB, 918e12, 1.64e12, 2, False),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str
  chip: Chip
  devices: tuple  # compile-only jax devices, one per chip

  @property
  def chips(self) -> int:
    return len(self.devices)


# gcloud's accelerator types: the generation, and how many of the counted units make a chip
# (v4-32 and v5p-64 count TensorCores, two per chip; v5litepod-8 and v6e-8 count chips).
_ACCELERATOR_TYPES = {"v4": ("v4", 2), "v5p": ("v5p", 2), "v5litepod": ("v5e", 1),
                      "v5e": ("v5e", 1), "v6e": ("v6e", 1)}


def slice_shape(chips: int, dims: int) -> tuple[int, ...]:
  """The default shape of a slice of `chips` chips, as gcloud creates it: 8 chips of v5e are
  2x4, 16 of v4 are 2x2x4 (a 3-D slice starts as 2x2x1; each doubling doubles the last of
  the smallest sides)."""
  shape = [2, 2, 1] if dims == 3 and chips >= 4 else [1] * dims
  while math.prod(shape) < chips:
    smallest = min(shape)
    last = max(i for i, side in enumerate(shape) if side == smallest)
    shape[last] *= 2
  return tuple(shape)


def topology_name(name: str) -> str:
  """libtpu's name of a slice given as libtpu names it ('v5e:2x4') or as gcloud's accelerator
  type ('v5litepod-8', 'v4-32'); a type whose count is no power of two is a UserError."""
  match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name)
  if not match or match.group(1) not in _ACCELERATOR_TYPES:
    return name
  generation, per_chip = _ACCELERATOR_TYPES[match.group(1)]
  count = int(match.group(2))
  chips = count // per_chip
  if chips < 1 or count % per_chip or chips & (chips - 1):
    raise UserError(f"--topology {name!r}: {count} is not a slice size of {match.group(1)} "
                    "(a power of two" + (" TensorCores, two per chip)" if per_chip == 2 else ")"))
  shape = slice_shape(chips, CHIPS[generation].dims)
  return f"{generation}:{'x'.join(map(str, shape))}"


def parse_topology(name: str) -> tuple[Chip, tuple[int, ...]]:
  """('v5e', (2, 4)) for 'v5e:2x4'; a malformed name or an unknown generation is a UserError."""
  match = re.fullmatch(r"(v\d+[a-z]?):(\d+(?:x\d+)*)", name)
  if not match:
    raise UserError(f"--topology {name!r}: expected GENERATION:AxB[xC], e.g. v5e:2x4 or "
                    "v5p:2x2x1")
  generation, dims = match.group(1), tuple(int(d) for d in match.group(2).split("x"))
  if generation not in CHIPS:
    raise UserError(f"--topology {name!r}: unknown TPU generation {generation!r}; expected one "
                    f"of {sorted(CHIPS)}")
  chip = CHIPS[generation]
  if len(dims) != chip.dims or min(dims) < 1:
    shape = "x".join(["A", "B", "C"][:chip.dims])
    raise UserError(f"--topology {name!r}: a {generation} slice is named {generation}:{shape} "
                    "with positive sizes")
  return chip, dims


def tpu_topology(name: str) -> Topology:
  """The compile-only devices of the topology `name` (libtpu's or gcloud's spelling; needs
  libtpu: the `tpu` extra)."""
  name = topology_name(name)
  chip, dims = parse_topology(name)
  if importlib.util.find_spec("libtpu") is None:
    raise UserError("compiling for a TPU needs libtpu: pip install -e '.[tpu]' (jax[tpu] at "
                    "this jax's version)")
  # libtpu looks for the TPU VM it runs on; say there is none, so it does not log its search.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{chip.generation}-1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  # libtpu takes a machine-wide lockfile, which would refuse a second check running at once
  # (or beside a test); compiling touches no chip, so both may load it.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  # A host holds at most 2x2 chips of a slice: smaller slices (one chip, 2x1) are one host.
  per_host = tuple(min(d, 2) for d in dims[:2]) + (1,)
  try:
    description = topologies.get_topology_desc(
        topology_name=name, platform="tpu", chips_per_host_bounds=per_host,
        chip_config_name="megacore" if chip.megacore else "default")
  except Exception as e:  # libtpu's own words, e.g. a size its generation does not come in
    raise UserError(f"--topology {name!r}: libtpu refused it ({str(e).splitlines()[0]})") \
        from None
  return Topology(name, chip, tuple(description.devices))
