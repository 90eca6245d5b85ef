#!/usr/bin/env bash
# Sets up, builds and runs every test: the Release build (warnings as errors) with the whole
# suite (kernels, engine, CLI errors, PyTorch parity, demo accuracy) once per ISA the CPU can
# run (AVX-512, AVX2+FMA, generic), then an
# AddressSanitizer + UndefinedBehaviorSanitizer build running the kernel, engine and bad-input
# tests, then a ThreadSanitizer build running the library's concurrency suites (tests/api), then
# the libFuzzer build (clang, tests/fuzz): every target over its seed corpus and
# regressions, then TESSERA_FUZZ_SECONDS (default 60) of fresh fuzzing per target.
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

echo "=== ThreadSanitizer build: sessions on one model at once (tests/api, the library's suites),"
echo "    the server's scheduler thread beside its callers (tests/serve)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_WERROR=ON -DTESSERA_TSAN=ON \
  -DTESSERA_BUILD_BENCH=OFF >/dev/null
cmake --build build-tsan -j "$(nproc 2>/dev/null || echo 2)" --target test_api test_c_api \
  test_scheduler tessera
echo "=== ThreadSanitizer tests"
(cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure --timeout 1500 \
  -R '^(api_models|api|c_api|scheduler|serve)$')

echo "=== libFuzzer build (clang)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_FUZZ=ON \
  -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc 2>/dev/null || echo 2)" --target fuzz_safetensors fuzz_config \
  fuzz_tokenizer_files fuzz_tokenize fuzz_run_inputs fuzz_c_abi
echo "=== fuzz targets over their corpora and regressions"
(cd build-fuzz && ctest --output-on-failure --timeout 600)
echo "=== fresh fuzzing, ${TESSERA_FUZZ_SECONDS:-60} s per target, one per core"
FUZZ_JOBS=$(nproc 2>/dev/null || echo 2) tests/fuzz/run_fuzz.sh "${TESSERA_FUZZ_SECONDS:-60}" build-fuzz

echo "=== all tests passed in $(( $(date +%s) - start )) s"
