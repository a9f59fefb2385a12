#!/usr/bin/env bash
# Runs llmjax as N cooperating processes on this machine (127.0.0.1), the way a pod or cluster
# runs it: JAX's multi-controller runtime, gloo collectives on CPU.
#
#   launch/local_multiprocess.sh N [--devices-per-process D] [--port PORT] [--dry-run] \
#       -- --config configs/pretrain.py:tiny --workdir runs/mp
#
#   N                      number of processes (required, >= 1)
#   --devices-per-process  fake CPU devices per process (XLA_FLAGS), default 1
#   --port                 coordinator port on 127.0.0.1, default 29400 + (PID % 1000)
#   --dry-run              print the commands instead of running them
#   PYTHON                 environment variable: the interpreter, default python3
#
# SIGTERM/SIGINT are forwarded to every process (each saves a checkpoint and exits 0). The
# script exits with the first non-zero exit code of any process. Process 0 writes to this
# terminal; process i > 0 writes to WORKDIR/logs/process_i.log if --workdir is given, else to
# this terminal with a [i] prefix.
set -euo pipefail

usage() { echo "usage: $0 N [--devices-per-process D] [--port PORT] [--dry-run] -- <llmjax.main args>" >&2; exit 2; }

[ $# -ge 1 ] || usage
num_processes=$1; shift
[[ "$num_processes" =~ ^[1-9][0-9]*$ ]] || { echo "error: N = '$num_processes': expected a positive integer" >&2; exit 2; }
devices=1; port=$((29400 + $$ % 1000)); dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --devices-per-process) devices=${2:?--devices-per-process needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "error: unknown option '$1' (put llmjax's own arguments after --)" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || { echo "error: no llmjax arguments after --" >&2; usage; }
python=${PYTHON:-python3}

workdir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --workdir) workdir=${args[$((i + 1))]:-} ;;
    --workdir=*) workdir=${args[$i]#--workdir=} ;;
  esac
done

pids=()
forward() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
trap forward TERM INT

for ((rank = 0; rank < num_processes; rank++)); do
  # The caller's XLA_FLAGS are kept; the device count is added to them.
  env=(JAX_PLATFORMS=cpu "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices"
       "LLMJAX_COORDINATOR_ADDRESS=127.0.0.1:$port" "LLMJAX_NUM_PROCESSES=$num_processes"
       "LLMJAX_PROCESS_ID=$rank")
  command=(env "${env[@]}" "$python" -m llmjax.main "$@")
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "${command[@]}"; echo
    continue
  fi
  if [ "$rank" = 0 ]; then
    "${command[@]}" &
  elif [ -n "$workdir" ]; then
    mkdir -p "$workdir/logs"
    "${command[@]}" > "$workdir/logs/process_$rank.log" 2>&1 &
  else
    "${command[@]}" 2>&1 | sed -u "s/^/[$rank] /" &
  fi
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid" && code=0 || code=$?
    # wait returns > 128 when a trapped signal interrupts it; the process is still running.
    if [ "$code" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  if [ "$code" != 0 ] && [ "$status" = 0 ]; then status=$code; fi
done
exit "$status"
