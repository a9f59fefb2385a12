#!/usr/bin/env bash
# BiGGen Bench graded by a tiny llmjax judge twice: through `python -m llmjax.serve` on
# 127.0.0.1 (the openai backend) and in-process (the local backend), with the same seed. Prints
# the wall time of each and one JSON line: instances, how many judgements (every attempt's raw
# output) are identical, and whether the two reports are equal; then the report.
#
#   benchmarks/biggen_served_vs_local.sh            # all 765 instances, max_retries 10
#   LIMIT=40 RETRIES=10 W=/tmp/bg benchmarks/biggen_served_vs_local.sh
#
# The judge is configs/pretrain.py:tiny (byte-level, trained ~25 s): it is far too small to
# grade, so nearly every output fails to parse and is retried; the run shows the plumbing and
# that both backends agree, not judging quality. BiGGen prompts are 3-6k bytes: BATCH (default
# 2) keeps a CPU host's generation memory small. Measured: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
W=${W:-/tmp/biggen_served_vs_local}
RETRIES=${RETRIES:-10}
LIMIT=${LIMIT:-0}
BATCH=${BATCH:-2}
PORT=${PORT:-18431}
rm -rf "$W"; mkdir -p "$W"
$PY -m llmjax.main --config configs/pretrain.py:tiny --workdir "$W/run" \
    --config.train.progress=False > "$W/pretrain.log" 2>&1
$PY -m llmjax.serve --checkpoint "$W/run" --port "$PORT" --model-name tiny \
    --length-bucket 512 --batch-size "$BATCH" > "$W/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
  sleep 1
done
common=(--config configs/biggen.py --config.progress=False --config.limit="$LIMIT"
        --config.judge.max_tokens=32 --config.judge.max_retries="$RETRIES"
        --config.judge.length_bucket=512 --config.judge.batch_size="$BATCH" --config.seed=0)
/usr/bin/time -f "openai backend: %e s" $PY -m llmjax.main "${common[@]}" --workdir "$W/openai" \
    --config.judge.backend=openai --config.judge.base_url="http://127.0.0.1:$PORT/v1" \
    --config.judge.model=tiny --config.judge.concurrency=16 > "$W/openai.log" 2>&1
/usr/bin/time -f "local backend: %e s" $PY -m llmjax.main "${common[@]}" --workdir "$W/local" \
    --config.judge.backend=local --config.judge.checkpoint="$W/run" > "$W/local.log" 2>&1
tail -1 "$W/openai.log"; tail -1 "$W/local.log"
W="$W" $PY - <<'PYEOF'
import json, os
w = os.environ["W"]
def judged(d):
  with open(f"{w}/{d}/judgements.jsonl") as f:
    return {r["id"]: r["outputs"] for r in map(json.loads, f)}
a, b = judged("openai"), judged("local")
with open(f"{w}/openai/report.json") as f, open(f"{w}/local/report.json") as g:
  equal = json.load(f) == json.load(g)
print(json.dumps({"benchmark": "biggen_served_vs_local", "instances": len(a),
                  "identical_judgements": sum(a[k] == b.get(k) for k in a),
                  "report_equal": equal}))
print(open(f"{w}/openai/report.md").read())
PYEOF
