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

namespace {

// S streams (the buffer's S parts, side by side), 16 / S ymm loads from each per step, one
// per accumulator: 16 independent vaddps chains (2 loads per cycle x 3-4 cycles of latency
// needs 8 at least). Internal linkage: nothing shared with the other ISA files.
template <int S>
float read_streams(const float* p, int64_t n, int64_t passes) {
  constexpr int kLoads = 16 / S;
  const int64_t q = n / S;
  __m256 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t r = 0; r < passes; ++r) {
    for (int64_t i = 0; i < q; i += 8 * kLoads) {
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
#pragma GCC unroll 16
        for (int k = 0; k < kLoads; ++k)
          acc[s * kLoads + k] =
              _mm256_add_ps(acc[s * kLoads + k], _mm256_loadu_ps(p + s * q + i + 8 * k));
      }
    }
  }
  __m256 t = acc[0];
#pragma GCC unroll 16
  for (int j = 1; j < 16; ++j) t = _mm256_add_ps(t, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, t);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

}  // namespace

float probe_read_avx2(const float* p, int64_t n, int64_t passes, int streams) {
  return streams >= 4 ? read_streams<4>(p, n, passes) : read_streams<2>(p, n, passes);
}

}  // namespace tessera::detail
