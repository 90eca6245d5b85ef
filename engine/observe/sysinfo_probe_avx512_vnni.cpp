// Peak int8 dot-product probe, AVX512-VNNI: 16 independent zmm vpdpbusd chains (compiled with
// -mavx512f -mavx512vnni only; called only when the CPU reports AVX512-VNNI). One instruction =
// 64 u8 x s8 products summed into 16 int32 lanes = 128 ops (a multiply and an add each).
// No standard headers: nothing inline to share.
#include <immintrin.h>

#include <cstdint>

namespace tessera::detail {

int32_t probe_int8_avx512(int64_t iters, int32_t seed) {
  const __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x05060708);
  __m512i c[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) c[j] = _mm512_set1_epi32(seed + j);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) c[j] = _mm512_dpbusd_epi32(c[j], a, b);  // wraps: fine
  }
  __m512i s = c[0];
#pragma GCC unroll 16
  for (int j = 1; j < 16; ++j) s = _mm512_add_epi32(s, c[j]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, s);
  int32_t r = 0;
  for (int32_t v : lanes) r ^= v;
  return r;
}

}  // namespace tessera::detail
