#!/usr/bin/env bash
# Runs the whole ctest suite several times in a row while other processes keep every core busy:
# no test may depend on an idle machine. Usage: tests/loaded_ctest.sh [BUILD_DIR] [RUNS] [SPINNERS]
# (defaults: build, 3 runs, 2 spinners). The spinners (`yes > /dev/null`) are started here and
# stopped on exit, whatever happens.
set -euo pipefail
build=${1:-build}
runs=${2:-3}
spinners=${3:-2}
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for _ in $(seq "$spinners"); do
  yes > /dev/null &
  pids+=($!)
done
echo "loaded_ctest: $spinners spinning processes (pids ${pids[*]}) on $(nproc) CPUs, $runs ctest runs in $build"
failed=0
for r in $(seq "$runs"); do
  start=$(date +%s)
  if (cd "$build" && ctest --timeout 1500 > "ctest-loaded-$r.log" 2>&1); then status=passed; else status=FAILED; failed=1; fi
  summary=$(grep -E 'tests passed|tests failed out of' "$build/ctest-loaded-$r.log" | tail -1)
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "run $r: $status in $(( $(date +%s) - start )) s, load average $load: $summary"
  [ "$status" = passed ] || grep -E '\*\*\*|Failed' "$build/ctest-loaded-$r.log" || true
done
exit $failed
