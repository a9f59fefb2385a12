"""Peak FLOP/s per device, for the MFU estimate.

Dense bf16 peaks from the vendors' data sheets. CPU has no data-sheet peak; its entry is the
matmul rate of a 2-core AVX2 host in f32, so the number is defined. Override with
`config.train.peak_flops_per_device` for any device.
"""

import jax

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
    "cpu": 2.5e11,  # a 2048x2048 f32 matmul reaches 210-255 GFLOP/s on a 2-core AVX2 host
}


def peak_flops_per_device(override: float | None = None) -> float:
  """The configured or table peak for `jax.devices()[0]`, matched by device-kind prefix."""
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  for prefix, peak in PEAK_FLOPS_PER_DEVICE.items():
    if kind.lower().startswith(prefix.lower()):
      return peak
  return PEAK_FLOPS_PER_DEVICE["cpu"] if jax.default_backend() == "cpu" else float("nan")
