#!/usr/bin/env bash
# Data-parallel training on this machine's CPU, side by side in one run: one process,
# two ranks (Gloo, --nproc-per-node 2) with 25 MiB gradient buckets (DDP's default) and
# with 1 MiB ones, and two ranks with ZeRO-1, on the same global batch. Prints per run:
# mean step time, tokens/s, the step's split (forward, LM head and loss, backward,
# communication, optimizer; rank 0's, from metrics.jsonl), how many gradient buckets
# started their all-reduce during the backward, and the optimizer state one rank holds
# (OUT/distributed.json). The model is the default-ocr architecture
# (trainer/configs/default-ocr/config.json) at random weights, on text-only samples of
# random tokens (the step's cost does not depend on what the tokens say).
#
#   bench/cpu-data-parallel.sh [--steps N] [--batch B] [--len T] [--out DIR]
#   BIN=DIR   a prebuilt ove-train (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=12 BATCH=8 LEN=256 OUT=target/bench-data-parallel
while (($#)); do
  case "$1" in
    --steps) STEPS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --len) LEN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
. .venv/ove-env.sh
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p ove-train
  BIN=target/release
fi
rm -rf "$OUT" && mkdir -p "$OUT"
"$BIN/ove-train" init --config trainer/configs/default-ocr/config.json \
  --tokenizer models/default-ocr/tokenizer.json --out "$OUT/ckpt" >/dev/null
python3 - "$OUT" "$BATCH" "$LEN" <<'PY'
import json, random, sys
out, batch, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
with open(f"{out}/data.jsonl", "w") as f:
    for _ in range(batch * 4):
        n = rng.randint(length // 2, length)
        ids = [rng.randint(10, 300) for _ in range(n)]
        f.write(json.dumps({"prompt_ids": ids[: n // 2], "response_ids": ids[n // 2 :]}) + "\n")
with open(f"{out}/stage.toml", "w") as f:
    f.write(f'name = "bench"\ntrainable = ["all"]\n[optimizer]\nlr = 1e-4\nmin_lr = 1e-5\nwarmup_ratio = 0.1\n'
            f'[data]\nglobal_batch_size = {batch}\n')
PY
run() {
  local name=$1; shift
  OMP_NUM_THREADS=${THREADS:-1} "$BIN/ove-train" train --checkpoint "$OUT/ckpt" --stage "$OUT/stage.toml" \
    --data "$OUT/data.jsonl" --steps "$STEPS" --seed 1 --out "$OUT/$name" "$@" >/dev/null 2>"$OUT/$name.log" \
    || { echo "$name failed; see $OUT/$name.log" >&2; exit 1; }
}
run one-process
run dp2 --nproc-per-node 2
run dp2-1mib --nproc-per-node 2 --bucket-mib 1
run zero1-dp2 --nproc-per-node 2 --zero1
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"{'run':<12} {'step s':>7} {'tokens/s':>8} {'forward':>8} {'head+loss':>9} {'backward':>8} "
      f"{'comm':>7} {'optim':>7} {'buckets':>9} {'opt state/rank':>14} {'loss (last)':>11}")
for name in ["one-process", "dp2", "dp2-1mib", "zero1-dp2"]:
    rows = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")][2:]  # skip warmup
    mean = lambda f: sum(f(r) for r in rows) / len(rows)
    t = lambda k: mean(lambda r: r["times"].get(k, 0.0))
    mem = "-"
    p = f"{out}/{name}/distributed.json"
    if os.path.exists(p):
        m = json.load(open(p))["optimizer_memory"]
        mem = f"{m['state_bytes_per_rank'] / 2**20:.1f} MiB"
    b = rows[-1].get("buckets", 0)
    buckets = f"{rows[-1].get('buckets_in_backward', 0)}/{b}" if b else "-"
    print(f"{name:<12} {mean(lambda r: r['seconds']):7.3f} {mean(lambda r: r['tokens_per_s']):8.0f} "
          f"{t('forward'):8.3f} {t('head_loss'):9.3f} {t('backward'):8.3f} {t('communication'):7.4f} "
          f"{t('optimizer'):7.4f} {buckets:>9} {mem:>14} {rows[-1]['loss']:11.6f}")
print("times: rank 0's seconds a step; comm: collectives the step waited for (the part of the")
print("gradient all-reduce the backward did not hide); buckets: started during the backward / all")
m = json.load(open(f"{out}/dp2/distributed.json"))["optimizer_memory"]
print(f"unsharded optimizer state: {m['state_bytes_unsharded'] / 2**20:.1f} MiB ({m['trained_params']} trained parameters)")
PY
