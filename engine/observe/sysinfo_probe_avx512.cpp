// sysinfo's fp32 peak and read probes, AVX-512 (compiled with -mavx512f -mfma only; called only
// when the CPU runs AVX-512): zmm registers, vfmadd / vaddps. The body is sysinfo_probe_body.hpp.
#include <immintrin.h>

#include <cstdint>

namespace tessera::detail {
namespace {
struct V {
  using T = __m512;
  static constexpr int kLanes = 16;
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T zero() { return _mm512_setzero_ps(); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_store_ps(p, v); }
};
}  // namespace
}  // namespace tessera::detail

#include "engine/observe/sysinfo_probe_body.hpp"

namespace tessera::detail {

float probe_fma_avx512(int64_t iters, float seed) {
  return fma_chains(iters, seed);
}

float probe_read_avx512(const float* p, int64_t n, int64_t passes, int streams) {
  return read_any(p, n, passes, streams);
}

}  // namespace tessera::detail
