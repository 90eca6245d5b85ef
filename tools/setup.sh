#!/usr/bin/env bash
# Installs every Debian 12 package Tessera needs to build, test and benchmark. Idempotent: only
# missing packages are installed (and apt's lists are refreshed only then). Run as root, or as a
# user with sudo.
set -euo pipefail

PACKAGES=(
  build-essential cmake g++ git pkg-config clang-format
  libxsimd-dev          # SIMD (xsimd 8.1)
  libdnnl-dev           # oneDNN 2.6: second GEMM backend, benchmark baseline
  libbenchmark-dev      # Google Benchmark
  doctest-dev           # unit tests
  nlohmann-json3-dev    # JSON (configs, safetensors headers)
  libcli11-dev          # command line
  libcpp-httplib-dev    # tessera serve (HTTP server)
  libpcre2-dev          # GPT-2 pre-tokenization regex (Unicode classes)
  libutf8proc-dev       # BERT basic tokenizer: Unicode normalization, categories
  python3 python3-numpy python3-torch   # exporters, fixtures, parity tests (never at run time)
  python3-onnx          # bench/e2e/quantize_onnx.py: ONNX Runtime's int8 graphs (ort-int8)
  python3-matplotlib    # tools/plot_profile.py (roofline charts)
  pybind11-dev python3-dev python3-pytest   # the Python module (engine/api/python) and its tests
  time                  # GNU time: tests/limits_cli.py measures peak RSS with it
  clang libclang-rt-14-dev libomp-dev   # the libFuzzer build (tests/fuzz): clang, libFuzzer, libomp
  nginx curl            # tools/cluster.sh: replicas of tessera serve behind nginx (deploy/nginx), tests/scale
  python3-dask python3-distributed   # tools/batch.py: batch jobs on a Dask cluster, tests/scale
  python3-doc           # tools/train_prose_gpt.py: the Python documentation's sources, the prose-gpt training text
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root (missing: ${missing[*]})" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
