// Peak fp32 probe, baseline x86-64 (SSE2, no FMA): 12 independent chains of multiply then add.
#include <emmintrin.h>

#include <cstdint>

namespace tessera::detail {

float probe_fma_generic(int64_t iters, float seed) {
  const __m128 a = _mm_set1_ps(0.999999f), b = _mm_set1_ps(1e-7f);
  __m128 c[12];
  for (int j = 0; j < 12; ++j) c[j] = _mm_set1_ps(seed + static_cast<float>(j));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) c[j] = _mm_add_ps(_mm_mul_ps(c[j], a), b);
  }
  __m128 s = c[0];
  for (int j = 1; j < 12; ++j) s = _mm_add_ps(s, c[j]);
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

namespace {

// S streams (the buffer's S parts, side by side), 16 / S xmm loads from each per step, one
// per accumulator: 16 independent addps chains (2 loads per cycle x 3-4 cycles of latency
// needs 8 at least). Internal linkage: nothing shared with the other ISA files.
template <int S>
float read_streams(const float* p, int64_t n, int64_t passes) {
  constexpr int kLoads = 16 / S;
  const int64_t q = n / S;
  __m128 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) acc[j] = _mm_setzero_ps();
  for (int64_t r = 0; r < passes; ++r) {
    for (int64_t i = 0; i < q; i += 4 * kLoads) {
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
#pragma GCC unroll 16
        for (int k = 0; k < kLoads; ++k)
          acc[s * kLoads + k] =
              _mm_add_ps(acc[s * kLoads + k], _mm_loadu_ps(p + s * q + i + 4 * k));
      }
    }
  }
  __m128 t = acc[0];
#pragma GCC unroll 16
  for (int j = 1; j < 16; ++j) t = _mm_add_ps(t, acc[j]);
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, t);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

}  // namespace

float probe_read_generic(const float* p, int64_t n, int64_t passes, int streams) {
  return streams >= 4 ? read_streams<4>(p, n, passes) : read_streams<2>(p, n, passes);
}

}  // namespace tessera::detail
