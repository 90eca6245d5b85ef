#!/usr/bin/env bash
# Runs the four end-to-end comparisons one after the other (A encoder, B seq2seq, C GPT-2,
# D BERT) at 1 and 2 threads and keeps their tables in $SCRATCH/results/tables-<time>.md.
# `tessera sysinfo --json` runs once first, with no engine worker alive, and every table reports
# it (--sysinfo). Extra arguments go to every script (e.g. --reps 3 --scratch /tmp/x).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
scratch="${TESSERA_E2E_SCRATCH:-/tmp/tessera-e2e}"
cli="${TESSERA_CLI:-$here/../../build/tools/tessera}"
stamp="$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$scratch/results"
out="$scratch/results/tables-$stamp.md"
extra=()
if [ -x "$cli" ]; then
  sysinfo="$scratch/results/sysinfo-$stamp.json"
  echo "[run_all] $cli sysinfo --json > $sysinfo (no engine worker alive)" >&2
  env -u OMP_NUM_THREADS "$cli" sysinfo --json > "$sysinfo"
  extra=(--sysinfo "$sysinfo")
else
  echo "[run_all] $cli not found: the tables report no measured limits" >&2
fi
for s in e2e_encoder e2e_seq2seq e2e_gpt2 e2e_bert; do
  /usr/bin/python3 "$here/$s.py" "${extra[@]}" "$@" | tee -a "$out"
  echo | tee -a "$out"
done
echo "tables: $out"
