"""Device mesh, logical-axis rules and the shardings that follow from them.

The mesh has three axes, named in the config:
  data    pure data parallelism: parameters replicated, batch split;
  fsdp    batch split *and* parameters split along their 'embed' axis (gathered per layer by XLA);
  tensor  Megatron-style split of heads, kv_heads, mlp and vocab.
Model code names logical axes only; `config.sharding_rules` maps them onto these mesh axes, so
moving from 1 CPU device to a pod is a config change.
"""

import contextlib
import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llmjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the global batch is split over both

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("length", None),
    ("head_dim", None),
    # The residual stream is split over the batch only; splitting its features over fsdp too
    # (as the 'embed' axis of parameters is) would make every layer regather them.
    ("activation_embed", None),
    ("layers", None),  # the stacked axis of scanned layers
)


def mesh_shape(requested: dict[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves the sizes of (data, fsdp, tensor); one size may be -1 to take the rest."""
  sizes = [int(requested.get(axis, 1)) for axis in MESH_AXES]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh = {dict(zip(MESH_AXES, sizes))}: expected positive sizes and at "
                    "most one -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if free:
    if num_devices % fixed:
      raise UserError(f"mesh = {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not "
                      f"divisible by {fixed}")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise UserError(f"mesh = {dict(zip(MESH_AXES, sizes))}: uses {math.prod(sizes)} devices "
                    f"but {num_devices} are present; set one axis to -1 to fill")
  return tuple(sizes)


@dataclasses.dataclass(frozen=True)
class Parallel:
  """The mesh and the logical rules, with the sharding helpers every step uses."""

  mesh: Mesh
  rules: tuple[tuple[str, Any], ...]

  @classmethod
  def from_config(cls, mesh_config, rules: Sequence[Sequence[Any]] | None = None,
                  devices: Sequence[jax.Device] | None = None) -> "Parallel":
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(dict(mesh_config), len(devices))
    device_grid = np.asarray(devices).reshape(shape)
    rules = tuple((str(name), _as_mesh_axes(axes)) for name, axes in (rules or DEFAULT_RULES))
    return cls(Mesh(device_grid, MESH_AXES), rules)

  @property
  def batch_size_multiple(self) -> int:
    """The global batch must split evenly over the batch axes."""
    return math.prod(self.mesh.shape[a] for a in BATCH_AXES)

  def sharding(self, spec: PartitionSpec) -> NamedSharding:
    return NamedSharding(self.mesh, spec)

  @property
  def replicated(self) -> NamedSharding:
    return self.sharding(PartitionSpec())

  def batch_sharding(self, ndim: int = 2) -> NamedSharding:
    """Leading (batch) axis split over data and fsdp, the rest replicated."""
    return self.sharding(PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))

  @contextlib.contextmanager
  def context(self):
    """Enter while tracing model code so `with_logical_constraint` sees the mesh and rules."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield


def _as_mesh_axes(axes):
  if axes is None or isinstance(axes, str):
    return axes
  axes = tuple(axes)
  unknown = [a for a in axes if a is not None and a not in MESH_AXES]
  if unknown:
    raise UserError(f"sharding_rules: unknown mesh axis {unknown[0]!r}; expected {MESH_AXES}")
  return axes
