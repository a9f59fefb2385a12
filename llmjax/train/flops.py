"""Peak FLOP/s per device, the denominator of MFU.

Accelerators: the dense bf16 peaks of the vendors' data sheets, matched by device-kind prefix.
CPUs have no such figure that holds across hosts (two hosts of this project, both 2-core AMD
EPYC, ran a 2048x2048 f32 matmul at 210-255 and at 460-475 GFLOP/s: AVX2 against full-width
AVX-512), so on CPU the peak is measured: the best of a few f32 matmuls through XLA, once per
process, shared among the process's CPU devices (fake devices from
--xla_force_host_platform_device_count share the same cores). MFU on CPU is thus "model FLOPs
over what this host's matmuls reach". `config.train.peak_flops_per_device` overrides both.
"""

import functools
import time

import jax
import jax.numpy as jnp

PEAK_FLOPS_PER_DEVICE = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA B200": 2250e12,
}


@functools.lru_cache(maxsize=None)
def measured_cpu_matmul_flops(size: int = 1024, repeats: int = 10) -> float:
  """FLOP/s of the fastest of `repeats` [size, size] f32 matmuls on this process's first CPU
  device, with all of its threads. Every CPU run pays for it at start-up: 1024 reaches the rate
  of 2048 (479 against 477 GFLOP/s here) in a third of the time (about 0.2 s on 2 cores)."""
  device = jax.local_devices(backend="cpu")[0]
  a = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (size, size)), device)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()  # compile
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def peak_flops_per_device(override: float | None = None) -> float:
  """The configured peak, the table's for `jax.devices()[0]`, or on CPU the measured matmul rate
  divided among the local CPU devices; NaN for an accelerator the table does not know."""
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  for prefix, peak in PEAK_FLOPS_PER_DEVICE.items():
    if kind.lower().startswith(prefix.lower()):
      return peak
  if jax.default_backend() == "cpu":
    return measured_cpu_matmul_flops() / jax.local_device_count()
  return float("nan")
