"""Multi-process start-up: JAX's own multi-controller runtime, initialised before anything
touches a device.

Where the processes learn about each other, in order of precedence:
  1. flags: --coordinator_address HOST:PORT --num_processes N --process_id I
  2. environment: LLMJAX_COORDINATOR_ADDRESS, LLMJAX_NUM_PROCESSES, LLMJAX_PROCESS_ID
     (what launch/local_multiprocess.sh sets)
  3. --distributed alone: JAX's cluster auto-detection (TPU pod metadata, SLURM, Open MPI).
Without any of these the run is single-process and nothing is initialised.

On GPUs each process is given its devices explicitly (`local_device_ids`): left to itself the
runtime can make every process of a multi-GPU node see a single GPU (MaxText issue #865). On
CPUs the cross-process collectives go through gloo.
"""

import dataclasses
import os

import jax

from llmjax.errors import UserError

_ENV = {"coordinator_address": "LLMJAX_COORDINATOR_ADDRESS",
        "num_processes": "LLMJAX_NUM_PROCESSES", "process_id": "LLMJAX_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class DistributedOptions:
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False  # --distributed: let JAX detect the cluster
  local_device_ids: tuple[int, ...] | None = None

  @property
  def requested(self) -> bool:
    return self.auto or self.coordinator_address is not None


def options_from(flags_values: dict, environ=os.environ) -> DistributedOptions:
  """Merges explicit flag values (None where unset) with the LLMJAX_* environment."""
  values = {}
  for name, env in _ENV.items():
    value = flags_values.get(name)
    if value is None and environ.get(env):
      value = environ[env]
    values[name] = value
  for name in ("num_processes", "process_id"):
    if values[name] is not None:
      try:
        values[name] = int(values[name])
      except ValueError:
        raise UserError(f"{name} = {values[name]!r}: expected an integer") from None
  explicit = [values[n] is not None for n in _ENV]
  if any(explicit) and not all(explicit):
    missing = [n for n, given in zip(_ENV, explicit) if not given]
    raise UserError(f"a multi-process run needs all of --coordinator_address, --num_processes "
                    f"and --process_id (or their $LLMJAX_* variables); --{missing[0]} is missing")
  if all(explicit) and not 0 <= values["process_id"] < values["num_processes"]:
    raise UserError(f"process_id = {values['process_id']}: expected 0 <= process_id < "
                    f"num_processes = {values['num_processes']}")
  ids = flags_values.get("local_device_ids")
  local_ids = tuple(int(i) for i in ids.split(",")) if ids else None
  return DistributedOptions(auto=bool(flags_values.get("distributed")),
                            local_device_ids=local_ids, **values)


def _visible_gpu_ids(environ=os.environ) -> tuple[int, ...] | None:
  """Local GPU ordinals from CUDA_VISIBLE_DEVICES or SLURM, without initialising a backend."""
  visible = environ.get("CUDA_VISIBLE_DEVICES")
  if visible:
    return tuple(range(len([v for v in visible.split(",") if v.strip()])))
  for name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
    count = environ.get(name, "").split(":")[-1]
    if count.isdigit():
      return tuple(range(int(count)))
  return None


def initialize(options: DistributedOptions) -> None:
  """Starts the multi-process runtime if the options ask for it; otherwise does nothing."""
  if not options.requested:
    return
  # Harmless on accelerators (the CPU backend then does no compute); required on CPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if options.coordinator_address is not None:
    kwargs.update(coordinator_address=options.coordinator_address,
                  num_processes=options.num_processes, process_id=options.process_id)
  local_ids = options.local_device_ids or _visible_gpu_ids()
  if local_ids is not None and os.environ.get("JAX_PLATFORMS", "") != "cpu":
    kwargs["local_device_ids"] = list(local_ids)
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    raise UserError(f"jax.distributed.initialize failed: {str(e).splitlines()[0]}") from None


def barrier(name: str) -> None:
  """Waits until every process reaches this point (a no-op in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def broadcast_flag(flag: bool) -> bool:
  """Process 0's `flag`, on every process (as it is in a single-process run)."""
  if jax.process_count() == 1:
    return flag
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
