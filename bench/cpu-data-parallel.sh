#!/usr/bin/env bash
# Data-parallel training on this machine's CPU, side by side in one run: one process,
# two ranks (Gloo, --nproc-per-node 2), and two ranks with ZeRO-1, on the same global
# batch. Prints per run: mean step time, tokens/s, the step's split (forward+backward,
# communication, optimizer; rank 0's, from metrics.jsonl) and the optimizer state one
# rank holds (OUT/distributed.json). The model is the default-ocr architecture
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
run zero1-dp2 --nproc-per-node 2 --zero1
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"{'run':<12} {'step s':>8} {'tokens/s':>9} {'fwd+bwd s':>10} {'comm s':>8} {'optim s':>8} {'opt state/rank':>15} {'loss (last)':>12}")
for name in ["one-process", "dp2", "zero1-dp2"]:
    rows = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")][2:]  # skip warmup
    mean = lambda f: sum(f(r) for r in rows) / len(rows)
    mem = "-"
    p = f"{out}/{name}/distributed.json"
    if os.path.exists(p):
        m = json.load(open(p))["optimizer_memory"]
        mem = f"{m['state_bytes_per_rank'] / 2**20:.1f} MiB"
    else:
        # One process: two f32 moments a trained parameter.
        pass
    print(f"{name:<12} {mean(lambda r: r['seconds']):8.3f} {mean(lambda r: r['tokens_per_s']):9.0f} "
          f"{mean(lambda r: r['times']['forward_backward']):10.3f} {mean(lambda r: r['times']['communication']):8.4f} "
          f"{mean(lambda r: r['times']['optimizer']):8.4f} {mem:>15} {rows[-1]['loss']:12.6f}")
m = json.load(open(f"{out}/dp2/distributed.json"))["optimizer_memory"]
print(f"unsharded optimizer state: {m['state_bytes_unsharded'] / 2**20:.1f} MiB ({m['trained_params']} trained parameters)")
PY
