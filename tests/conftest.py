"""Shared test set-up: a private data cache, a persistent compilation cache, a CLI runner."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from llmjax import hostenv

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
  """Corpora are built into a per-session cache; XLA reuses compilations across processes."""
  root = tmp_path_factory.mktemp("caches")
  os.environ["LLMJAX_CACHE"] = str(root / "llmjax")
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "xla"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  # This process imported jax while collecting the tests, before the variables above were set,
  # and jax reads them at import: tell it directly, so the tests that run in-process share the
  # cache with each other and with the CLI subprocesses.
  import jax
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  # CLI subprocesses start with glibc malloc on huge pages, as `python -m llmjax.main` would
  # re-execute itself to (llmjax/hostenv.py): the same speed, without the second start.
  tunables = hostenv.huge_page_tunables()
  if tunables:
    os.environ["GLIBC_TUNABLES"] = tunables
  yield


def run_cli(args, devices: int = 1, timeout: float = 300, **popen_kwargs):
  """Runs `python -m llmjax.main ARGS` in a subprocess from the repo root."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return subprocess.run([sys.executable, "-m", "llmjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen_kwargs)


def tiny_args(workdir, *overrides):
  """The tiny pretraining preset, quiet, with the given `--config.` overrides."""
  return ["--config", "configs/pretrain.py:tiny", "--workdir", str(workdir),
          "--config.train.progress=False", *overrides]


def read_jsonl(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]


def sigterm_after_metrics(args, workdir, min_rows: int, timeout: float = 240,
                          signal_number: int = signal.SIGTERM):
  """Starts `python -m llmjax.main ARGS`, sends SIGTERM (or `signal_number`) once
  workdir/metrics.jsonl has `min_rows` rows, and returns the finished process (with .returncode
  and .stderr)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  process = subprocess.Popen([sys.executable, "-m", "llmjax.main", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  deadline = time.time() + timeout
  # Whole rows only: the writer may be in the middle of one.
  while time.time() < deadline and not (metrics.exists() and
                                        metrics.read_text().count("\n") >= min_rows):
    assert process.poll() is None, process.communicate()[1]
    time.sleep(0.2)
  process.send_signal(signal_number)
  _, process.stderr = process.communicate(timeout=120)
  return process
