#!/usr/bin/env bash
# Training throughput on one GPU, in one device call: `ove-train bench-train` next to the
# packed PyTorch eager anchor (../shared/bench/pt_train_anchor.py: fused AdamW, varlen flash
# attention over 11 packed samples = 8192 tokens, Qwen3-1.7B and 4B shapes).
#
#   bench/gpu-train.sh [OVE_TRAIN_BINARY]
#
# 1. A correctness line: the same packed steps (2 layers of the 1.7B shape, bf16) through
#    the block-diagonal mask and through varlen flash attention; the losses of 3 steps print
#    side by side (same seed, so the same weights and tokens: the first compares the
#    forward, the later ones the backward's updates too; bf16 rounding apart).
# 2. ove-train at the anchor's packing (--sample-lens anchor), 1.7B and 4B, with the
#    kernels its training uses by default (varlen flash, rms_norm, chunked loss, fused
#    AdamW), phase times (forward, LM head + loss, backward, clip + AdamW); 1.7B again with
#    --fuse-projections (q/k/v and gate/up as one GEMM each); 1.7B with the
#    vision tower in the step (the released RICE-ViT shape, 4 document images of 812 px =
#    4 x 3364 patches, their 4 x 841 merged tokens opening the first four samples); 4B with
#    --checkpoint-layers (bf16 weights with f32 masters and moments are 16 B a parameter,
#    64 GB at 4B: without checkpointing the activations of 8192 tokens do not fit an H100).
# 3. The anchor itself (dense causal and packed varlen rows, both shapes).
# 4. The dense eager reference (bench/gpu_train_reference.py, one causal row), 1.7B; its
#    MFU counts 6 x parameters x tokens only, ove-train's and the anchor's add attention.
# The timeouts add up to under the device's 600 s a command; the log is under $OUT as it
# goes, so a run cut short still brings its lines back.
# Then the RESULT / PHASES / PT_EAGER lines side by side. Needs python3 with a CUDA build
# of PyTorch (its torch/lib is the libtorch the binary runs on). The binary defaults to
# .devbin/ove-train, else target/release/ove-train. Everything goes to ${OUT:-/tmp}/log.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-}
[ -n "$BIN" ] || { BIN=.devbin/ove-train; [ -x "$BIN" ] || BIN=target/release/ove-train; }
LOGDIR=${OUT:-/tmp}; LOG=$LOGDIR/log; : > "$LOG"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
run() { # label, timeout, command...
  local label=$1 limit=$2; shift 2
  echo "== $label: $*" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "$label exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch;print("torch", torch.__version__, torch.cuda.get_device_name(0))'
} 2>&1 | tee -a "$LOG"
B=("$BIN" bench-train --device cuda --phase-times)
CHECK=(--preset qwen3-1.7b --layers 2 --seq-len 8192 --sample-lens anchor --warmup 0 --steps 3 --seed 7)
run check-mask 40 "${B[@]}" "${CHECK[@]}" --packed-attention mask
run check-flash 40 "${B[@]}" "${CHECK[@]}" --packed-attention flash
run "ove qwen3-1.7b" 80 "${B[@]}" --preset qwen3-1.7b --seq-len 8192 --sample-lens anchor --warmup 3 --steps 8
run "ove qwen3-1.7b fused projections" 60 "${B[@]}" --preset qwen3-1.7b --seq-len 8192 --sample-lens anchor --warmup 3 --steps 6 --fuse-projections
run "ove qwen3-1.7b + vision" 80 "${B[@]}" --preset qwen3-1.7b --seq-len 8192 --sample-lens anchor --vision-images 4 --image-side 812 --warmup 2 --steps 5
run "ove qwen3-4b checkpointed" 100 "${B[@]}" --preset qwen3-4b --seq-len 8192 --sample-lens anchor --warmup 2 --steps 5 --checkpoint-layers
ANCHOR=../shared/bench/pt_train_anchor.py
[ -f "$ANCHOR" ] && run anchor 130 python3 "$ANCHOR"
run "pytorch eager dense" 50 python3 bench/gpu_train_reference.py --device cuda --preset qwen3-1.7b --seq-len 8192 --warmup 3 --steps 8
echo "== losses of 3 steps, mask vs flash (same weights and tokens):" | tee -a "$LOG"
grep -E "^== check|^LOSSES" "$LOG" | sed -E 's/^(== check[^:]*):.*/\1/' | tee -a "$LOG"
echo "== side by side (device: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))" | tee -a "$LOG"
grep -E '^(RESULT|PHASES|PT_EAGER)' "$LOG" | sed -E 's/^(RESULT|PHASES|PT_EAGER) //' > "$LOG.summary"
(column -t "$LOG.summary" 2>/dev/null || cat "$LOG.summary") | tee -a "$LOG"
