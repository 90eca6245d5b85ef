// Peak fp32 probe, AVX2: 12 independent ymm FMA chains (compiled with -mavx2 -mfma only;
// called only when the CPU runs AVX2 and FMA). No standard headers: nothing inline to share.
#include <immintrin.h>

#include <cstdint>

namespace tessera::detail {

float probe_fma_avx2(int64_t iters, float seed) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  __m256 c0 = _mm256_set1_ps(seed), c1 = _mm256_set1_ps(seed + 1), c2 = _mm256_set1_ps(seed + 2),
         c3 = _mm256_set1_ps(seed + 3), c4 = _mm256_set1_ps(seed + 4),
         c5 = _mm256_set1_ps(seed + 5), c6 = _mm256_set1_ps(seed + 6),
         c7 = _mm256_set1_ps(seed + 7), c8 = _mm256_set1_ps(seed + 8),
         c9 = _mm256_set1_ps(seed + 9), c10 = _mm256_set1_ps(seed + 10),
         c11 = _mm256_set1_ps(seed + 11);
  for (int64_t i = 0; i < iters; ++i) {
    c0 = _mm256_fmadd_ps(c0, a, b);
    c1 = _mm256_fmadd_ps(c1, a, b);
    c2 = _mm256_fmadd_ps(c2, a, b);
    c3 = _mm256_fmadd_ps(c3, a, b);
    c4 = _mm256_fmadd_ps(c4, a, b);
    c5 = _mm256_fmadd_ps(c5, a, b);
    c6 = _mm256_fmadd_ps(c6, a, b);
    c7 = _mm256_fmadd_ps(c7, a, b);
    c8 = _mm256_fmadd_ps(c8, a, b);
    c9 = _mm256_fmadd_ps(c9, a, b);
    c10 = _mm256_fmadd_ps(c10, a, b);
    c11 = _mm256_fmadd_ps(c11, a, b);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                           _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}

// Read-bandwidth probe (see probe_read_avx512): 4 streams of 256 B per iteration, 8 ymm loads
// each, into 16 independent vaddps chains.
float probe_read_avx2(const float* p, int64_t n, int64_t passes) {
  const int64_t q = n / 4;
  __m256 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t r = 0; r < passes; ++r) {
    for (int64_t i = 0; i < q; i += 64) {
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        const float* src = p + s * q + i;
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k)
          acc[s * 4 + k % 4] = _mm256_add_ps(acc[s * 4 + k % 4], _mm256_loadu_ps(src + 8 * k));
      }
    }
  }
  __m256 t = acc[0];
#pragma GCC unroll 16
  for (int j = 1; j < 16; ++j) t = _mm256_add_ps(t, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, t);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}

}  // namespace tessera::detail
