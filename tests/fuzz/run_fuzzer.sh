#!/usr/bin/env bash
# Runs one libFuzzer binary for a bounded time as a ctest test (see tests/fuzz/CMakeLists.txt).
#   run_fuzzer.sh --binary FUZZER --work DIR [--time SECONDS] [--seeds DIR]... [--expect-crash] [-- LIBFUZZER_FLAGS...]
# The working corpus starts empty in DIR/corpus on every run (the seed dirs are read, never written).
# Exit status: 0 if the fuzzer ran for the whole time without a finding; 1 on any finding (crash,
# sanitizer report, leak, timeout, out-of-memory), with the report and the input (base64) printed
# and the input kept in DIR/artifacts; 2 on a usage or setup problem. --expect-crash inverts the
# verdict for the self-test: 0 only if a crash was found and reported.
set -uo pipefail

binary="" work="" max_time=20 expect_crash=0
seeds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --time) max_time=$2; shift 2 ;;
    --seeds) seeds+=("$2"); shift 2 ;;
    --expect-crash) expect_crash=1; shift ;;
    --) shift; break ;;
    *) echo "run_fuzzer.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
extra=("$@")
name=$(basename "$binary")

if [ -z "$binary" ] || [ -z "$work" ]; then echo "run_fuzzer.sh: --binary and --work are required" >&2; exit 2; fi
if [ ! -x "$binary" ]; then
  echo "run_fuzzer.sh: $binary is not built (the sightline_fuzzers target builds it)" >&2
  exit 2
fi
for s in ${seeds[@]+"${seeds[@]}"}; do
  if [ ! -d "$s" ]; then echo "run_fuzzer.sh: seed directory $s does not exist" >&2; exit 2; fi
done

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
log="$work/fuzzer.log"

# Leaks are findings too; a sanitizer report must end the run with a non-zero status.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1:allocator_may_return_null=0}"

seed_count=0
for s in ${seeds[@]+"${seeds[@]}"}; do seed_count=$((seed_count + $(find "$s" -type f ! -name '.*' | wc -l))); done
echo "$name: fuzzing for ${max_time}s from $seed_count seed inputs (log: $log)"

"$binary" -max_total_time="$max_time" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" ${extra[@]+"${extra[@]}"} "$work/corpus" ${seeds[@]+"${seeds[@]}"} >"$log" 2>&1
status=$?

shopt -s nullglob
artifacts=("$work"/artifacts/*)
shopt -u nullglob

if [ $status -eq 0 ] && [ ${#artifacts[@]} -eq 0 ]; then
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' "$log" | sed "s/^/$name: /"
  echo "$name: corpus grew to $(find "$work/corpus" -type f | wc -l) inputs; no findings"
  if [ $expect_crash -eq 1 ]; then
    echo "$name: FAILED: the planted crash was not found, so a real one might not fail a test either" >&2
    exit 1
  fi
  exit 0
fi

if [ $expect_crash -eq 1 ]; then
  if grep -q 'ERROR: AddressSanitizer' "$log" && [ ${#artifacts[@]} -gt 0 ] && [ $status -ne 0 ]; then
    echo "$name: the planted crash was found and reported (exit status $status, ${#artifacts[@]} artifact(s)): the wiring works"
    exit 0
  fi
  echo "$name: FAILED: expected an AddressSanitizer report and a crash artifact; exit status $status" >&2
  tail -n 40 "$log" >&2
  exit 1
fi

echo "$name: FINDING (exit status $status)" >&2
echo "---- last lines of $log ----" >&2
tail -n 80 "$log" >&2
for a in ${artifacts[@]+"${artifacts[@]}"}; do
  echo "---- input $a ($(wc -c <"$a") bytes), base64: ----" >&2
  head -c 4096 "$a" | base64 >&2
  echo "reproduce: $binary $a" >&2
done
exit 1
