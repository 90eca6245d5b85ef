#!/usr/bin/env bash
# Sets up, builds, and runs the shipped demo: a Transformer trained to turn dates written the
# ways people write them into ISO 8601. Usage: tools/demo.sh ["a date" ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh build
if [ $# -eq 0 ]; then
  set -- "the 26th of November 2026" "Thursday, November 26, 2026" "Nov 26, 2026" "26/11/2026"
fi
for d in "$@"; do printf '%s\n' "$d"; done > /tmp/tessera-demo-inputs.$$
echo "--- tessera generate --model models/demo-dates (one batch, one result per line)"
paste -d '\t' /tmp/tessera-demo-inputs.$$ <(build/tools/tessera generate --model models/demo-dates "$@") |
  awk -F '\t' '{ printf "%-32s -> %s\n", $1, $2 }'
rm -f /tmp/tessera-demo-inputs.$$
