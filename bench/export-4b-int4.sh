#!/usr/bin/env bash
# Export benchmark at the released LLaVA-OneVision-1.5-4B shapes, int4.
#
# Fabricates a random bf16 checkpoint with the 4B shapes (vision 1024 x 24 blocks, text
# 2560 x 36 layers, vocab 151936: ~8.9 GB in 2 GB shards + index + configs) in a temporary
# directory, runs `ove export --int4` on it under /usr/bin/time -v and prints wall time,
# peak RSS and throughput (checkpoint MB read per second). Everything is deleted afterwards.
#
#   bench/export-4b-int4.sh [extra ove export flags...]     (default flags: --dtype f16)
#   LAYERS=4 bench/export-4b-int4.sh                       (quicker, fewer decoder layers)
#   BENCH_TMP=/big/disk bench/export-4b-int4.sh            (needs ~12 GB free)
set -euo pipefail
cd "$(dirname "$0")/.."

LAYERS=${LAYERS:-36}
FLAGS=("$@")
[ ${#FLAGS[@]} -eq 0 ] && FLAGS=(--dtype f16)

cargo build -q -p ove --bin ove
cargo build -q -p ove-exporter --example fabricate_4b
OVE=target/debug/ove
FAB=target/debug/examples/fabricate_4b

WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/ove-bench-4b.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "work dir: $WORK ($(df -h --output=avail "$WORK" | tail -1 | tr -d ' ') free)"

t0=$(date +%s.%N)
"$FAB" "$WORK/ckpt" --layers "$LAYERS"
t1=$(date +%s.%N)
CK_BYTES=$(du -sb "$WORK/ckpt" | cut -f1)
printf 'fabricated in %.1f s\n' "$(echo "$t1 - $t0" | bc)"

/usr/bin/time -v -o "$WORK/time.txt" \
  "$OVE" export --checkpoint "$WORK/ckpt" --out "$WORK/bundle" --int4 "${FLAGS[@]}" 2>"$WORK/export.log" \
  || { cat "$WORK/export.log" "$WORK/time.txt"; exit 1; }

WALL=$(grep 'Elapsed (wall clock)' "$WORK/time.txt" | awk '{print $NF}')
SECS=$(echo "$WALL" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
RSS_KB=$(grep 'Maximum resident set size' "$WORK/time.txt" | awk '{print $NF}')
OUT_BYTES=$(du -sb "$WORK/bundle" | cut -f1)
DEC=$(stat -c %s "$WORK/bundle/decoder.onnx.data")
echo "---- ove export --int4 ${FLAGS[*]} (4B shapes, $LAYERS decoder layers) ----"
printf 'checkpoint      %8.1f MB bf16\n' "$(echo "$CK_BYTES / 1000000" | bc -l)"
printf 'bundle          %8.1f MB (decoder.onnx.data %.1f MB)\n' \
  "$(echo "$OUT_BYTES / 1000000" | bc -l)" "$(echo "$DEC / 1000000" | bc -l)"
printf 'wall time       %8.1f s\n' "$SECS"
printf 'peak RSS        %8.1f MB\n' "$(echo "$RSS_KB / 1000" | bc -l)"
printf 'throughput      %8.1f MB/s of checkpoint\n' "$(echo "$CK_BYTES / 1000000 / $SECS" | bc -l)"
grep -E 'User time|System time|Percent of CPU' "$WORK/time.txt" | sed 's/^\s*//'
