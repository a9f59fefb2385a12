"""Multi-process runs on 127.0.0.1: the same losses as one process, and resuming."""

import json
import os
import socket
import subprocess

import pytest

from conftest import REPO, read_jsonl, run_cli, tiny_args
from llmjax.distributed import options_from
from llmjax.errors import UserError

LAUNCH = str(REPO / "launch" / "local_multiprocess.sh")
RUN = ("--config.train.steps=20", "--config.train.log_every=5", "--config.train.eval_every=10",
       "--config.train.checkpoint_every=10", "--config.data.num_shards=2")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(num_processes, devices, args, timeout=300):
  return subprocess.run([LAUNCH, str(num_processes), "--devices-per-process", str(devices),
                         "--port", str(free_port()), "--", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def losses(workdir):
  return [(r["step"], r["split"], r["loss"]) for r in read_jsonl(workdir / "metrics.jsonl")]


def assert_same_losses(a, b):
  assert [(s, split) for s, split, _ in a] == [(s, split) for s, split, _ in b]
  for (_, _, x), (_, _, y) in zip(a, b):
    assert abs(x - y) <= 1e-4 * abs(x), (a, b)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("single")
  result = run_cli(tiny_args(workdir, *RUN), devices=4)
  assert result.returncode == 0, result.stderr
  return workdir


@pytest.mark.slow
def test_two_processes_stop_resume_and_match_one(tmp_path, single_process_run):
  """Two processes of two devices each, stopped after step 10 and resumed, log the losses of
  one process with four devices (one run checks both: the resumed history must equal the
  uninterrupted single-process one)."""
  first = launch(2, 2, tiny_args(tmp_path, *RUN, "--config.train.stop_after_steps=10"))
  assert first.returncode == 0, first.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["stopped_early"] is True and summary["devices"] == 4
  assert (tmp_path / "logs" / "process_1.log").exists()  # only process 0 writes the run files
  second = launch(2, 2, tiny_args(tmp_path, *RUN))
  assert second.returncode == 0, second.stderr
  assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == 10
  assert_same_losses(losses(tmp_path), losses(single_process_run))


def test_options_need_all_three_or_none():
  assert not options_from({}).requested
  assert options_from({"distributed": True}).requested
  options = options_from({}, environ={"LLMJAX_COORDINATOR_ADDRESS": "127.0.0.1:1",
                                      "LLMJAX_NUM_PROCESSES": "2", "LLMJAX_PROCESS_ID": "1"})
  assert (options.num_processes, options.process_id) == (2, 1)
  with pytest.raises(UserError, match="--process_id is missing"):
    options_from({"coordinator_address": "h:1", "num_processes": 2})
  with pytest.raises(UserError, match="process_id = 2: expected 0 <= process_id"):
    options_from({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2})


def test_launcher_rejects_bad_input_and_dry_runs():
  assert subprocess.run(["bash", "-n", LAUNCH]).returncode == 0
  bad = subprocess.run([LAUNCH, "two", "--", "--workdir", "w"], capture_output=True, text=True)
  assert bad.returncode == 2 and "N = 'two': expected a positive integer" in bad.stderr
  dry = subprocess.run([LAUNCH, "3", "--port", "1234", "--dry-run", "--", "--workdir", "w"],
                       capture_output=True, text=True)
  assert dry.returncode == 0
  lines = dry.stdout.strip().splitlines()
  assert len(lines) == 3
  assert all("LLMJAX_COORDINATOR_ADDRESS=127.0.0.1:1234" in line for line in lines)
  assert [f"LLMJAX_PROCESS_ID={i}" in lines[i] for i in range(3)] == [True] * 3
  # The caller's XLA_FLAGS are kept beside the device count.
  kept = subprocess.run([LAUNCH, "1", "--dry-run", "--", "--workdir", "w"], capture_output=True,
                        text=True, env={**os.environ, "XLA_FLAGS": "--xla_dump_to=/tmp/d"})
  assert ("XLA_FLAGS=--xla_dump_to=/tmp/d\\ --xla_force_host_platform_device_count=1"
          in kept.stdout)


def _script(name, *args, **env):
  return subprocess.run(["bash", str(REPO / "launch" / name), *args], capture_output=True,
                        text=True, env={**os.environ, **env})


def test_tpu_pod_script_dry_run_and_missing_variables():
  assert subprocess.run(["bash", "-n", str(REPO / "launch" / "tpu_pod.sh")]).returncode == 0
  missing = _script("tpu_pod.sh", "--dry-run", "--", "--workdir", "gs://b/r")
  assert missing.returncode == 2 and "$TPU_NAME is not set" in missing.stderr
  dry = _script("tpu_pod.sh", "--create", "--dry-run", "--", "--config",
                "configs/pretrain.py:llama_1b", "--workdir", "gs://b/r", TPU_NAME="pod",
                ZONE="us-central2-b", ACCELERATOR_TYPE="v4-32", REPO_URL="https://h/llmjax.git")
  assert dry.returncode == 0, dry.stderr
  check, create, ssh = dry.stdout.strip().split("\n", 2)
  # First the run is compiled for the slice here (llmjax.aot), then the pod is made.
  assert check.strip().endswith("-m llmjax.aot --topology v4-32 --config "
                                "configs/pretrain.py:llama_1b --workdir gs://b/r")
  assert create.startswith("gcloud compute tpus tpu-vm create pod --zone us-central2-b")
  assert "--accelerator-type v4-32" in create
  assert ssh.startswith("gcloud compute tpus tpu-vm ssh pod --zone us-central2-b --worker=all")
  assert "python -m llmjax.main --distributed --config configs/pretrain.py:llama_1b" in ssh
  unchecked = _script("tpu_pod.sh", "--skip-aot-check", "--dry-run", "--", "--workdir",
                      "gs://b/r", TPU_NAME="pod", ZONE="z", REPO_URL="https://h/llmjax.git")
  assert unchecked.returncode == 0 and unchecked.stdout.startswith("gcloud compute tpus tpu-vm ssh")
  no_slice = _script("tpu_pod.sh", "--dry-run", "--", "--workdir", "gs://b/r", TPU_NAME="pod",
                     ZONE="z", REPO_URL="https://h/llmjax.git")
  assert no_slice.returncode == 2 and "the AOT check needs the slice" in no_slice.stderr


def test_slurm_script_dry_run_per_node_and_per_gpu():
  assert subprocess.run(["bash", "-n", str(REPO / "launch" / "slurm_gpu.sbatch")]).returncode == 0
  missing = _script("slurm_gpu.sbatch", "--workdir", "w", DRY_RUN="1", GPUS_PER_NODE="",
                    SLURM_GPUS_ON_NODE="")
  assert missing.returncode == 2 and "set GPUS_PER_NODE" in missing.stderr
  per_node = _script("slurm_gpu.sbatch", "--workdir", "w", DRY_RUN="1", GPUS_PER_NODE="4")
  assert per_node.stdout.startswith("srun --ntasks-per-node=1 bash -c")
  assert "--local_device_ids=0\\,1\\,2\\,3" in per_node.stdout
  per_gpu = _script("slurm_gpu.sbatch", "--workdir", "w", DRY_RUN="1", GPUS_PER_NODE="8",
                    PER_GPU="1")
  assert per_gpu.stdout.startswith("srun --ntasks-per-node=8 --gpus-per-task=1")


@pytest.mark.slow
def test_knowledge_entropy_on_two_processes_matches_one(tmp_path, single_process_run):
  """Each process feeds its half of every global batch; the sums meet on device."""
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n\n".join(f"the red fox sees {i} small dogs. count: {i} {i + 1}."
                                * (1 + i % 4) for i in range(11)))
  args = ["--config", "configs/knowledge_entropy.py", "--config.progress=False",
          f"--config.checkpoints={single_process_run}", f"--config.corpus={corpus}",
          "--config.batch_size=4", "--config.length_bucket=32"]
  one = run_cli([*args, "--workdir", str(tmp_path / "one")], devices=1)
  assert one.returncode == 0, one.stderr
  two = launch(2, 2, [*args, "--workdir", str(tmp_path / "two"), "--config.mesh.data=2",
                      "--config.mesh.fsdp=2"])
  assert two.returncode == 0, two.stderr
  rows_one, rows_two = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("one", "two"))
  assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [10, 20]
  for a, b in zip(rows_one, rows_two):
    assert a["positions"] == b["positions"]
    assert max(abs(x - y) for x, y in zip(a["layer_entropy"], b["layer_entropy"])) < 1e-5
