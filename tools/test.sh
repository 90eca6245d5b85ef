#!/usr/bin/env bash
# Sets up, builds and runs every test: the Release build (warnings as errors) with the whole
# suite (kernels, engine, CLI errors, PyTorch parity, demo accuracy) once per ISA the CPU can
# run (AVX-512, AVX2+FMA, generic), then an
# AddressSanitizer + UndefinedBehaviorSanitizer build running the kernel, engine and bad-input
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
start=$(date +%s)

echo "=== Release build"
tools/build.sh build
best=$(env -u TESSERA_ISA build/tools/tessera sysinfo --json | sed -n 's/.*"isa": "\(.*\)".*/\1/p')
echo "=== Release tests (ISA $best, the best this CPU has)"
(cd build && ctest --output-on-failure --timeout 1500)

# The whole suite again on every other ISA this CPU can run (TESSERA_ISA picks the kernels).
others=()
case "$best" in
  avx512) others=(avx2 generic) ;;
  avx2) others=(generic) ;;
esac
for isa in "${others[@]}"; do
  echo "=== Release tests with TESSERA_ISA=$isa"
  (cd build && TESSERA_ISA=$isa ctest --output-on-failure --timeout 1500)
done

echo "=== ASan + UBSan build"
tools/build.sh build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_SANITIZE=ON \
  -DTESSERA_BUILD_BENCH=OFF
echo "=== ASan + UBSan tests"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure --timeout 1500)

echo "=== all tests passed in $(( $(date +%s) - start )) s"
