#!/usr/bin/env bash
# The default OCR recipe's larger run, on a lent GPU machine (one call of the `device` tool):
# more line images and pages, more CTC steps at 4x the batch, trained with
# `ove-train ctc --device cuda`. Export and evaluation happen back on the build machine
# (the CTC checkpoint comes back under $OUT).
#
#   bench/gpu-recipe-default-ocr.sh
#
# Expects prebuilt binaries in .devbin/ (ove-train, ove-docgen: `cargo build --release`),
# the training fonts in .devfonts/ (each catalogue font's folder, dejavu/, liberation2/,
# inter/, ..., copied flat from /usr/share/fonts: the GPU machine has no Debian font
# packages; OVE_FONT_ROOT points docgen at it) and python3 with a CUDA PyTorch
# 2.11 (libtorch is taken from it). Sizes are the recipe's environment variables (LINES,
# PAGES, STEPS_CTC, BATCH_CTC). Everything is bounded by TIME_LIMIT seconds; whatever was
# trained comes back, as $OUT/result.tar.aa, .ab, ... (cat them into one tar) and $OUT/log.
set -u
cd "$(dirname "$0")/.."
: "${OUT:=/tmp/gpu-recipe}" "${TIME_LIMIT:=500}"
mkdir -p "$OUT"
LOG="$OUT/log"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OVE_FONT_ROOT="$PWD/.devfonts"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
} 2>&1 | tee "$LOG"
RUN=/tmp/gpu-recipe-run
export BIN=.devbin DEVICE=${DEVICE:-cuda} EVAL_FONTS=train
export LINES=${LINES:-40000} PAGES=${PAGES:-4000} STEPS_CTC=${STEPS_CTC:-4000}
export BATCH_CTC=${BATCH_CTC:-128} SAVE_EVERY=${SAVE_EVERY:-500}
echo "LINES=$LINES PAGES=$PAGES STEPS_CTC=$STEPS_CTC BATCH_CTC=$BATCH_CTC DEVICE=$DEVICE" | tee -a "$LOG"
timeout "$TIME_LIMIT" scripts/recipe-default-ocr --train-only --out "$RUN" 2>&1 | tee -a "$LOG"
echo "recipe exit ${PIPESTATUS[0]}" | tee -a "$LOG"
# Bring back the tokenizer, the log and metrics, and the newest weights with the CTC head.
cp "$RUN/tokenizer.json" "$OUT/" 2>/dev/null
cp "$RUN/ckpt/ctc.log" "$RUN/ckpt/ctc/metrics.jsonl" "$RUN/ckpt/ctc/eval.jsonl" "$OUT/" 2>/dev/null
if [ -f "$RUN/ckpt/ctc/model.safetensors" ]; then
  mkdir -p "$OUT/final"
  cp "$RUN/ckpt/ctc"/*.json "$RUN/ckpt/ctc"/*.safetensors "$OUT/final/"
fi
# The device tool brings back at most 8 files of 16 MiB: one tar in 15 MiB pieces, plus the log.
ls -la "$OUT" "$OUT"/* | tee -a "$LOG"
(cd "$OUT" && tar cf - --exclude=log --exclude='result.tar.*' . | split -b 15m - result.tar.)
find "$OUT" -mindepth 1 -maxdepth 1 ! -name log ! -name 'result.tar.*' -exec rm -rf {} +
ls -la "$OUT"
