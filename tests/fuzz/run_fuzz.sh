#!/usr/bin/env bash
# Fresh fuzzing: runs every fuzz target of a fuzz build for N seconds (default 60) on a copy of
# its seed corpus (new inputs go to a scratch corpus, the repository is not touched), then prints
# per target: executions, time, corpus size and coverage (libFuzzer's final "cov:").
# Usage: tests/fuzz/run_fuzz.sh [seconds] [build dir (default build-fuzz)] [target...]
# A crash leaves its input as <scratch>/crash-* (the path is printed); copy it to
# tests/fuzz/regressions/<target>/ with the fix. Exit status: 1 if any target failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
build=${2:-build-fuzz}
shift 2 2>/dev/null || shift $#
targets=("$@")
[ ${#targets[@]} -eq 0 ] &&
  targets=(fuzz_safetensors fuzz_config fuzz_tokenizer_files fuzz_tokenize fuzz_run_inputs)
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-run-fuzz-XXXXXX")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
summary=()
for t in "${targets[@]}"; do
  exe="$build/tests/fuzz/$t"
  [ -x "$exe" ] || { echo "$t: $exe not built (configure with -DTESSERA_FUZZ=ON)"; status=1; continue; }
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp tests/fuzz/corpus/$t/* tests/fuzz/regressions/$t/* "$work/$t/corpus/" 2>/dev/null
  dict=()
  [ -f tests/fuzz/$t.dict ] && dict=(-dict=tests/fuzz/$t.dict)
  start=$(date +%s)
  "$exe" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/$t/artifacts/" "$work/$t/corpus" >"$work/$t/log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1)
  files=$(ls "$work/$t/corpus" | wc -l)
  kb=$(( $(du -sb "$work/$t/corpus" | cut -f1) / 1024 ))
  line="$t: ${execs:-?} execs, ${took} s, corpus ${files} inputs (${kb} KB), ${cov:-cov: ?}"
  if [ $rc -ne 0 ]; then
    line="$line, FAILED (exit $rc): $(ls "$work/$t/artifacts"/* 2>/dev/null | tr '\n' ' ')log $work/$t/log"
    status=1
  fi
  echo "$line"
  summary+=("$line")
done
echo "=== fuzzing summary ($secs s per target; scratch: $work)"
printf '%s\n' "${summary[@]}"
[ $status -eq 0 ] && rm -rf "$work"
exit $status
