#!/usr/bin/env bash
# OCR evaluation, in one run: the ove model (int4 and f32), Tesseract 5 and RapidOCR on four
# held-out sets that ove-docgen generates with held-out fonts (`--fonts heldout`: Noto, never
# used in training) and a seed no training run uses (7070):
#   lines-clean      single text lines, clean            (docgen --kinds line)
#   lines-degraded   single text lines, degraded (0.7)   (docgen --kinds line --degradation degraded)
#   paragraphs       paragraphs of 3-5 lines, clean      (docgen --kinds paragraph, the first N
#                    with 3-5 text lines, title included, out of 8N generated)
#   receipts         receipts, clean                     (docgen --kinds receipt)
# Readers, all on ONE thread:
#   ove int4    the bundle (--bundle), `ove eval --backend ort --threads 1 --layout auto` (the
#               bundle's own reading mode; the default reading: doubtful lines read
#               again at 6 more text heights and voted); per-image text from
#               --save-predictions
#   ove int4, 1 reading a line   the same with --read-scales 1 (faster, less exact)
#   ove int4, all voted          the same with --reread-below 1 (every line read at 7
#               heights and voted: slower, a little more exact)
#   ove f32     --f32-bundle, else exported here from --checkpoint with `ove export` (no
#               --int4); "not available" when neither exists
#   Tesseract   Debian's tesseract-ocr, -l eng, --psm 7 on single lines and --psm 6 on
#               paragraphs and receipts, OMP_THREAD_LIMIT=1
#   RapidOCR    rapidocr 3.10.0 on onnxruntime 1.32.0, its PP-OCRv6 small det + rec models
#               (in the wheel; the 180-degree classifier off: it turned upright lines over,
#               3 of 20 paragraphs read as garbage), intra_op_num_threads = inter_op_num_threads = 1,
#               installed into .venv by scripts/setup-peers when missing. Its boxes are joined
#               into lines in reading order (top to bottom, left to right; a box joins a line
#               it overlaps vertically by half its height), lines by newlines (one line, joined
#               by spaces, on the single-line sets). Its detector sees the image with the short
#               side scaled up to --rapidocr-det-side (default 160) pixels: RapidOCR's own
#               default, 736, takes about 3.5 s a single line on one thread (a 60 px line
#               becomes 736 x 4000+) and read no better on a 12-image probe of each kind
#               (seed 7171, exact at 736 / 160: lines 10/12 / 12/12, paragraphs 11/12 both,
#               receipts 11/12 both; s/image 3.5 / 0.14, 3.0 / 0.50, 1.1 / 0.56).
# Printed: one markdown table, CER, WER, exact share and seconds per image per set and reader,
# then the layout figures (`ove bench --layout` on a 1000x1400 page tiled from a generated
# paragraph page; line precision/recall from the layout_score test).
#
#   bench/ocr-eval.sh [--count N] [--bundle DIR] [--f32-bundle DIR] [--checkpoint DIR]
#                     [--seed S] [--sets lines-clean,lines-degraded,paragraphs,receipts]
#                     [--out DIR] [--rapidocr-det-side PX] [--no-layout-score] [--no-build]
#
# Defaults: 60 images a set, --bundle models/default-ocr, --checkpoint
# target/recipe-default-ocr/ckpt/ctc (scripts/recipe-default-ocr makes it; exported with the
# int4 bundle's reading flags), --seed 7070,
# all four sets, --out target/bench-ocr (wiped first). Builds ove and ove-docgen (release)
# first unless --no-build. About 15 minutes for N=60 on 2 cores. --no-layout-score skips the
# layout_score test (a debug build of its test binary, when that is not up to date).
#
# Scoring is the same for every reader (bench/ocr_eval.py): reference and prediction both have
# each line's whitespace runs collapsed to one space, lines stripped, blank lines dropped; then
# `ove eval --predictions` scores them with ove-core's metrics, as `ove eval` does (CER:
# character Levenshtein over the whole text, newlines included; WER: Levenshtein over
# whitespace-split words; totals are edits summed over the set / reference length summed).
# Exact: the share of images whose whole text equals the reference after all whitespace runs,
# newlines included, are collapsed to one space and the ends stripped.
# Seconds per image: wall time of each reader's call, the mean over the set. ove: one process
# over the set, its per-image times from `ove eval --json` (model load excluded). RapidOCR:
# one Python process, per call, after one untimed call (model load excluded). Tesseract: one
# process per image, so its time includes its start and model load (about what running it
# costs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
COUNT=60
BUNDLE=models/default-ocr
F32_BUNDLE=""
CKPT=target/recipe-default-ocr/ckpt/ctc
SEED=7070
SETS=lines-clean,lines-degraded,paragraphs,receipts
W=target/bench-ocr
LAYOUT_SCORE=1
BUILD=1
DET_SIDE=160
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT="$2"; shift ;;
    --bundle) BUNDLE="$2"; shift ;;
    --f32-bundle) F32_BUNDLE="$2"; shift ;;
    --checkpoint) CKPT="$2"; shift ;;
    --seed) SEED="$2"; shift ;;
    --sets) SETS="$2"; shift ;;
    --out) W="$2"; shift ;;
    --rapidocr-det-side) DET_SIDE="$2"; shift ;;
    --no-layout-score) LAYOUT_SCORE=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "ocr-eval: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
log() { printf '\033[1mocr-eval:\033[0m %s\n' "$*" >&2; }
for s in ${SETS//,/ }; do
  case "$s" in lines-clean|lines-degraded|paragraphs|receipts) ;;
    *) echo "ocr-eval: unknown set $s (lines-clean, lines-degraded, paragraphs, receipts)" >&2; exit 2 ;;
  esac
done
command -v tesseract >/dev/null || { echo "ocr-eval: tesseract is missing (scripts/setup installs tesseract-ocr)" >&2; exit 1; }
[ -f "$BUNDLE/manifest.json" ] || { echo "ocr-eval: no bundle at $BUNDLE" >&2; exit 1; }
[ -f .venv/ove-env.sh ] || { echo "ocr-eval: no .venv/ove-env.sh (run scripts/setup)" >&2; exit 1; }
. .venv/ove-env.sh
.venv/bin/python -c 'import rapidocr' 2>/dev/null || scripts/setup-peers
if [ "$BUILD" = 1 ]; then
  log "building ove and ove-docgen (release)"
  cargo build --quiet --release -p ove -p ove-docgen
fi
OVE="$ROOT/target/release/ove"
DOCGEN="$ROOT/target/release/ove-docgen"
[ -x "$OVE" ] && [ -x "$DOCGEN" ] || { echo "ocr-eval: no release build of ove and ove-docgen (run without --no-build)" >&2; exit 1; }
HELP="$ROOT/bench/ocr_eval.py"
rm -rf "$W"; mkdir -p "$W"

# --- the f32 bundle -------------------------------------------------------------------------
READERS=ove-int4,ove-int4-1,ove-int4-all,ove-f32,tesseract,rapidocr
if [ -z "$F32_BUNDLE" ] && [ -f "$CKPT/config.json" ]; then
  log "exporting the f32 bundle from $CKPT"
  F32_BUNDLE="$W/f32-bundle"
  # The int4 bundle's way of reading (layout, line height, CTC head and reader), in f32.
  READ_FLAGS=$(python3 - "$BUNDLE/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
r, g = m.get("reading", {}), m.get("graphs", {})
flags = ["--reads", r.get("layout", "page")]
if r.get("line_height"):
    flags += ["--line-height", str(r["line_height"])]
if g.get("ctc_head"):
    flags += ["--ctc-head"]
if r.get("layout") == "lines":
    flags += ["--line-reader", r.get("reader", "decoder")]
print(" ".join(flags))
PY
)
  # shellcheck disable=SC2086
  "$OVE" export --checkpoint "$CKPT" --out "$F32_BUNDLE" $READ_FLAGS >/dev/null
fi
if [ -z "$F32_BUNDLE" ]; then
  log "no --f32-bundle and no checkpoint at $CKPT: ove f32 is not available"
elif [ ! -f "$F32_BUNDLE/manifest.json" ]; then
  log "no bundle at $F32_BUNDLE: ove f32 is not available"; F32_BUNDLE=""
fi

# --- the held-out sets ------------------------------------------------------------------------
gen() { # gen OUT COUNT KIND DEGRADATION
  "$DOCGEN" generate --out "$1" --count "$2" --seed "$SEED" --fonts heldout --kinds "$3" \
    --degradation "$4" --no-manifests 2>/dev/null
}
for s in ${SETS//,/ }; do
  d="$W/$s/data"
  case "$s" in
    lines-clean) gen "$d" "$COUNT" line clean ;;
    lines-degraded) gen "$d" "$COUNT" line degraded ;;
    paragraphs) gen "$W/$s/pool" $((8 * COUNT)) paragraph clean
                python3 "$HELP" pick "$W/$s/pool" "$d" "$COUNT" 3 5; rm -rf "$W/$s/pool" ;;
    receipts) gen "$d" "$COUNT" receipt clean ;;
  esac
  log "$s: $(ls "$d"/*.png | wc -l) images"
done

# --- the readers --------------------------------------------------------------------------------
ove_read() { # ove_read BUNDLE SET READER [EVAL FLAGS...]
  local out="$W/$2/$3"
  mkdir -p "$out"
  "$OVE" eval --bundle "$1" --data "$W/$2/data" --backend ort --threads 1 --layout auto \
    --save-predictions "$out" --json "${@:4}" > "$out/eval.json" 2> "$out/eval.err" \
    || log "$2 $3: ove eval reported failed images (see $out/eval.err)"
  if [ -s "$out/eval.json" ]; then
    python3 "$HELP" ove-times "$out/eval.json" "$out"
  else
    log "$2 $3: ove eval gave no result"; cat "$out/eval.err" >&2
  fi
}
for s in ${SETS//,/ }; do
  psm=6; kind=multi
  case "$s" in lines-*) psm=7; kind=single ;; esac
  log "$s: ove int4"; ove_read "$BUNDLE" "$s" ove-int4
  log "$s: ove int4, 1 reading a line"; ove_read "$BUNDLE" "$s" ove-int4-1 --read-scales 1
  log "$s: ove int4, all voted"; ove_read "$BUNDLE" "$s" ove-int4-all --reread-below 1
  if [ -n "$F32_BUNDLE" ]; then log "$s: ove f32"; ove_read "$F32_BUNDLE" "$s" ove-f32; fi
  log "$s: Tesseract --psm $psm"; python3 "$HELP" tesseract "$W/$s/data" "$W/$s/tesseract" "$psm"
  log "$s: RapidOCR"; .venv/bin/python "$HELP" rapidocr "$W/$s/data" "$W/$s/rapidocr" "$kind" "$DET_SIDE"
done

# --- layout figures -------------------------------------------------------------------------------
gen "$W/layout-page" 1 paragraph clean
PAGE=$(ls "$W"/layout-page/*.png | head -n1)
LAYOUT=$("$OVE" bench --layout "$PAGE" --layout-tile 1000x1400 2>/dev/null || echo "layout bench failed")
SCORE=""
if [ "$LAYOUT_SCORE" = 1 ]; then
  log "layout score: cargo test --workspace --test layout_score"
  if cargo test --quiet --workspace --test layout_score -- --nocapture > "$W/layout_score.txt" 2>&1; then
    # libtest prints `test NAME ... ` before the test's own output, on the same line.
    SCORE=$(sed -e 's/^test .* \.\.\. //' "$W/layout_score.txt" |
      grep -E '^(set  |(paragraph|receipt|form|table)( degraded)? )' || true)
  else
    SCORE="(cargo test --test layout_score failed: see $W/layout_score.txt)"
  fi
fi

# --- the table ---------------------------------------------------------------------------------------
TESS=$(tesseract --version 2>&1 | head -n1)
echo
echo "$COUNT held-out images a set (ove-docgen --fonts heldout --seed $SEED), one thread;"
echo "ove int4: $BUNDLE, ove f32: ${F32_BUNDLE:-not available}; $TESS; RapidOCR 3.10.0 (onnxruntime 1.32.0, det short side $DET_SIDE px)"
echo
python3 "$HELP" table "$W" "$OVE" "$SETS" "$READERS"
echo
echo "Layout (one thread): $LAYOUT (a generated paragraph page tiled to 1000x1400)"
if [ -n "$SCORE" ]; then
  echo "Layout lines on held-out pages (layout_score test: precision/recall at IoU 0.5, reading order):"
  echo '```'
  echo "$SCORE"
  echo '```'
fi
