#!/usr/bin/env bash
# Runs llmjax on every worker of a Cloud TPU VM pod: creates the pod if asked, installs this
# checkout on each worker, and runs the same `python -m llmjax.main` everywhere. JAX detects the
# pod from the TPU metadata (--distributed), so no coordinator address is needed.
#
#   TPU_NAME=my-pod ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#     launch/tpu_pod.sh [--create] [--dry-run] -- --config configs/pretrain.py:llama_1b \
#       --workdir gs://my-bucket/runs/llama1b
#
# Variables (required unless a default is shown):
#   TPU_NAME          name of the TPU VM pod
#   ZONE              its zone
#   ACCELERATOR_TYPE  e.g. v4-32, v5p-64 (only used with --create)
#   RUNTIME_VERSION   TPU VM image for --create, default tpu-ubuntu2204-base
#   PROJECT           gcloud project, default: gcloud's configured project
#   REPO_URL          git URL of llmjax to install on the workers, default: this checkout's
#                     `origin` remote
#   REPO_REF          commit or branch to install, default: this checkout's HEAD commit
#   LOG_DIR           where each worker's log goes (a gs:// path or a directory on the workers),
#                     default: WORKDIR/logs
#   TOPOLOGY          the slice for the check below, default ACCELERATOR_TYPE (v5litepod-8,
#                     v4-32 or libtpu's v5e:2x4, v4:2x2x4)
#   PYTHON            the Python of this machine's llmjax install, default python3
# Options:
#   --create          create the pod first (gcloud compute tpus tpu-vm create)
#   --dry-run         print the commands instead of running them
#   --skip-aot-check  do not compile the run for the slice here first: by default
#                     `python -m llmjax.aot` (the `tpu` extra) checks on this machine that every
#                     program of the run fits the slice's chips, and stops the launch if not
set -euo pipefail

usage() { echo "usage: TPU_NAME=.. ZONE=.. $0 [--create] [--dry-run] [--skip-aot-check] -- <llmjax.main args>" >&2; exit 2; }
need() { [ -n "${!1:-}" ] || { echo "error: \$$1 is not set (see the top of $0)" >&2; exit 2; }; }

create=0; dry_run=0; aot_check=1
while [ $# -gt 0 ]; do
  case "$1" in
    --create) create=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --skip-aot-check) aot_check=0; shift ;;
    --) shift; break ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || { echo "error: no llmjax arguments after --" >&2; usage; }
need TPU_NAME; need ZONE
[ "$create" = 0 ] || need ACCELERATOR_TYPE

here=$(cd "$(dirname "$0")/.." && pwd)
REPO_URL=${REPO_URL:-$(git -C "$here" remote get-url origin 2>/dev/null || true)}
REPO_REF=${REPO_REF:-$(git -C "$here" rev-parse HEAD)}
need REPO_URL
workdir=""
for arg in "$@"; do case "$arg" in --workdir=*) workdir=${arg#--workdir=} ;; esac; done
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = --workdir ] && workdir=${args[$((i + 1))]:-}; done
[ -n "$workdir" ] || { echo "error: the llmjax arguments need --workdir" >&2; exit 2; }
LOG_DIR=${LOG_DIR:-$workdir/logs}
project=(); [ -n "${PROJECT:-}" ] && project=(--project "$PROJECT")

run() { if [ "$dry_run" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }

if [ "$aot_check" = 1 ]; then
  topology=${TOPOLOGY:-${ACCELERATOR_TYPE:-}}
  [ -n "$topology" ] || { echo "error: the AOT check needs the slice: set \$TOPOLOGY (e.g." \
    "v4-32 or v4:2x2x4) or \$ACCELERATOR_TYPE, or pass --skip-aot-check" >&2; exit 2; }
  run "${PYTHON:-python3}" -m llmjax.aot --topology "$topology" "$@" || {
    echo "error: the run does not compile or fit on $topology (above); nothing was launched" \
      "(--skip-aot-check launches anyway)" >&2; exit 2; }
fi

if [ "$create" = 1 ]; then
  run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" "${project[@]}" \
    --accelerator-type "$ACCELERATOR_TYPE" --version "${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
fi

quoted_args=$(printf '%q ' "$@")
remote="set -euo pipefail
rm -rf ~/llmjax && git clone -q $(printf '%q' "$REPO_URL") ~/llmjax && cd ~/llmjax && git checkout -q $(printf '%q' "$REPO_REF")
python3 -m venv ~/llmjax-venv && . ~/llmjax-venv/bin/activate
pip install -q -e . 'jax[tpu]'
worker=\$(python3 -c 'import socket; print(socket.gethostname())')
log=$(printf '%q' "$LOG_DIR")/\$worker.log
case \"\$log\" in gs://*) python -m llmjax.main --distributed $quoted_args 2>&1 | tee /tmp/llmjax.log; gsutil cp /tmp/llmjax.log \"\$log\" ;;
  *) mkdir -p \"\$(dirname \"\$log\")\"; python -m llmjax.main --distributed $quoted_args 2>&1 | tee \"\$log\" ;; esac"

run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${project[@]}" --worker=all \
  --command "$remote"
