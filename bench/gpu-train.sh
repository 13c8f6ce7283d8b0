#!/usr/bin/env bash
# Training throughput on a GPU: `ove-train bench-train` (libtorch through tch) next to a
# PyTorch eager step of the same shape (bench/gpu_train_reference.py), and the packed eager
# anchor (../shared/bench/pt_train_anchor.py: fused AdamW, varlen flash attention over 11
# packed samples, 1.7B and 4B shapes), in the same call.
#
#   bench/gpu-train.sh [OVE_TRAIN_BINARY] [extra args for both, e.g. --preset qwen3-1.7b --seq-len 8192]
#
# Needs python3 with a CUDA build of PyTorch (libtorch is taken from it). The binary defaults
# to .devbin/ove-train (a release build copied there), else target/release/ove-train.
# Writes everything to ${OUT:-/tmp}/log and prints the two RESULT lines side by side.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-}
if [ -z "$BIN" ] || [ "${BIN#--}" != "$BIN" ]; then
  BIN=.devbin/ove-train; [ -x "$BIN" ] || BIN=target/release/ove-train
else
  shift
fi
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--preset qwen3-1.7b --seq-len 8192 --warmup 3 --steps 10)
LOGDIR=${OUT:-/tmp}; LOG=$LOGDIR/log; : > "$LOG"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch;print("torch", torch.__version__, torch.cuda.get_device_name(0))'
  echo "== ove-train ($BIN) ${ARGS[*]}"
} 2>&1 | tee -a "$LOG"
timeout ${OVE_TIMEOUT:-300} "$BIN" bench-train --device cuda "${ARGS[@]}" 2>&1 | tee -a "$LOG"
echo "ove-train exit ${PIPESTATUS[0]}" | tee -a "$LOG"
echo "== pytorch eager ${ARGS[*]}" | tee -a "$LOG"
timeout ${PY_TIMEOUT:-300} python3 bench/gpu_train_reference.py --device cuda "${ARGS[@]}" 2>&1 | tee -a "$LOG"
echo "pytorch exit ${PIPESTATUS[0]}" | tee -a "$LOG"
ANCHOR=../shared/bench/pt_train_anchor.py
if [ -f "$ANCHOR" ]; then
  echo "== pytorch packed eager anchor ($ANCHOR)" | tee -a "$LOG"
  timeout ${ANCHOR_TIMEOUT:-300} python3 "$ANCHOR" 2>&1 | tee -a "$LOG"
  echo "anchor exit ${PIPESTATUS[0]}" | tee -a "$LOG"
fi
echo "== side by side (device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))" | tee -a "$LOG"
grep -E '^(RESULT|PHASES|PT_EAGER)' "$LOG" | sed -E 's/^(RESULT|PHASES|PT_EAGER) //' > "$LOG.summary"
(column -t "$LOG.summary" 2>/dev/null || cat "$LOG.summary") | tee -a "$LOG"
