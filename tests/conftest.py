"""Shared test set-up: a private data cache, a persistent compilation cache shared by every
worker and subprocess of the run, and a CLI runner that runs `llmjax.main` in this process unless
a test needs a process of its own."""

import contextlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import traceback

import pytest

from llmjax import hostenv

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The suite's programs are tiny, and XLA:CPU spends most of their time in LLVM's optimizer. At
# backend optimization level 1 a model's initialisation (20 threefry draws) compiles in 3.4 s
# instead of 9.3 s on a 2-core host and the matmul-bound steps run as fast (the pipelines that
# train for real ran 11% faster end to end); without LLVM's expensive passes the compile-bound
# sentence_lm pipeline ran 14% faster and the training-bound ones as fast. Every test process
# and every subprocess it starts compiles this way; LLMJAX_TEST_XLA_DEFAULTS=1 runs the suite
# with XLA's own defaults. The tests that run in this process go one step further (below).
# XLA:CPU's MLIR fusion emitters are off: the older LLVM IR emitters compile a tiny program in
# 37 ms instead of 61 (most tests run model code op by op, each op compiled once per shape), which
# took test_models.py from 159 to 100 s on host C, with the 300-step grokking runs as fast.
TEST_XLA_FLAGS = ("" if os.environ.get("LLMJAX_TEST_XLA_DEFAULTS") == "1" else
                  "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true "
                  "--xla_cpu_use_fusion_emitters=false")


def xla_flags(devices: int = 1) -> str:
  """XLA_FLAGS for a test subprocess with `devices` CPU devices."""
  return f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}".strip()


# The test extra installs libtpu (for llmjax.aot's tests); jax would look for a TPU at start-up
# and libtpu log its search. The suite runs on the CPU, and so do the processes it starts.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Set before jax creates its backend (collection builds arrays), so this process compiles the
# same way as its subprocesses.
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


# pytest-xdist hands a worker one whole file at a time (--dist loadfile); a long file handed out
# last keeps one worker busy while the other waits. The files that took longest (host C,
# 2026-12-07: seconds of test time in the whole suite) go first, longest first; the others
# follow in their usual order. A stale list costs only balance, never a test.
LONGEST_FILES = ("test_models.py", "test_grokking.py", "test_preference_dpo.py",
                 "test_sentence_lm.py", "test_distributed.py", "test_infer.py",
                 "test_cot_encyclopedia.py", "test_serve.py", "test_self_explore.py",
                 "test_aot.py",
                 "test_failures.py", "test_preference_did.py", "test_run_history.py",
                 "test_interop.py", "test_scale_path.py", "test_train.py", "test_parallel.py",
                 "test_music_judge.py", "test_knowledge_entropy.py")


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # xdist would order files by test count
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
  """Corpora are built into a per-run cache; XLA reuses compilations across processes. Under
  pytest-xdist every worker's base directory sits in the run's own, so the workers (and the CLI
  subprocesses they start) share one cache: a program one worker compiled the others load."""
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  root = root / "caches"
  root.mkdir(exist_ok=True)
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


@pytest.fixture(autouse=True)
def _optimization_level_for_the_test(request):
  """Most tests compile far more than they run: they compile at level 0 (jax's
  `jax_disable_most_optimizations`), which took test_models and test_infer from 269 to 233 s
  on a 2-core host. Tests marked `trains` spend their time in compiled steps (level 0 made the
  300-step grokking runs and the BiGGen generation twice as slow): they keep level 1."""
  if TEST_XLA_FLAGS:
    import jax
    jax.config.update("jax_disable_most_optimizations",
                      request.node.get_closest_marker("trains") is None)
  yield


class CliResult:
  """What a finished command left: its exit code and what it printed (subprocess.run's names)."""

  def __init__(self, returncode: int, stdout: str, stderr: str):
    self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(args, devices: int = 1, timeout: float = 300, isolated: bool = False,
            **popen_kwargs):
  """Runs `python -m llmjax.main ARGS` from the repo root and returns its exit code and output.

  On one device it runs `llmjax.main.main(ARGS)` in this process: the same code after the
  interpreter's start-up, with jax, the experiments and their compiled programs already loaded
  (a tiny run takes a quarter of a fresh process's time). `isolated=True`, or more than one
  device, starts a process of its own: for what only a process shows (signals, locks held by
  another process, the exit path, XLA_FLAGS)."""
  if devices == 1 and not isolated and not popen_kwargs:
    return run_in_process(args)
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(devices)
  return subprocess.run([sys.executable, "-m", "llmjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen_kwargs)


def run_in_process(args) -> CliResult:
  from llmjax import main
  out, err = io.StringIO(), io.StringIO()
  cwd = os.getcwd()
  os.chdir(REPO)  # config paths in ARGS are relative to the repo root, as for the subprocess
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        code = main.main([str(a) for a in args])
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
      except Exception:  # what the interpreter would print before exiting 1
        traceback.print_exc()
        code = 1
  finally:
    os.chdir(cwd)
  return CliResult(code, out.getvalue(), err.getvalue())


def tiny_args(workdir, *overrides):
  """The tiny pretraining preset, quiet, with the given `--config.` overrides."""
  return ["--config", "configs/pretrain.py:tiny", "--workdir", str(workdir),
          "--config.train.progress=False", *overrides]


SMALL = ("--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=1", "--config.model.d_ff=64", "--config.model.max_len=32",
         "--config.train.batch_size=4", "--config.train.seq_len=32",
         "--config.train.eval_batches=1", "--config.train.progress=False")


def small_args(workdir, *overrides):
  """The tiny pretraining preset at the smallest model size, quiet."""
  return ["--config", "configs/pretrain.py:tiny", "--workdir", str(workdir), *SMALL, *overrides]


def error_line(capsys) -> str:
  """What an in-process run printed to stderr, checked to be one `error:` line."""
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err, err
  return err


def slow_after_first(*values):
  """Parametrize values whose first runs in the quick tier and the rest in the slow one: the
  quick tier checks the behaviour once, the whole suite on every variant."""
  return [values[0], *(pytest.param(v, marks=pytest.mark.slow) for v in values[1:])]


def read_jsonl(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]


def sigterm_after_metrics(args, workdir, min_rows: int, timeout: float = 240,
                          signal_number: int = signal.SIGTERM):
  """Starts `python -m llmjax.main ARGS`, sends SIGTERM (or `signal_number`) once
  workdir/metrics.jsonl has `min_rows` rows, and returns the finished process (with .returncode
  and .stderr)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
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
