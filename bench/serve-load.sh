#!/usr/bin/env bash
# `ove serve` under load, on loopback: starts the server on the built-in model (or
# --bundle), then runs bench/serve_load.py at several client counts, side by side in one
# run, and prints per run: throughput (answers/s, completion tokens/s), latency p50/p95,
# the share answered 429 (queue full) and any other error (there should be none).
#
#   bench/serve-load.sh [--bundle DIR] [--backends "ort tract"] [--clients "1 4 16"]
#                       [--requests N] [--max-tokens N] [--queue N] [--image FILE]
# Each backend gets its own server, started and measured in turn in the same run.
#   BIN=PATH   a prebuilt ove (default: cargo build --release -p ove)
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS="ort tract" CLIENTS="1 4 16" REQUESTS=48 MAX_TOKENS=32 QUEUE=8 IMAGE=examples/heldout-receipt.png BUNDLE=()
while (($#)); do
  case "$1" in
    --bundle) BUNDLE=(--bundle "$2"); shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --queue) QUEUE=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
scripts/setup >/dev/null
. .venv/ove-env.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p ove
  BIN=target/release/ove
fi
LOG=$(mktemp)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -f "$LOG"' EXIT
for backend in $BACKENDS; do
  "$BIN" serve "${BUNDLE[@]}" --backend "$backend" --port 0 --queue "$QUEUE" 2>"$LOG" &
  PID=$!
  URL=
  for _ in $(seq 600); do
    URL=$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -n1 | sed 's/listening on //') || true
    if [ -n "$URL" ] && curl -sf "$URL/health" >/dev/null; then break; fi
    kill -0 $PID 2>/dev/null || { cat "$LOG" >&2; exit 1; }
    sleep 0.1
  done
  echo "serve-load: $("$BIN" --version), backend $backend, at $URL, queue $QUEUE, $REQUESTS requests of $MAX_TOKENS tokens on $IMAGE"
  printf '%8s %8s %8s %6s %6s %9s %10s %8s %8s %7s\n' backend clients answered 429 errors "answers/s" "tokens/s" p50_s p95_s busy
  for c in $CLIENTS; do
    line=$(.venv/bin/python bench/serve_load.py --url "$URL" --image "$IMAGE" --clients "$c" \
      --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" | grep '^LOAD ' | sed 's/^LOAD //') || true
    [ -n "$line" ] || { echo "serve-load: the run with $c clients failed" >&2; exit 1; }
    echo "$line" | B=$backend .venv/bin/python -c '
import json, os, sys
f = json.load(sys.stdin)
print("%8s %8d %8d %6d %6d %9.2f %10.1f %8.3f %8.3f %7.3f" % (os.environ["B"], f["clients"], f["ok"],
      f["busy_429"], f["other_errors"], f["requests_per_s"], f["completion_tokens_per_s"] or 0,
      f["p50_s"] or 0, f["p95_s"] or 0, f["busy_share"]))'
  done
  curl -s "$URL/metrics" | grep -E '^ove_(batches|batch_rows|generated_tokens|cancelled)_total' || true
  kill $PID; wait $PID 2>/dev/null || true
  PID=
done
