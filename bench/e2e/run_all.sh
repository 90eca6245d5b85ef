#!/usr/bin/env bash
# Runs the four end-to-end comparisons one after the other (A encoder, B seq2seq, C GPT-2,
# D BERT) at 1 and 2 threads and keeps their tables in $SCRATCH/results/tables-<time>.md.
# Extra arguments go to every script (e.g. --reps 3 --scratch /tmp/x).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
scratch="${TESSERA_E2E_SCRATCH:-/tmp/tessera-e2e}"
mkdir -p "$scratch/results"
out="$scratch/results/tables-$(date -u +%Y%m%dT%H%M%S).md"
for s in e2e_encoder e2e_seq2seq e2e_gpt2 e2e_bert; do
  /usr/bin/python3 "$here/$s.py" "$@" | tee -a "$out"
  echo | tee -a "$out"
done
echo "tables: $out"
