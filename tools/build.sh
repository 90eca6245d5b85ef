#!/usr/bin/env bash
# Configures and builds Tessera. Usage: tools/build.sh [BUILD_DIR] [extra cmake args...]
# Default: build/, Release (-O3), warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j "$jobs"
