#!/usr/bin/env bash
# CPU prefill/decode benchmark of `ove` next to llama.cpp and ONNX Runtime GenAI, on the
# same random weights.
#
#   bench/cpu-vs-peers.sh [--shape 0.6b|1.7b|4b] [--rounds 6] [--prompt 128] [--decode 64]
#                         [--threads 2] [--keep DIR] [--only ove,ove-tract,llama,genai]
#                         [--ove-variant NAME[:ort,tract]="OVE EXPORT FLAGS"]...
#                         [--profile release|debug] [--ove-bin FILE] [--load-threshold 15]
#
# What it does:
# 1. scripts/setup-cpu-peers (idempotent): llama.cpp built from the PyPI llama_cpp_python
#    sdist's vendor/llama.cpp, onnxruntime-genai 0.18.0 and its builder in .venv-peers.
# 2. builds `ove` and the fabricator (cargo --release by default; `--profile debug` is the
#    dev profile, whose dependencies (ONNX Runtime glue, tract) are optimised too).
# 3. fabricates one random bf16 checkpoint: a Qwen3 decoder of the --shape (tied
#    embeddings, vocab 151936) with a small vision tower (exporter/examples/fabricate_4b.rs
#    --vision small); the peers get the same decoder tensors byte for byte as a text-only
#    Qwen3ForCausalLM checkpoint (bench/cpu_peers/hf_checkpoint.py).
# 4. exports, each timed under /usr/bin/time -v (wall time, peak RSS):
#      ove       `ove export --int4` (MatMulNBits block 32, accuracy level 4, int4 lm_head)
#      llama     convert_hf_to_gguf.py --outtype bf16, then llama-quantize Q4_0 (its default
#                mix: the tied token embedding / output matrix is Q6_K)
#      genai     onnxruntime_genai.models.builder -p int4 -e cpu, extra options
#                accuracy_level=4 prune_lm_head=true (GENAI_EXTRA overrides)
#    and each --ove-variant: `ove export FLAGS` (a row per backend, default ort).
# 5. rounds: each round runs the read-bandwidth probe (bench/cpu_peers/stream.c) and every
#    row once, in an order that rotates by round. Before each item it waits while other
#    processes use more than --load-threshold % of the CPU (1 s /proc/stat samples, up to
#    ~2 min); after it, when others used more than that share of the CPU during the run
#    (all CPU time minus the run's own user+sys), the item is rerun (3 tries), then kept
#    and marked "(loaded)".
#      ove, ove-tract   `ove bench --backend ort|tract --threads T --text-tokens P
#                       --decode-tokens D` (one warm-up, then one prefill of P tokens and
#                       D decoder steps); ONNX Runtime runs decoder_ort.onnx (fused kernels,
#                       cache in place) and, in row ove-portable, decoder.onnx
#                       (`--ort-decoder portable`), the same weights
#      llama            llama-bench -p P -n 0, then -p 0 -n D -d P (bench/cpu_peers/llama_bench.py)
#      genai            bench/cpu_peers/genai_bench.py: append_tokens(P), then D steps
# 6. prints one markdown table (medians over the rounds): bytes per token, prefill and
#    decode tokens/s, decode GB/s and its fraction of the probe's read bandwidth, peak RSS,
#    load time (ove: as `ove bench` reports it; tract reads its cached decoder from
#    ~/.cache/ove/tract after the first round, OVE_TRACT_CACHE=off measures cold loads),
#    export time and export peak RSS. Raw figures: WORK/raw.jsonl and WORK/exports.jsonl.
#
# Bytes per token (bench/cpu_peers/weights_read.py): the decoder's weight bytes read per
# decoded token, counted from the model file: every tensor but a gather-only token
# embedding (ours: the initializers of the graph the row runs, decoder.onnx for tract and
# decoder_ort.onnx, when the bundle has it, for ONNX Runtime; the embedding table is
# outside them;
# GenAI: model.onnx's initializers less the Gather-only embedding; GGUF: all tensors less
# token_embd when an output.weight exists; tied, the embedding is the lm_head and counts).
#
# Options:
#   --shape S         0.6b, 1.7b (default) or 4b: Qwen3-0.6B/1.7B/4B decoder sizes
#   --rounds N        interleaved rounds (default 6)
#   --prompt N        prompt tokens (default 128)
#   --decode N        decoded tokens (default 64)
#   --threads N       threads for every runner and the probe (default 2)
#   --keep DIR        work in DIR and keep it: the checkpoint, the exports (redone when
#                     their flags or the ove binary change) and the results are reused by
#                     the next run with the same DIR. Default: a temporary directory under
#                     $BENCH_TMP (default target/peers), deleted at the end; its table and
#                     raw figures are copied to target/peers/results/.
#   --only LIST       rows to run, comma-separated: ove, ove-portable, ove-tract, llama, genai, and the
#                     variants' rows (NAME for ort, NAME-tract for tract)
#   --ove-variant NAME[:BACKENDS]="FLAGS"
#                     an extra ove export with these flags, e.g.
#                     --ove-variant fused="--int4 --decoder-graph fused"
#                     --ove-variant exact:ort,tract="--int4 --int4-exact"; repeatable
#   --profile P       cargo profile for ove: release (default) or debug
#   --ove-bin FILE    use this ove binary (no cargo build of ove)
#   --load-threshold  % of the machine's CPU others may use (default 15)
#   -h, --help        this text
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed -E 's/^# ?//'; }

SHAPE=1.7b ROUNDS=6 PROMPT=128 DECODE=64 THREADS=2 KEEP="" ONLY="" PROFILE=release OVE_BIN=""
LOAD_PCT=15
GENAI_EXTRA=${GENAI_EXTRA:-accuracy_level=4 prune_lm_head=true}
VARIANTS=()
while (($#)); do
  case "$1" in
    --shape) SHAPE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --prompt) PROMPT=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --ove-variant) VARIANTS+=("$2"); shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --ove-bin) OVE_BIN=$2; shift 2 ;;
    --load-threshold) LOAD_PCT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "cpu-vs-peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$SHAPE" in 0.6b|1.7b|4b) ;; *) echo "cpu-vs-peers: --shape 0.6b|1.7b|4b" >&2; exit 2 ;; esac
case "$PROFILE" in release|debug) ;; *) echo "cpu-vs-peers: --profile release|debug" >&2; exit 2 ;; esac
for n in "$ROUNDS" "$PROMPT" "$DECODE" "$THREADS" "$LOAD_PCT"; do
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n == 0)); then
    echo "cpu-vs-peers: $n is not a positive integer" >&2; exit 2
  fi
done

log() { printf '\033[1mcpu-vs-peers:\033[0m %s\n' "$*" >&2; }
now() { date +%s.%N; }
STAGES=()
stage() { STAGES+=("$(printf '%-28s %8.1f s' "$1" "$(echo "$(now) - $2" | bc)")"); }

# --- rows ----------------------------------------------------------------------------------
# A row: key, label, what runs it, its export, the weights column. An export: key -> kind
# (ove|llama|genai) and, for ove, the flags.
declare -A EXPORT_KIND EXPORT_FLAGS
ROW_KEYS=() ROW_LABEL=() ROW_RUN=() ROW_EXPORT=() ROW_MODEL=()
add_row() { ROW_KEYS+=("$1"); ROW_LABEL+=("$2"); ROW_RUN+=("$3"); ROW_EXPORT+=("$4"); ROW_MODEL+=("$5"); }
EXPORT_KIND[ove-int4]=ove; EXPORT_FLAGS[ove-int4]="--int4"
EXPORT_KIND[llama]=llama; EXPORT_KIND[genai]=genai
add_row ove "ove ort, decoder_ort.onnx" ove:ort ove-int4 "ove export --int4"
add_row ove-portable "ove ort, decoder.onnx" ove:ort:portable ove-int4 "ove export --int4"
add_row ove-tract "ove tract" ove:tract ove-int4 "ove export --int4"
add_row llama "llama.cpp" llama llama "Q4_0 (llama-quantize)"
add_row genai "ORT GenAI 0.18" genai genai "int4, accuracy_level 4"
for v in ${VARIANTS[@]+"${VARIANTS[@]}"}; do
  [[ "$v" == *=* ]] || { echo "cpu-vs-peers: --ove-variant NAME[:BACKENDS]=FLAGS, got $v" >&2; exit 2; }
  spec=${v%%=*} flags=${v#*=} name=${spec%%:*} backends=ort
  [[ "$spec" == *:* ]] && backends=${spec#*:}
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "cpu-vs-peers: variant name $name: letters, digits, _ . -" >&2; exit 2; }
  EXPORT_KIND[ove-$name]=ove; EXPORT_FLAGS[ove-$name]=$flags
  for b in ${backends//,/ }; do
    case "$b" in
      ort) add_row "$name" "ove $name ort" ove:ort "ove-$name" "ove export $flags" ;;
      tract) add_row "$name-tract" "ove $name tract" ove:tract "ove-$name" "ove export $flags" ;;
      *) echo "cpu-vs-peers: variant backend $b: ort or tract" >&2; exit 2 ;;
    esac
  done
done
if [ -n "$ONLY" ]; then
  keys=() label=() runs=() exp=() model=()
  for want in ${ONLY//,/ }; do
    found=""
    for i in "${!ROW_KEYS[@]}"; do
      if [ "${ROW_KEYS[$i]}" = "$want" ]; then
        keys+=("${ROW_KEYS[$i]}"); label+=("${ROW_LABEL[$i]}"); runs+=("${ROW_RUN[$i]}")
        exp+=("${ROW_EXPORT[$i]}"); model+=("${ROW_MODEL[$i]}"); found=1
      fi
    done
    [ -n "$found" ] || { echo "cpu-vs-peers: --only: no row $want (rows: ${ROW_KEYS[*]})" >&2; exit 2; }
  done
  ROW_KEYS=("${keys[@]}") ROW_LABEL=("${label[@]}") ROW_RUN=("${runs[@]}") ROW_EXPORT=("${exp[@]}") ROW_MODEL=("${model[@]}")
fi
EXPORTS=()  # the exports the rows need, in row order
for e in "${ROW_EXPORT[@]}"; do
  [[ " ${EXPORTS[*]-} " == *" $e "* ]] || EXPORTS+=("$e")
done

# --- setup and build -------------------------------------------------------------------------
t=$(now)
[ -f .venv/ove-env.sh ] || scripts/setup
scripts/setup-cpu-peers
# shellcheck source=/dev/null
. .venv/ove-env.sh
# shellcheck source=/dev/null
. target/peers/peers-env.sh
stage "setup (peers)" "$t"

t=$(now)
PFLAG=(); [ "$PROFILE" = release ] && PFLAG=(--release)
if [ -n "$OVE_BIN" ]; then
  cargo build -q "${PFLAG[@]}" -p ove-exporter --example fabricate_4b
  OVE=$(realpath "$OVE_BIN")
else
  cargo build -q "${PFLAG[@]}" -p ove --bin ove -p ove-exporter --example fabricate_4b
  OVE=$ROOT/target/$PROFILE/ove
fi
FAB=$ROOT/target/$PROFILE/examples/fabricate_4b
stage "cargo build ($PROFILE)" "$t"

# --- work dir ------------------------------------------------------------------------------
if [ -n "$KEEP" ]; then
  mkdir -p "$KEEP"; WORK=$(realpath "$KEEP")
else
  mkdir -p "${BENCH_TMP:-target/peers}"
  WORK=$(realpath "$(mktemp -d "${BENCH_TMP:-target/peers}/cpu-vs-peers.XXXXXX")")
  RESULTS=$ROOT/target/peers/results/$(date +%Y%m%d-%H%M%S)-$SHAPE
  cleanup() {
    mkdir -p "$RESULTS"
    cp "$WORK"/{table.md,raw.jsonl,exports.jsonl,meta.json,rows.tsv} "$RESULTS"/ 2>/dev/null || true
    rm -rf "$WORK"
    log "results kept in $RESULTS"
  }
  trap cleanup EXIT
fi
log "work dir: $WORK ($(df -h --output=avail "$WORK" | tail -1 | tr -d ' ') free)"
: >"$WORK/raw.jsonl"; : >"$WORK/exports.jsonl"
RUNS=$WORK/runs; mkdir -p "$RUNS"
PY=python3  # report.py: standard library only

# --- CPU load ------------------------------------------------------------------------------
NCPU=$(nproc)
HZ=$(getconf CLK_TCK)
cpu_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
total_jiffies() { awk '/^cpu /{s=0; for (i=2; i<=NF; i++) s+=$i; print s; exit}' /proc/stat; }
# Busy % of the whole machine over one second.
busy_pct() {
  local b0 t0 b1 t1
  b0=$(cpu_jiffies); t0=$(total_jiffies); sleep 1; b1=$(cpu_jiffies); t1=$(total_jiffies)
  echo $(( (b1 - b0) * 100 / ( (t1 - t0) > 0 ? (t1 - t0) : 1 ) ))
}
# Waits (up to ~2 min) until the machine is idle; returns 1 when it never was.
wait_idle() {
  local i p
  for i in $(seq 1 24); do
    p=$(busy_pct)
    ((p <= LOAD_PCT)) && return 0
    ((i == 1)) && log "CPU ${p}% busy (others); waiting"
    sleep 4
  done
  return 1
}

# timed KEY CMD...: runs CMD under /usr/bin/time -v, stdout to $RUNS/KEY.out, stderr .err,
# time report .time; sets OTHERS to the share of the CPU others used meanwhile (0..1).
timed() {
  local key=$1; shift
  local b0 b1 w0 w1 own rc=0
  b0=$(cpu_jiffies); w0=$(now)
  /usr/bin/time -v -o "$RUNS/$key.time" "$@" >"$RUNS/$key.out" 2>"$RUNS/$key.err" || rc=$?
  b1=$(cpu_jiffies); w1=$(now)
  own=$(awk -F': ' '/User time|System time/{s+=$2} END{print s+0}' "$RUNS/$key.time")
  OTHERS=$(echo "x = (($b1 - $b0) / $HZ - $own) / (($w1 - $w0) * $NCPU); if (x < 0) x = 0; x" | bc -l)
  return $rc
}

# item ROUND KEY CMD...: the load-checked, retried run of one row in one round.
ITEM_OK=0
item() {
  local round=$1 key=$2; shift 2
  local try loaded=0
  ITEM_OK=0
  for try in 1 2 3; do
    wait_idle || log "round $round $key: the CPU stays busy; running anyway"
    if ! timed "$round.$key" "$@"; then
      ITEM_OK=0
      log "round $round $key failed (try $try):"; tail -5 "$RUNS/$round.$key.err" >&2
      continue
    fi
    ITEM_OK=1
    if [ "$(echo "$OTHERS * 100 <= $LOAD_PCT" | bc)" = 1 ]; then loaded=0; break; fi
    loaded=1
    log "round $round $key: others used $(printf '%.0f' "$(echo "$OTHERS * 100" | bc -l)")% of the CPU (try $try of 3)"
  done
  ITEM_LOADED=$loaded ITEM_TRIES=$try
}

# --- checkpoint ----------------------------------------------------------------------------
CKPT=$WORK/ckpt
t=$(now)
if [ "$(cat "$CKPT/.fabricated" 2>/dev/null)" != "shape=$SHAPE vision=small" ]; then
  rm -rf "$CKPT"
  "$FAB" "$CKPT" --shape "$SHAPE" --vision small >&2
  echo "shape=$SHAPE vision=small" >"$CKPT/.fabricated"
fi
stage "fabricate ($SHAPE)" "$t"

HF=$WORK/hf
hf_checkpoint() {
  if [ ! -f "$HF/.done" ]; then
    local t; t=$(now)
    rm -rf "$HF"
    "$PEERS_PY" bench/cpu_peers/hf_checkpoint.py "$CKPT" "$HF" >&2
    touch "$HF/.done"
    stage "hf checkpoint (copy)" "$t"
  fi
}

# --- exports -------------------------------------------------------------------------------
ove_id=$(stat -c '%s %Y' "$OVE")
for e in "${EXPORTS[@]}"; do
  kind=${EXPORT_KIND[$e]} out=$WORK/$e
  case "$kind" in
    ove) want="ove ${EXPORT_FLAGS[$e]} bin=$ove_id" ;;
    llama) want="llama $LLAMA_CPP_PYTHON_VERSION Q4_0" ;;
    genai) want="genai $GENAI_VERSION $GENAI_EXTRA" ;;
  esac
  want="$want shape=$SHAPE v2"
  if [ "$(cat "$out.stamp" 2>/dev/null)" = "$want" ] && [ -f "$out.export.json" ]; then
    log "export $e: reusing $out"
    cat "$out.export.json" >>"$WORK/exports.jsonl"
    continue
  fi
  rm -rf "$out" "$out.stamp"
  wait_idle || log "export $e: the CPU is busy; timing it anyway"
  t=$(now)
  log "export $e"
  case "$kind" in
    ove)
      read -r -a flags <<<"${EXPORT_FLAGS[$e]}"
      /usr/bin/time -v -o "$out.time" "$OVE" export --checkpoint "$CKPT" --out "$out" "${flags[@]}" \
        2>"$out.log" >&2 || { cat "$out.log" >&2; exit 1; }
      # tract runs decoder.onnx; ONNX Runtime decoder_ort.onnx (its fused kernels over the
      # same weight bytes) when the bundle has one.
      "$PEERS_PY" bench/cpu_peers/weights_read.py onnx "$out/decoder.onnx" >"$out.bytes.json"
      ort_graph=$out/decoder.onnx; [ -f "$out/decoder_ort.onnx" ] && ort_graph=$out/decoder_ort.onnx
      "$PEERS_PY" bench/cpu_peers/weights_read.py onnx "$ort_graph" >"$out.bytes-ort.json"
      $PY bench/cpu_peers/report.py export "$e" "$out.time" "$out.bytes.json" \
        --ort "$out.bytes-ort.json" >"$out.export.json"
      ;;
    llama)
      hf_checkpoint
      mkdir -p "$out"
      /usr/bin/time -v -o "$out.convert.time" "$PEERS_PY" bench/cpu_peers/convert_gguf.py "$LLAMA_SRC" \
        "$HF" --outtype bf16 --outfile "$WORK/llama-bf16.gguf" >"$out.log" 2>&1 \
        || { tail -30 "$out.log" >&2; exit 1; }
      /usr/bin/time -v -o "$out.quantize.time" "$LLAMA_BIN/llama-quantize" "$WORK/llama-bf16.gguf" \
        "$out/model-q4_0.gguf" Q4_0 "$NCPU" >>"$out.log" 2>&1 || { tail -30 "$out.log" >&2; exit 1; }
      rm -f "$WORK/llama-bf16.gguf"
      LLAMA_SRC=$LLAMA_SRC "$PEERS_PY" bench/cpu_peers/weights_read.py gguf "$out/model-q4_0.gguf" >"$out.bytes.json"
      $PY bench/cpu_peers/report.py export "$e" "$out.convert.time" "$out.bytes.json" "$out.quantize.time" >"$out.export.json"
      ;;
    genai)
      hf_checkpoint
      read -r -a extra <<<"$GENAI_EXTRA"
      HF_HUB_OFFLINE=1 /usr/bin/time -v -o "$out.time" "$PEERS_PY" -m onnxruntime_genai.models.builder \
        -i "$HF" -o "$out" -p int4 -e cpu -c "$WORK/genai-cache" --extra_options "${extra[@]}" \
        >"$out.log" 2>&1 || { tail -30 "$out.log" >&2; exit 1; }
      rm -rf "$WORK/genai-cache"
      "$PEERS_PY" bench/cpu_peers/weights_read.py onnx "$out/model.onnx" >"$out.bytes.json"
      $PY bench/cpu_peers/report.py export "$e" "$out.time" "$out.bytes.json" >"$out.export.json"
      ;;
  esac
  echo "$want" >"$out.stamp"
  cat "$out.export.json" >>"$WORK/exports.jsonl"
  stage "export $e" "$t"
done
# The peers' checkpoint is only an input of their exports.
rm -rf "$HF"

# --- probe ---------------------------------------------------------------------------------
gcc -O3 -march=native -pthread bench/cpu_peers/stream.c -o "$WORK/stream"

# --- rounds --------------------------------------------------------------------------------
{
  printf 'key\tlabel\tmodel\texport\trun\n'
  for i in "${!ROW_KEYS[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\n' "${ROW_KEYS[$i]}" "${ROW_LABEL[$i]}" "${ROW_MODEL[$i]}" \
      "${ROW_EXPORT[$i]}" "${ROW_RUN[$i]}"
  done
} >"$WORK/rows.tsv"
CPU_NAME=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
$PY - "$WORK/meta.json" <<PYEOF
import json, sys
json.dump({"shape": "$SHAPE", "prompt": $PROMPT, "decode": $DECODE, "threads": $THREADS,
           "rounds": $ROUNDS, "cpu": "$CPU_NAME, $NCPU CPUs", "profile": "$PROFILE",
           "ove_rev": "$(git rev-parse --short HEAD 2>/dev/null || echo '?')",
           "llama_cpp_python": "$LLAMA_CPP_PYTHON_VERSION", "genai": "$GENAI_VERSION",
           "genai_extra": "$GENAI_EXTRA"}, open(sys.argv[1], "w"), indent=1)
PYEOF

MAXCTX=$((PROMPT + DECODE + 8))
ITEMS=(probe "${ROW_KEYS[@]}")
t=$(now)
for ((r = 1; r <= ROUNDS; r++)); do
  n=${#ITEMS[@]}
  for ((k = 0; k < n; k++)); do
    key=${ITEMS[$(( (k + r - 1) % n ))]}
    if [ "$key" = probe ]; then
      item "$r" probe "$WORK/stream" "$THREADS" 1024 7
      ((ITEM_OK)) && $PY bench/cpu_peers/report.py probe "$r" "$RUNS/$r.probe.out" "$OTHERS" \
        "$ITEM_LOADED" "$ITEM_TRIES" >>"$WORK/raw.jsonl"
      continue
    fi
    for i in "${!ROW_KEYS[@]}"; do [ "${ROW_KEYS[$i]}" = "$key" ] && break; done
    run=${ROW_RUN[$i]} dir=$WORK/${ROW_EXPORT[$i]}
    case "$run" in
      ove:*) spec=${run#ove:} extra=()
             [[ "$spec" == *:portable ]] && extra=(--ort-decoder portable)
             cmd=("$OVE" bench --bundle "$dir" --backend "${spec%%:*}" --threads "$THREADS"
                  --text-tokens "$PROMPT" --decode-tokens "$DECODE" --max-context "$MAXCTX"
                  --skip-checksums --json ${extra[@]+"${extra[@]}"}) ;;
      llama) cmd=("$PEERS_PY" bench/cpu_peers/llama_bench.py "$LLAMA_BIN" "$dir/model-q4_0.gguf"
                  --prompt "$PROMPT" --decode "$DECODE" --threads "$THREADS") ;;
      genai) cmd=("$PEERS_PY" bench/cpu_peers/genai_bench.py "$dir" --prompt "$PROMPT"
                  --decode "$DECODE" --threads "$THREADS") ;;
    esac
    item "$r" "$key" "${cmd[@]}"
    if ((ITEM_OK)); then
      $PY bench/cpu_peers/report.py run "$r" "$key" "$RUNS/$r.$key.out" "$RUNS/$r.$key.time" \
        "$OTHERS" "$ITEM_LOADED" "$ITEM_TRIES" >>"$WORK/raw.jsonl"
      log "round $r/$ROUNDS $key: $($PY bench/cpu_peers/report.py last "$WORK/raw.jsonl")"
    fi
  done
done
stage "rounds ($ROUNDS x ${#ITEMS[@]} items)" "$t"

$PY bench/cpu_peers/report.py table "$WORK" | tee "$WORK/table.md"
printf '\nstage times:\n' | tee -a "$WORK/table.md"
printf '  %s\n' "${STAGES[@]}" | tee -a "$WORK/table.md"
