// sysinfo's fp32 peak and read probes, AVX2 (compiled with -mavx2 -mfma only; called only when
// the CPU runs AVX2 and FMA): ymm registers, vfmadd / vaddps. The body is sysinfo_probe_body.hpp.
#include <immintrin.h>

#include <cstdint>

namespace tessera::detail {
namespace {
struct V {
  using T = __m256;
  static constexpr int kLanes = 8;
  static T set1(float x) { return _mm256_set1_ps(x); }
  static T zero() { return _mm256_setzero_ps(); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_store_ps(p, v); }
};
}  // namespace
}  // namespace tessera::detail

#include "engine/observe/sysinfo_probe_body.hpp"

namespace tessera::detail {

float probe_fma_avx2(int64_t iters, float seed) {
  return fma_chains(iters, seed);
}

float probe_read_avx2(const float* p, int64_t n, int64_t passes, int streams) {
  return read_any(p, n, passes, streams);
}

}  // namespace tessera::detail
