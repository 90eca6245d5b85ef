#!/usr/bin/env bash
# Fresh fuzzing: runs every fuzz target of a fuzz build for N seconds (default 60) on a copy of
# its seed corpus and regressions (new inputs go to a scratch corpus; the repository is not
# touched), then prints per target: executions, time, corpus size and coverage (libFuzzer's last
# "cov:"). FUZZ_JOBS (default 1) targets run at once, one core each.
# Usage: tests/fuzz/run_fuzz.sh [seconds] [build dir (default build-fuzz)] [target...]
# A crash leaves its input in the scratch folder (the path is printed): copy it to
# tests/fuzz/regressions/<target>/ with the fix. Exit status 1 if any target failed.
# FUZZ_KEEP=1 keeps the scratch folder (grown corpora, libFuzzer logs) after a clean run too.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
build=${2:-build-fuzz}
shift 2 2>/dev/null || shift $#
targets=("$@")
[ ${#targets[@]} -eq 0 ] &&
  targets=(fuzz_safetensors fuzz_config fuzz_tokenizer_files fuzz_tokenize fuzz_run_inputs fuzz_c_abi)
jobs=${FUZZ_JOBS:-1}
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-run-fuzz-XXXXXX")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

fuzz_one() {
  local t=$1 exe="$build/tests/fuzz/$1"
  if [ ! -x "$exe" ]; then
    echo "$t: $exe not built (configure with -DTESSERA_FUZZ=ON)" >"$work/$t.result"
    return 1
  fi
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp tests/fuzz/corpus/$t/* tests/fuzz/regressions/$t/* "$work/$t/corpus/" 2>/dev/null
  local dict=()
  [ -f tests/fuzz/$t.dict ] && dict=(-dict=tests/fuzz/$t.dict)
  local start rc
  start=$(date +%s)
  "$exe" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/$t/artifacts/" "$work/$t/corpus" >"$work/$t/log" 2>&1
  rc=$?
  local took=$(($(date +%s) - start))
  local execs cov files kb
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1)
  files=$(ls "$work/$t/corpus" | wc -l)
  kb=$(($(du -sb "$work/$t/corpus" | cut -f1) / 1024))
  local line="$t: ${execs:-?} execs, ${took} s, corpus ${files} inputs (${kb} KB), ${cov:-cov: ?}"
  if [ $rc -ne 0 ]; then
    line="$line, FAILED (exit $rc): $(ls "$work/$t/artifacts"/* 2>/dev/null | tr '\n' ' ')log $work/$t/log"
  fi
  echo "$line" | tee "$work/$t.result"
  return $rc
}

status=0
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
echo "=== fuzzing summary ($secs s per target; scratch: $work)"
for t in "${targets[@]}"; do cat "$work/$t.result"; done
[ $status -eq 0 ] && [ "${FUZZ_KEEP:-0}" != 1 ] && rm -rf "$work"
exit $status
