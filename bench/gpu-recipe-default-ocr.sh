#!/usr/bin/env bash
# The default OCR recipe's larger run, on a lent GPU machine (one call of the `device` tool):
# more images and steps, 4x the batch, every stage packed (trainer/configs/default-ocr/gpu/), trained with
# `ove-train train --device cuda`. Export and evaluation happen back on the build machine
# (the stage-2 checkpoint comes back under $OUT).
#
#   bench/gpu-recipe-default-ocr.sh
#
# Expects prebuilt binaries in .devbin/ (ove-train, ove-docgen: `cargo build --release`),
# the training fonts in .devfonts/ (copies of /usr/share/fonts/truetype/{dejavu,liberation2};
# the GPU machine has no Debian font packages) and python3 with a CUDA PyTorch 2.11 (libtorch
# is taken from it). Sizes are the recipe's environment variables (GLYPHS, STEPS_1_5, ...).
# Everything is bounded by TIME_LIMIT seconds; whatever was trained comes back, as
# $OUT/result.tar.aa, .ab, ... (cat them into one tar) and $OUT/log.
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
export BIN=.devbin DEVICE=${DEVICE:-cuda} STAGES=trainer/configs/default-ocr/gpu EVAL_FONTS=train
export GLYPHS=${GLYPHS:-200000} CROPS=${CROPS:-150000} DOCS_2=${DOCS_2:-10000}
export STEPS_1=${STEPS_1:-100} STEPS_GLYPHS=${STEPS_GLYPHS:-1000} STEPS_1_5=${STEPS_1_5:-2500}
export STEPS_2=${STEPS_2:-600} SAVE_EVERY=${SAVE_EVERY:-250}
echo "GLYPHS=$GLYPHS CROPS=$CROPS DOCS_2=$DOCS_2 STEPS_1=$STEPS_1 STEPS_GLYPHS=$STEPS_GLYPHS" \
  "STEPS_1_5=$STEPS_1_5 STEPS_2=$STEPS_2 DEVICE=$DEVICE" | tee -a "$LOG"
timeout "$TIME_LIMIT" scripts/recipe-default-ocr --train-only --out "$RUN" 2>&1 | tee -a "$LOG"
echo "recipe exit ${PIPESTATUS[0]}" | tee -a "$LOG"
# Bring back the tokenizer, the logs and metrics of every stage, and the newest weights.
cp "$RUN/tokenizer.json" "$OUT/" 2>/dev/null
for s in stage1 stage1_5-glyphs stage1_5 stage2; do
  [ -d "$RUN/ckpt/$s" ] || continue
  mkdir -p "$OUT/$s"
  cp "$RUN/ckpt/$s.log" "$OUT/$s.log" 2>/dev/null
  cp "$RUN/ckpt/$s/metrics.jsonl" "$OUT/$s/" 2>/dev/null
done
if [ -f "$RUN/ckpt/stage2/model.safetensors" ]; then
  cp -r "$RUN/ckpt/stage2" "$OUT/final"
  rm -rf "$OUT/final/checkpoints"
else
  # Cut short: the newest resumable checkpoint of the last stage that has one.
  for s in stage2 stage1_5 stage1_5-glyphs stage1; do
    latest="$RUN/ckpt/$s/checkpoints/latest"
    if [ -f "$latest" ]; then
      d="$RUN/ckpt/$s/checkpoints/$(cat "$latest")"
      [ -d "$d" ] || d="$(cat "$latest")"
      mkdir -p "$OUT/partial-$s"
      cp "$d"/*.json "$d"/*.safetensors "$OUT/partial-$s/" 2>/dev/null
      rm -f "$OUT/partial-$s/optimizer.safetensors"
      break
    fi
  done
fi
# The device tool brings back at most 8 files of 16 MiB: one tar in 15 MiB pieces, plus the log.
ls -la "$OUT" "$OUT"/* | tee -a "$LOG"
(cd "$OUT" && tar cf - --exclude=log --exclude='result.tar.*' . | split -b 15m - result.tar.)
find "$OUT" -mindepth 1 -maxdepth 1 ! -name log ! -name 'result.tar.*' -exec rm -rf {} +
ls -la "$OUT"
