#!/usr/bin/env bash
# The NCCL process group on one GPU (one GPU holds one NCCL rank, so world size 1): a few
# steps of the default-ocr architecture (fresh weights, random text samples, f32) trained
# by one plain process on cuda, then as rank 0 of an NCCL group (plain env launch), with
# --zero1, and under torchrun --nproc-per-node 1; the losses side by side must agree
# (the same code path as Gloo's tests: all-reduce of the target count, the loss and the
# gradient buckets, started from the gradient hooks during the backward; ZeRO-1's
# reduce-scatter, norm all-reduce and all-gather).
#
#   bench/gpu-nccl-check.sh [OVE_TRAIN_BINARY]
#
# The binary must be built with NCCL: `scripts/setup-torchrun` (CUDA and NCCL headers),
# then `cargo build --release -p ove-train --features nccl`, copied to .devbin/ove-train.
# Needs python3 with a CUDA build of PyTorch (its torch/lib is the libtorch the binary
# runs on, and its torchrun the launcher; PYTHON names another). Everything goes to
# ${OUT:-/tmp}/nccl.log. DEVICE=cpu runs the same steps over Gloo (a dry run of the script
# on a machine without a GPU: PYTHON=.venv/bin/python DEVICE=cpu bench/gpu-nccl-check.sh).
set -u
cd "$(dirname "$0")/.."
BIN=${1:-}
[ -n "$BIN" ] || { BIN=.devbin/ove-train; [ -x "$BIN" ] || BIN=target/release/ove-train; }
BIN=$(realpath "$BIN")
mkdir -p "${OUT:-/tmp}"; LOG=${OUT:-/tmp}/nccl.log; : > "$LOG"
PY=${PYTHON:-python3}
TORCH_LIB=$("$PY" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
W=$(mktemp -d)
"$BIN" init --config trainer/configs/default-ocr/config.json \
  --tokenizer models/default-ocr/tokenizer.json --out "$W/ckpt" --seed 3 >>"$LOG" 2>&1
python3 - "$W" <<'PY'
import json, random, sys
w = sys.argv[1]; random.seed(5)
vocab = json.load(open(f"{w}/ckpt/config.json"))["text_config"]["vocab_size"]
with open(f"{w}/data.jsonl", "w") as f:
    for i in range(32):
        p = [random.randrange(64, vocab) for _ in range(20 + i)]
        r = [random.randrange(64, vocab) for _ in range(10 + i % 7)]
        f.write(json.dumps({"prompt_ids": p, "response_ids": r}) + "\n")
open(f"{w}/stage.toml", "w").write(
    'name = "nccl"\ntrainable = ["all"]\n[optimizer]\nlr = 2e-3\nmin_lr = 1e-5\n'
    'warmup_ratio = 0.2\nweight_decay = 0.01\n[data]\nglobal_batch_size = 4\n')
PY
ARGS=(train --checkpoint "$W/ckpt" --stage "$W/stage.toml" --data "$W/data.jsonl" --steps 4
  --seed 5 --device "${DEVICE:-cuda}" --precision f32 --dist-timeout-s 60)
last_losses() { python3 -c "import json,sys;print(' '.join(f\"{json.loads(l)['loss']:.6f}\" for l in open(sys.argv[1])))" "$1/metrics.jsonl" 2>/dev/null || echo "no metrics"; }
run() { # name, env..., -- extra args
  local name=$1; shift
  echo "== $name" | tee -a "$LOG"
  timeout 180 "$@" >>"$LOG" 2>&1; echo "$name exit $?" | tee -a "$LOG"
}
run "one process" "$BIN" "${ARGS[@]}" --out "$W/one"
ENV=(env WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511)
# 1 MiB buckets: the gradient hooks start most of them on the autograd engine's CUDA
# thread while the backward runs (buckets_in_backward in metrics.jsonl).
run "NCCL world 1" "${ENV[@]}" "$BIN" "${ARGS[@]}" --out "$W/nccl" --bucket-mib 1
run "NCCL world 1, ZeRO-1" "${ENV[@]}" MASTER_PORT=29512 "$BIN" "${ARGS[@]}" --out "$W/zero1" --zero1
run "torchrun, NCCL" "$PY" -m torch.distributed.run --nproc-per-node 1 --master-port 29513 \
  --no-python "$BIN" "${ARGS[@]}" --out "$W/torchrun"
grep -h "joined the process group" "$LOG" | tail -3
echo "== losses (4 steps)" | tee -a "$LOG"
for r in one nccl zero1 torchrun; do printf '%-9s %s\n' "$r" "$(last_losses "$W/$r")" | tee -a "$LOG"; done
for r in nccl zero1; do echo "$r: $(cat "$W/$r/distributed.json" 2>/dev/null | tr -d '\n ')" | tee -a "$LOG"; done
echo "nccl buckets started in the backward / all, by step: $(python3 -c "import json,sys;print(' '.join(f\"{m.get('buckets_in_backward')}/{m.get('buckets')}\" for m in map(json.loads, open(sys.argv[1]))))" "$W/nccl/metrics.jsonl" 2>/dev/null)" | tee -a "$LOG"
