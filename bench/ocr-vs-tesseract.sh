#!/usr/bin/env bash
# The default OCR model next to Tesseract, in one run, on held-out generated images: a clean
# and a degraded set (seed and fonts never seen in training: Noto is held out), each read by
#   - the model in f32 (exported here from the recipe's stage-2 checkpoint),
#   - the model in int4 (the committed bundle, models/default-ocr, or --bundle),
#   - Tesseract 5 (Debian's tesseract-ocr, --psm 6: one uniform block of text).
# Prints CER, WER, exact lines and seconds per image for each, as one table.
#
#   bench/ocr-vs-tesseract.sh [--checkpoint DIR] [--bundle DIR] [--count N] [--backend B]
#                             [--kinds K,K...]
#
# Defaults: --checkpoint target/recipe-default-ocr/ckpt/stage2 (scripts/recipe-default-ocr
# makes it), --bundle models/default-ocr, --count 100 images a set, --backend ort, --kinds:
# ove-docgen's default (pages: paragraphs, receipts, forms, tables); `--kinds word,line,code`
# compares on single words, lines and codes, which is what the default model reads.
# Everything runs with the same thread count (THREADS, default: all cores; Tesseract's
# OMP_THREAD_LIMIT follows it). Work files go to target/bench-ocr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CKPT=target/recipe-default-ocr/ckpt/stage2
BUNDLE=models/default-ocr
COUNT=100
BACKEND=ort
KINDS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) CKPT="$2"; shift ;;
    --bundle) BUNDLE="$2"; shift ;;
    --count) COUNT="$2"; shift ;;
    --backend) BACKEND="$2"; shift ;;
    --kinds) KINDS="$2"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "ocr-vs-tesseract: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
: "${THREADS:=$(nproc)}"
export OMP_THREAD_LIMIT="$THREADS"
command -v tesseract >/dev/null || { echo "ocr-vs-tesseract: tesseract is missing (scripts/setup installs tesseract-ocr)" >&2; exit 1; }
[ -f "$CKPT/config.json" ] || { echo "ocr-vs-tesseract: no checkpoint at $CKPT (run scripts/recipe-default-ocr, or pass --checkpoint)" >&2; exit 1; }
[ -f "$BUNDLE/manifest.json" ] || { echo "ocr-vs-tesseract: no bundle at $BUNDLE" >&2; exit 1; }
. .venv/ove-env.sh
cargo build --quiet --release -p ove -p ove-docgen
BIN=target/release
W=target/bench-ocr
rm -rf "$W"; mkdir -p "$W"
"$BIN/ove" export --checkpoint "$CKPT" --out "$W/f32" >/dev/null
KIND_ARGS=()
if [ -n "$KINDS" ]; then KIND_ARGS=(--kinds "$KINDS"); fi
for set in clean degraded; do
  "$BIN/ove-docgen" generate --out "$W/$set" --count "$COUNT" --seed 2002 --fonts heldout \
    --degradation "$set" --no-manifests "${KIND_ARGS[@]}" >/dev/null
done

rows=()
for set in clean degraded; do
  for model in f32 int4; do
    b="$W/f32"; [ "$model" = int4 ] && b="$BUNDLE"
    "$BIN/ove" eval --bundle "$b" --data "$W/$set" --backend "$BACKEND" --threads "$THREADS" \
      --max-new-tokens 512 --json > "$W/$set.$model.json"
    rows+=("$set $model $W/$set.$model.json")
  done
  mkdir -p "$W/$set.tesseract"
  start=$(date +%s.%N)
  for img in "$W/$set"/*.png; do
    name=$(basename "$img" .png)
    tesseract "$img" stdout --psm 6 -l eng 2>/dev/null > "$W/$set.tesseract/$name.pred.txt"
  done
  end=$(date +%s.%N)
  "$BIN/ove" eval --data "$W/$set" --predictions "$W/$set.tesseract" --json > "$W/$set.tesseract.json"
  echo "$end - $start" | bc -l > "$W/$set.tesseract.seconds"
  rows+=("$set tesseract $W/$set.tesseract.json")
done

python3 - "$W" "$COUNT" "$THREADS" "$BACKEND" "${KINDS:-pages}" "${rows[@]}" <<'EOF'
import json, sys
w, count, threads, backend, kinds = sys.argv[1:6]
print(f"\n{count} held-out images a set ({kinds}; Noto fonts, seed 2002), {threads} threads, "
      f"model on {backend}")
print(f"{'set':<9} {'reader':<10} {'CER':>7} {'WER':>7} {'exact lines':>12} {'s/image':>8}")
for row in sys.argv[6:]:
    s, reader, path = row.split(" ")
    j = json.load(open(path))
    t = j["total"]
    n = len(j["images"])
    if reader == "tesseract":
        secs = float(open(f"{w}/{s}.tesseract.seconds").read()) / n
    else:
        secs = j["seconds"] / n
    print(f"{s:<9} {reader:<10} {100*t['cer']:6.2f}% {100*t['wer']:6.2f}% "
          f"{t['lines_matched']:>5}/{t['ref_lines']:<6} {secs:8.3f}")
EOF
