// Peak bf16 dot-product probe, AVX512-BF16: 16 independent zmm vdpbf16ps chains (compiled with
// -mavx512f -mavx512bf16 only; called only when the CPU reports AVX512-BF16). 16 chains, not
// the 12 of the FMA probe: vdpbf16ps has a longer latency than vfmadd on the CPUs we know (6
// cycles at 2 per cycle on Zen 4/5 = 12 in flight); 16 covers it with registers to spare.
// One instruction = 32 bf16 pairs multiplied and added into 16 fp32 lanes = 64 flop.
// No standard headers: nothing inline to share.
#include <immintrin.h>

#include <cstdint>

namespace tessera::detail {

float probe_bf16_avx512(int64_t iters, float seed) {
  // bf16 1.0 (0x3f80) times bf16 2^-10 (0x3a80) in every pair: finite sums, no denormals.
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x3a803a80);
  __m512 c[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) c[j] = _mm512_set1_ps(seed + static_cast<float>(j));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) c[j] = _mm512_dpbf16_ps(c[j], a, b);
  }
  __m512 s = c[0];
#pragma GCC unroll 16
  for (int j = 1; j < 16; ++j) s = _mm512_add_ps(s, c[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}

}  // namespace tessera::detail
