// sysinfo's fp32 peak and read probes, baseline x86-64 (SSE2, no FMA: a multiply then an add
// per chain step, counted as one FMA's 2 flop). The body is sysinfo_probe_body.hpp.
#include <emmintrin.h>

#include <cstdint>

namespace tessera::detail {
namespace {
struct V {
  using T = __m128;
  static constexpr int kLanes = 4;
  static T set1(float x) { return _mm_set1_ps(x); }
  static T zero() { return _mm_setzero_ps(); }
  static T fma(T a, T b, T c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
  static T add(T a, T b) { return _mm_add_ps(a, b); }
  static T loadu(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, T v) { _mm_store_ps(p, v); }
};
}  // namespace
}  // namespace tessera::detail

#include "engine/observe/sysinfo_probe_body.hpp"

namespace tessera::detail {

float probe_fma_generic(int64_t iters, float seed) {
  return fma_chains(iters, seed);
}

float probe_read_generic(const float* p, int64_t n, int64_t passes, int streams) {
  return read_any(p, n, passes, streams);
}

}  // namespace tessera::detail
