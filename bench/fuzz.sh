#!/usr/bin/env bash
# Fuzzes every reader of untrusted bytes with AFL++ (through cargo-afl, on stable Rust) and
# prints, per target: executions, executions/s, coverage (edges found, share of the map),
# corpus size, crashes and hangs. See docs/FUZZING.md.
#
#   bench/fuzz.sh [--minutes N] [--jobs J] [--no-save] [--corpus-kb K] [TARGET[:MINUTES]...]
#
#   --minutes N   time per target (default 5; TARGET:MINUTES sets one target's)
#   --jobs J      targets fuzzed at once (default: the number of cores)
#   --no-save     leave fuzz/corpus and fuzz/regressions as they are
#   --corpus-kb K the saved corpus of a target keeps its smallest minimised inputs up to K
#                 kilobytes (default 1024), so the repository and the CI replay stay small
#   TARGET        some of: jpeg preprocess pdf configs safetensors manifest onnx tokenizer
#                 train-data serve (default: all), fuzzed in the order given
#
# Afterwards each target's queue is minimised (afl-cmin) into fuzz/corpus/TARGET, and every
# crash or hang is copied to fuzz/regressions/TARGET: `cargo test -p ove-fuzz` replays both.
# The work folder target/fuzz/ keeps AFL++'s own output (fuzzer_stats, plot_data, queues).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5 jobs=$(nproc) save=1 corpus_kb=1024 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --no-save) save=0; shift ;;
    --corpus-kb) corpus_kb=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed -e 's/^#//' -e 's/^ //'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

scripts/setup >&2
. .venv/ove-env.sh
AFL_VERSION=0.18.2
if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
  echo "fuzz.sh: installing cargo-afl $AFL_VERSION" >&2
  cargo install cargo-afl --version "$AFL_VERSION" --locked
fi
# Builds AFL++ from the sources inside the crate, once per Rust version.
built=$(cargo afl config --build 2>&1) || grep -q "already built" <<<"$built" \
  || { echo "$built" >&2; exit 1; }

# A target folder of its own: the instrumented build does not clobber the test build.
export CARGO_TARGET_DIR=target/afl
echo "fuzz.sh: building the instrumented ove-fuzz (cargo afl build --release)" >&2
cargo afl build --release -q -p ove-fuzz --features afl
bin=target/afl/release/ove-fuzz
mapfile -t all < <("$bin" list | cut -f1)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
declare -A mins
for i in "${!targets[@]}"; do
  t=${targets[$i]%%:*}
  m=$minutes
  [[ ${targets[$i]} == *:* ]] && m=${targets[$i]#*:}
  [[ $m =~ ^[0-9]+$ ]] || { echo "fuzz.sh: ${targets[$i]}: minutes must be a whole number" >&2; exit 2; }
  printf '%s\n' "${all[@]}" | grep -qx "$t" || { echo "fuzz.sh: no target $t (have: ${all[*]})" >&2; exit 2; }
  targets[$i]=$t mins[$t]=$m
done

work=target/fuzz
rm -rf "$work/seeds"
"$bin" seeds "$work/seeds" >/dev/null
export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
export AFL_SKIP_CRASHES=1 AFL_IGNORE_SEED_PROBLEMS=1

fuzz_one() {
  local t=$1 dict in="$work/in/$t" out="$work/out/$t"
  rm -rf "$in" "$out"; mkdir -p "$in" "$work/out"
  cp "$work/seeds/$t"/* "$in"/ 2>/dev/null || true
  [ -d "fuzz/corpus/$t" ] && find "fuzz/corpus/$t" -type f ! -name README.md -exec cp {} "$in"/ \;
  dict=$("$bin" list | awk -v t="$t" '$1 == t {print $2}')
  local x=()
  [ "$dict" != "-" ] && x=(-x "fuzz/dict/$dict.dict")
  # -t: a hang is an input over 2 s; -m none: the allocator inside bounds memory (1 GiB).
  cargo afl fuzz -i "$in" -o "$out" -V $((mins[$t] * 60)) -t 2000 -m none "${x[@]}" \
    -- "$bin" run "$t" > "$work/$t.log" 2>&1 || echo "fuzz.sh: afl-fuzz on $t exited $? (see $work/$t.log)" >&2
}

mkdir -p "$work"
echo "fuzz.sh: ${#targets[@]} targets ($(for t in "${targets[@]}"; do printf '%s:%s ' "$t" "${mins[$t]}"; done)minutes), $jobs at a time" >&2
running=0
for t in "${targets[@]}"; do
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

stat() { awk -F' *: *' -v k="$2" '$1 == k {print $2}' "$1"; }
printf '\n| target | executions | exec/s | edges found | map coverage | corpus | crashes | hangs |\n'
printf '|---|---|---|---|---|---|---|---|\n'
total=0
for t in "${targets[@]}"; do
  s="$work/out/$t/default/fuzzer_stats"
  if [ ! -f "$s" ]; then printf '| %s | (no stats: see %s) |\n' "$t" "$work/$t.log"; continue; fi
  execs=$(stat "$s" execs_done)
  total=$((total + execs))
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$execs" "$(stat "$s" execs_per_sec)" \
    "$(stat "$s" edges_found)" "$(stat "$s" bitmap_cvg)" "$(stat "$s" corpus_count)" \
    "$(stat "$s" saved_crashes)" "$(stat "$s" saved_hangs)"
done
printf '| all | %s |  |  |  |  |  |  |\n\n' "$total"

[ "$save" = 1 ] || exit 0
for t in "${targets[@]}"; do
  q="$work/out/$t/default"
  [ -d "$q/queue" ] || continue
  for kind in crashes hangs; do
    for f in "$q/$kind"/id:*; do
      [ -f "$f" ] || continue
      mkdir -p "fuzz/regressions/$t"
      cp "$f" "fuzz/regressions/$t/$kind-$(sha1sum "$f" | cut -c1-16)"
      echo "fuzz.sh: $t: saved $kind input fuzz/regressions/$t/$kind-$(sha1sum "$f" | cut -c1-16)" >&2
    done
  done
  rm -rf "$work/cmin/$t"
  if AFL_QUIET=1 cargo afl cmin -i "$q/queue" -o "$work/cmin/$t" -t 5000 -m none -- "$bin" run "$t" \
      > "$work/$t.cmin.log" 2>&1; then
    rm -rf "fuzz/corpus/$t"; mkdir -p "fuzz/corpus/$t"
    # Smallest first, up to the byte budget: afl-cmin kept the smallest input of each edge,
    # and small inputs are the ones that replay fast.
    budget=$((corpus_kb * 1024)) used=0 kept=0 all_n=0
    while read -r size f; do
      all_n=$((all_n + 1))
      [ $((used + size)) -le "$budget" ] || continue
      cp "$f" "fuzz/corpus/$t/$(sha1sum "$f" | cut -c1-16)"
      used=$((used + size)) kept=$((kept + 1))
    done < <(find "$work/cmin/$t" -type f -printf '%s %p\n' | sort -n)
    echo "fuzz.sh: $t: corpus minimised to $all_n inputs; saved the $kept smallest ($((used / 1024)) KiB)" >&2
  else
    echo "fuzz.sh: $t: afl-cmin failed (see $work/$t.cmin.log); corpus left as it was" >&2
  fi
done
