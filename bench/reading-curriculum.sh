#!/usr/bin/env bash
# Where reading starts: the default-ocr model (trainer/configs/default-ocr/config.json, 6.0M
# parameters, a 320-token byte-level BPE) trained from random weights in two stages, then
# evaluated through the runtime (int4 and f32 bundles) next to Tesseract on the same images.
#   1. glyphs: 60000 pictures of 1-3 random characters (train fonts, clean), batch 64,
#      lr 5e-4 constant, 1000 steps (about 20 min on 2 cores)
#   2. codes, words and lines (36000, mixed degradation), batch 32 packed to 1024 tokens,
#      lr 5e-4 -> 5e-5, 3200 steps (about 47 min on 2 cores)
# Both stages train caption-style records (the picture, then its text) with the system prompt
# cut (most of a small crop's tokens), so the evaluation asks with an empty prompt
# (`ove eval --prompt ""`). Held-out sets: Noto fonts (never trained on) with mixed
# degradation, seed 1001; and the training fonts, clean, seed 23. CER per kind is printed.
# This is the measurement behind "Where reading starts" in models/default-ocr/README.md.
# scripts/recipe-default-ocr runs the same curriculum for the committed model, with the
# runtime's chat template and OCR instructions, then pages and instructions in stage 2.
#
#   bench/reading-curriculum.sh            the full run (about 70 min on 2 cores)
#   bench/reading-curriculum.sh --quick    a few images and steps: checks the pipeline only
#   bench/reading-curriculum.sh --out DIR  work folder (default target/reading-curriculum[-quick])
#   BIN=DIR                                prebuilt ove-train / ove-docgen / ove (no cargo)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
QUICK=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "reading-curriculum: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  GLYPHS=256 MIXED=192 STEPS_G=4 STEPS_M=4 EVAL_N=12
  OUT="${OUT:-$ROOT/target/reading-curriculum-quick}"
else
  GLYPHS=60000 MIXED=36000 STEPS_G=1000 STEPS_M=3200 EVAL_N=60
  OUT="${OUT:-$ROOT/target/reading-curriculum}"
fi
cd "$ROOT"
if [ -n "${BIN:-}" ]; then
  BIN="$(cd "$BIN" && pwd)"
else
  [ -f .venv/ove-env.sh ] || scripts/setup
  . .venv/ove-env.sh
  cargo build --quiet --release -p ove-train -p ove -p ove-docgen
  BIN="$ROOT/target/release"
fi
command -v tesseract >/dev/null || { echo "reading-curriculum: tesseract is missing (scripts/setup installs it)" >&2; exit 1; }
T0=$(date +%s)
stamp() { echo "[reading +$(( $(date +%s) - T0 ))s] $*"; }
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"

stamp "docgen: $GLYPHS glyphs, $MIXED codes/words/lines, held-out sets"
gen() { "$BIN/ove-docgen" generate --out "$1" --count "$2" --seed "$3" --fonts "$4" \
  --degradation "$5" --kinds "$6" "${@:7}" >/dev/null; }
gen glyph/train "$GLYPHS" 11 train clean glyph
gen glyph/eval 200 12 train clean glyph
gen mixed/train "$MIXED" 21 train mixed code,word,line,glyph,line,word
gen mixed/eval 150 22 heldout mixed word,line,code
gen heldout "$EVAL_N" 1001 heldout mixed word,line,code --no-manifests
gen trainfonts "$(( EVAL_N * 3 / 4 ))" 23 train clean word,line,code --no-manifests

stamp "tokenizer (320) and random init"
"$BIN/ove-train" tokenizer --data mixed/train mixed/train/stage2.jsonl --vocab-size 320 \
  --out tokenizer.json >/dev/null
"$BIN/ove-train" init --config "$ROOT/trainer/configs/default-ocr/config.json" \
  --tokenizer tokenizer.json --out init --seed 1 >/dev/null
for set in glyph/train glyph/eval mixed/train mixed/eval; do
  "$BIN/ove-train" prepare --data "$set/captions.jsonl" --tokenizer tokenizer.json \
    --config init --out "$set.tokens.jsonl" >/dev/null
  # Cut the system turn: everything up to the first <|im_end|> and its newline.
  python3 - "$set.tokens.jsonl" init/config.json <<'EOF'
import json, sys
path, cfg = sys.argv[1], json.load(open(sys.argv[2]))
end = cfg["text_config"].get("eos_token_id", 2)
rows = [json.loads(l) for l in open(path)]
with open(path, "w") as f:
    for r in rows:
        p = r["prompt_ids"]
        cut = p.index(end) + 2
        r["prompt_ids"] = p[cut:]
        f.write(json.dumps(r) + "\n")
EOF
done

stage() { # NAME BATCH PACK MIN_LR WARMUP
  cat >"$1.toml" <<EOF
name = "$1"
description = "reading curriculum: $1"
trainable = ["all"]
[optimizer]
lr = 5e-4
min_lr = $4
warmup_ratio = $5
weight_decay = 0.05
grad_clip = 1.0
[data]
global_batch_size = $2
$3
[schedule]
eval_every = 250
save_every = 500
EOF
}
stage glyphs 64 "" 5e-4 0.03
stage mixed 32 "pack_length = 1024" 5e-5 0.02
train() { # NAME FROM DATA STEPS
  stamp "train $1: $4 steps"
  "$BIN/ove-train" train --checkpoint "$2" --stage "$1.toml" --data "$3/train.tokens.jsonl" \
    --eval-data "$3/eval.tokens.jsonl" --steps "$4" --seed 1 --out "ckpt/$1" 2>"$1.log"
  python3 -c "import json,sys; [print('  step %d: held-out loss %.3f' % (e['step'], e['eval_loss'])) for e in map(json.loads, open(sys.argv[1]))]" "ckpt/$1/eval.jsonl"
}
train glyphs init glyph "$STEPS_G"
train mixed ckpt/glyphs mixed "$STEPS_M"

stamp "export (int4, f32) and evaluate"
"$BIN/ove" export --checkpoint ckpt/mixed --out bundle-int4 --int4 --force \
  >/dev/null 2>>export.log || { tail export.log >&2; exit 1; }
"$BIN/ove" export --checkpoint ckpt/mixed --out bundle-f32 --force \
  >/dev/null 2>>export.log || { tail export.log >&2; exit 1; }
per_kind() { # LABEL  (ove eval --json on stdin)
  python3 -c '
import collections, json, sys
j = json.load(sys.stdin); e, r, x, n = (collections.Counter() for _ in range(4))
for im in j["images"]:
    k = im["name"].split("-")[0]; e[k] += im["char_edits"]; r[k] += im["ref_chars"]
    x[k] += im["lines_matched"]; n[k] += 1
t = j["total"]
print("%-26s CER %6.2f%%  WER %6.2f%%  " % (sys.argv[1], 100 * t["cer"], 100 * t["wer"]) +
      "  ".join("%s %.2f%% (%d/%d exact)" % (k, 100 * e[k] / r[k], x[k], n[k]) for k in sorted(e)))
' "$1"
}
for set in heldout trainfonts; do
  for b in int4 f32; do
    "$BIN/ove" eval --bundle "bundle-$b" --data "$set" --prompt "" --max-new-tokens 96 --json \
      2>/dev/null | per_kind "$set $b"
  done
  mkdir -p "tesseract/$set"
  for f in "$set"/*.png; do
    OMP_THREAD_LIMIT=1 tesseract "$f" stdout --psm 6 -l eng 2>/dev/null \
      >"tesseract/$set/$(basename "$f" .png).pred.txt"
  done
  echo "$set Tesseract --psm 6: $("$BIN/ove-docgen" score --data "$set" --predictions "tesseract/$set" | tail -1)"
done
stamp "done"
