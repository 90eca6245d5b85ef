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

// Read-bandwidth probe (see probe_read_avx512): 4 streams of 256 B per iteration, 16 xmm loads
// each, into 16 independent addps chains.
float probe_read_generic(const float* p, int64_t n, int64_t passes) {
  const int64_t q = n / 4;
  __m128 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm_setzero_ps();
  for (int64_t r = 0; r < passes; ++r) {
    for (int64_t i = 0; i < q; i += 64) {
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        const float* src = p + s * q + i;
#pragma GCC unroll 16
        for (int k = 0; k < 16; ++k)
          acc[s * 4 + k % 4] = _mm_add_ps(acc[s * 4 + k % 4], _mm_loadu_ps(src + 4 * k));
      }
    }
  }
  __m128 t = acc[0];
  for (int j = 1; j < 16; ++j) t = _mm_add_ps(t, acc[j]);
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, t);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

}  // namespace tessera::detail
