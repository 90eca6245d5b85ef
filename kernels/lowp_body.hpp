// Low-precision GEMM body: C = epilogue(A · Wᵀ) with W packed as bf16 or int8 (kernels.h,
// WeightType). A is converted once per call (bf16: rounded to nearest even, two k values per
// 32-bit word; int8: quantized per row to u8, four per word) into rows of words, and the fp32
// GEMM's loop nests (GemmBody::blocked_loop, few_rows_loop) run over words with the micro-kernels
// below; the panels hold words of the same layout. Rules: simd_body.hpp.
//
// kDot: the dot-product instructions, AVX512-BF16 vdpbf16ps and AVX512-VNNI vpdpbusd (only
// kernels/isa_avx512_vnni.cpp, compiled with -mavx512bf16 -mavx512vnni, sets it). Without them:
//   bf16  each word of W widened to two fp32 vectors (k even: word << 16; k odd: word & 0xffff0000)
//         and summed with two FMAs, the odd k first as vdpbf16ps does: the products of bf16
//         values are exact in fp32, so both give the same bits (denormals aside: vdpbf16ps
//         flushes them).
//   int8  each word's bytes widened to 16 bits in place (even bytes: (w << 8) >> 8 arithmetic,
//         odd: w >> 8 arithmetic; A's: w & 0x00ff, w >> 8) and multiplied pairwise into int32
//         by vpmaddwd: exact (255 * 128 * 2 < 2^31), no saturation (vpmaddubsw's 16-bit sums
//         would saturate at 255 * 127 * 2).
#pragma once

#include "kernels/gemm_body.hpp"

namespace tessera::kernels {
namespace {

// The integer vector of this translation unit's widest ISA (each ISA file instantiates only its
// own architecture, see simd_body.hpp).
#if defined(__AVX512F__)
using VecI = __m512i;
inline VecI vi_load(const float* p) {
  return _mm512_load_si512(p);
}
inline VecI vi_loadu(const void* p) {
  return _mm512_loadu_si512(p);
}
inline void vi_store(float* p, VecI v) {
  _mm512_store_si512(p, v);
}
inline VecI vi_bcast(const float* p) {
  return _mm512_castps_si512(_mm512_set1_ps(*p));
}
inline VecI vi_set1(int32_t x) {
  return _mm512_set1_epi32(x);
}
inline VecI vi_add(VecI a, VecI b) {
  return _mm512_add_epi32(a, b);
}
inline VecI vi_and(VecI a, VecI b) {
  return _mm512_and_si512(a, b);
}
inline VecI vi_madd16(VecI a, VecI b) {
  return _mm512_madd_epi16(a, b);
}
inline VecI vi_sll16(VecI a) {
  return _mm512_slli_epi16(a, 8);
}
inline VecI vi_sra16(VecI a) {
  return _mm512_srai_epi16(a, 8);
}
inline VecI vi_srl16(VecI a) {
  return _mm512_srli_epi16(a, 8);
}
inline VecI vi_sll32_16(VecI a) {
  return _mm512_slli_epi32(a, 16);
}
inline __m512 vi_as_ps(VecI a) {
  return _mm512_castsi512_ps(a);
}
#elif defined(__AVX2__)
using VecI = __m256i;
inline VecI vi_load(const float* p) {
  return _mm256_load_si256(reinterpret_cast<const VecI*>(p));
}
inline VecI vi_loadu(const void* p) {
  return _mm256_loadu_si256(static_cast<const VecI*>(p));
}
inline void vi_store(float* p, VecI v) {
  _mm256_store_si256(reinterpret_cast<VecI*>(p), v);
}
inline VecI vi_bcast(const float* p) {
  return _mm256_castps_si256(_mm256_set1_ps(*p));
}
inline VecI vi_set1(int32_t x) {
  return _mm256_set1_epi32(x);
}
inline VecI vi_add(VecI a, VecI b) {
  return _mm256_add_epi32(a, b);
}
inline VecI vi_and(VecI a, VecI b) {
  return _mm256_and_si256(a, b);
}
inline VecI vi_madd16(VecI a, VecI b) {
  return _mm256_madd_epi16(a, b);
}
inline VecI vi_sll16(VecI a) {
  return _mm256_slli_epi16(a, 8);
}
inline VecI vi_sra16(VecI a) {
  return _mm256_srai_epi16(a, 8);
}
inline VecI vi_srl16(VecI a) {
  return _mm256_srli_epi16(a, 8);
}
inline VecI vi_sll32_16(VecI a) {
  return _mm256_slli_epi32(a, 16);
}
inline __m256 vi_as_ps(VecI a) {
  return _mm256_castsi256_ps(a);
}
#else
using VecI = __m128i;
inline VecI vi_load(const float* p) {
  return _mm_load_si128(reinterpret_cast<const VecI*>(p));
}
inline VecI vi_loadu(const void* p) {
  return _mm_loadu_si128(static_cast<const VecI*>(p));
}
inline void vi_store(float* p, VecI v) {
  _mm_store_si128(reinterpret_cast<VecI*>(p), v);
}
inline VecI vi_bcast(const float* p) {
  return _mm_castps_si128(_mm_set1_ps(*p));
}
inline VecI vi_set1(int32_t x) {
  return _mm_set1_epi32(x);
}
inline VecI vi_add(VecI a, VecI b) {
  return _mm_add_epi32(a, b);
}
inline VecI vi_and(VecI a, VecI b) {
  return _mm_and_si128(a, b);
}
inline VecI vi_madd16(VecI a, VecI b) {
  return _mm_madd_epi16(a, b);
}
inline VecI vi_sll16(VecI a) {
  return _mm_slli_epi16(a, 8);
}
inline VecI vi_sra16(VecI a) {
  return _mm_srai_epi16(a, 8);
}
inline VecI vi_srl16(VecI a) {
  return _mm_srli_epi16(a, 8);
}
inline VecI vi_sll32_16(VecI a) {
  return _mm_slli_epi32(a, 16);
}
inline __m128 vi_as_ps(VecI a) {
  return _mm_castsi128_ps(a);
}
#endif

// bf16 bits of x, rounded to nearest even (NaN stays NaN): kernels.h f32_to_bf16's rule.
inline uint32_t round_bf16(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

template <class Arch, Isa kIsa, bool kDot>
struct LowpBody : GemmBody<Arch, kIsa> {
  using Base = GemmBody<Arch, kIsa>;
  using Base::fmadd;
  using Base::kFewRows;
  using Base::load;
  using Base::MR;
  using Base::NR;
  using Base::W;
  using typename Base::B;

  static_assert(sizeof(VecI) == sizeof(B), "one integer vector per float vector");

  // The fp32 values of a word vector's bf16 halves: k even (low half) and k odd (high half).
  static B widen_even(VecI w) { return B(vi_as_ps(vi_sll32_16(w))); }
  static B widen_odd(VecI w) {
    return B(vi_as_ps(vi_and(w, vi_set1(static_cast<int32_t>(0xffff0000u)))));
  }

  // acc += the dot products of one word of A (broadcast `a`) with a word vector of W.
  static void dot_bf16(B& acc, VecI a, VecI w) {
    if constexpr (kDot) {
#if defined(__AVX512BF16__)
      acc = B(_mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)w));
#endif
    } else {
      acc = fmadd(widen_odd(a), widen_odd(w), acc);
      acc = fmadd(widen_even(a), widen_even(w), acc);
    }
  }
  static void dot_int8(VecI& acc, VecI a, VecI w) {
    if constexpr (kDot) {
#if defined(__AVX512VNNI__)
      acc = _mm512_dpbusd_epi32(acc, a, w);
#endif
    } else {
      const VecI mask = vi_set1(0x00ff00ff);
      acc = vi_add(acc, vi_madd16(vi_and(a, mask), vi_sra16(vi_sll16(w))));
      acc = vi_add(acc, vi_madd16(vi_srl16(a), vi_sra16(w)));
    }
  }

  // Widened bf16 with the panel's two vectors widened once per word for all rows.
  template <int R>
  static void bf16_words(int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* bp,
                         B (&acc0)[R], B (&acc1)[R]) {
    for (int64_t kk = 0; kk < kc; ++kk) {
      __builtin_prefetch(bp + (kk + Base::kPrefetchSteps) * NR, 0, 3);
      if constexpr (NR * 4 > 64)
        __builtin_prefetch(bp + (kk + Base::kPrefetchSteps) * NR + 16, 0, 3);
      const VecI w0 = vi_load(bp + kk * NR), w1 = vi_load(bp + kk * NR + W);
      if constexpr (kDot) {
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const VecI av = vi_bcast(a + r * a_row + kk * a_step);
          dot_bf16(acc0[r], av, w0);
          dot_bf16(acc1[r], av, w1);
        }
      } else {
        const B w0o = widen_odd(w0), w0e = widen_even(w0);
        const B w1o = widen_odd(w1), w1e = widen_even(w1);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const VecI av = vi_bcast(a + r * a_row + kk * a_step);
          const B ao = widen_odd(av), ae = widen_even(av);
          acc0[r] = fmadd(ao, w0o, acc0[r]);
          acc0[r] = fmadd(ae, w0e, acc0[r]);
          acc1[r] = fmadd(ao, w1o, acc1[r]);
          acc1[r] = fmadd(ae, w1e, acc1[r]);
        }
      }
    }
  }

  template <int R>
  static void int8_words(int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* bp,
                         VecI (&acc0)[R], VecI (&acc1)[R]) {
    for (int64_t kk = 0; kk < kc; ++kk) {
      __builtin_prefetch(bp + (kk + Base::kPrefetchSteps) * NR, 0, 3);
      if constexpr (NR * 4 > 64)
        __builtin_prefetch(bp + (kk + Base::kPrefetchSteps) * NR + 16, 0, 3);
      const VecI w0 = vi_load(bp + kk * NR), w1 = vi_load(bp + kk * NR + W);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const VecI av = vi_bcast(a + r * a_row + kk * a_step);
        dot_int8(acc0[r], av, w0);
        dot_int8(acc1[r], av, w1);
      }
    }
  }

  // tile [R, NR] (+)= A words · panel words over kc words. A word (r, kk) at a[r*a_row +
  // kk*a_step] (packed A: a_row 1, a_step MR; rows of A: a_row lda, a_step 1). int8 tiles hold
  // int32 (bit patterns in the float tile).
  template <WeightType kType, int R>
  static void micro(int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* bp,
                    float* tile, bool load) {
    if constexpr (kType == WeightType::bf16) {
      B acc0[R], acc1[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc0[r] = load ? B::load_aligned(tile + r * NR) : B(0.0f);
        acc1[r] = load ? B::load_aligned(tile + r * NR + W) : B(0.0f);
      }
      bf16_words<R>(kc, a, a_row, a_step, bp, acc0, acc1);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc0[r].store_aligned(tile + r * NR);
        acc1[r].store_aligned(tile + r * NR + W);
      }
    } else {
      VecI acc0[R], acc1[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc0[r] = load ? vi_load(tile + r * NR) : vi_set1(0);
        acc1[r] = load ? vi_load(tile + r * NR + W) : vi_set1(0);
      }
      int8_words<R>(kc, a, a_row, a_step, bp, acc0, acc1);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        vi_store(tile + r * NR, acc0[r]);
        vi_store(tile + r * NR + W, acc1[r]);
      }
    }
  }

  template <WeightType kType, int R>
  static void micro_rows(int64_t rows, int64_t k, const float* a, int64_t lda, const float* panel,
                         float* tile) {
    if constexpr (R > 0) {
      if (rows == R) {
        micro<kType, R>(k, a, lda, 1, panel, tile, false);
      } else {
        micro_rows<kType, R - 1>(rows, k, a, lda, panel, tile);
      }
    }
  }

  // ---- A's conversion ------------------------------------------------------------------------
  // Row r of A (k floats) -> words [ldq] (bf16 pairs, zero past k, the row padded to ldq words).
  static void bf16_row(const float* x, int64_t k, float* words, int64_t ldq) {
    int64_t i = 0;
#if defined(__AVX512F__)
    {
      const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
      const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
      const __m512i quiet = _mm512_set1_epi32(0x400000);
      for (; i + 16 <= k; i += 16) {  // 16 floats -> 8 words
        __m512i u = _mm512_loadu_si512(x + i);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        __m512i r = _mm512_add_epi32(
            u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
        r = _mm512_mask_or_epi32(r, nan, u, quiet);  // NaN: quiet bit set, not rounded
        // Each 64-bit lane (x[2j], x[2j+1]) -> word (bf16(x[2j]) | bf16(x[2j+1]) << 16).
        const __m512i lo = _mm512_and_si512(_mm512_srli_epi64(r, 16), _mm512_set1_epi64(0xffff));
        const __m512i hi =
            _mm512_and_si512(_mm512_srli_epi64(r, 32), _mm512_set1_epi64(0xffff0000));
        _mm256_store_si256(reinterpret_cast<__m256i*>(words + i / 2),
                           _mm512_cvtepi64_epi32(_mm512_or_si512(lo, hi)));
      }
    }
#endif
    for (; i < ldq * 2; i += 2) {
      const uint32_t lo = i < k ? round_bf16(x[i]) : 0u;
      const uint32_t hi = i + 1 < k ? round_bf16(x[i + 1]) : 0u;
      const uint32_t word = lo | (hi << 16);
      __builtin_memcpy(words + i / 2, &word, 4);
    }
  }

  // Row of A -> u8 quads [ldq words] and its scale and zero point: quantize_row_u8's rule
  // (kernels.h WeightType::int8), the same operations in the same order.
  static void int8_row(const float* x, int64_t k, float* words, int64_t ldq, float* scale,
                       int32_t* zero_point) {
    B vlo(0.0f), vhi(0.0f);
    int64_t i = 0;
    for (; i + W <= k; i += W) {
      const B v = load(x + i);
      vlo = xsimd::min(v, vlo);  // a NaN lane keeps the old value (minps returns the 2nd)
      vhi = xsimd::max(v, vhi);
    }
    alignas(64) float l[W], h[W];
    vlo.store_aligned(l);
    vhi.store_aligned(h);
    float lo = 0.0f, hi = 0.0f;
    for (int64_t j = 0; j < W; ++j) {
      lo = l[j] < lo ? l[j] : lo;
      hi = h[j] > hi ? h[j] : hi;
    }
    for (; i < k; ++i) {
      lo = x[i] < lo ? x[i] : lo;
      hi = x[i] > hi ? x[i] : hi;
    }
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !(s < kInf)) s = 1.0f;
    float z = __builtin_nearbyintf(-lo / s);
    z = z > 255.0f ? 255.0f : z < 0.0f ? 0.0f : z;
    *scale = s;
    *zero_point = static_cast<int32_t>(z);
    uint8_t* q = reinterpret_cast<uint8_t*>(words);
    i = 0;
#if defined(__AVX512F__)
    {
      const __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(z);
      const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
      for (; i + 16 <= k; i += 16) {
        __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + i), vs);
        v = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                          vz);
        v = _mm512_min_ps(_mm512_max_ps(v, zero), top);  // max(NaN, 0) = 0
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                         _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
      }
    }
#endif
    for (; i < k; ++i) {
      float v = __builtin_nearbyintf(x[i] / s) + z;
      v = v >= 0.0f ? v : 0.0f;
      v = v <= 255.0f ? v : 255.0f;
      q[i] = static_cast<uint8_t>(v);
    }
    for (; i < ldq * 4; ++i) q[i] = 0;
  }

  // ---- GEMM ----------------------------------------------------------------------------------
  // The int8 tile's dequantization: tile (int32) -> fp32 in place, then store_tile's epilogue.
  //   v = float(acc - z_i * colsum_j) * s_a[i] * s_w[j]
  static void dequantize_tile(float* tile, int64_t rows, int64_t j0, const float* row_scale,
                              const int32_t* row_zero, const PackedWeights& w) {
    const float* sw = w.scales() + j0;
    const int32_t* cs = w.column_sums() + j0;
    for (int64_t r = 0; r < rows; ++r) {
      float* t = tile + r * NR;
      int64_t j = 0;
#if defined(__AVX512F__)
      for (; j < NR; j += 16) {
        const __m512i d = _mm512_sub_epi32(
            _mm512_load_si512(t + j),
            _mm512_mullo_epi32(_mm512_set1_epi32(row_zero[r]), _mm512_loadu_si512(cs + j)));
        const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(row_scale[r]));
        _mm512_store_ps(t + j, _mm512_mul_ps(v, _mm512_loadu_ps(sw + j)));
      }
#elif defined(__AVX2__)
      for (; j < NR; j += 8) {
        const __m256i d = _mm256_sub_epi32(
            _mm256_load_si256(reinterpret_cast<const __m256i*>(t + j)),
            _mm256_mullo_epi32(_mm256_set1_epi32(row_zero[r]),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + j))));
        const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(row_scale[r]));
        _mm256_store_ps(t + j, _mm256_mul_ps(v, _mm256_loadu_ps(sw + j)));
      }
#endif
      for (; j < NR; ++j) {
        int32_t acc;
        __builtin_memcpy(&acc, t + j, 4);
        t[j] = static_cast<float>(acc - row_zero[r] * cs[j]) * row_scale[r] * sw[j];
      }
    }
  }

  template <WeightType kType, Activation kAct>
  static void gemm_lowp(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                        int64_t ldc, const Epilogue& ep) {
    const int64_t k = w.k(), n = w.n();
    const int64_t kw = w.words();
    const int64_t ldq = ceil_div(kw, 16) * 16;  // 64-byte rows of words
    // Slot 2: [m, ldq] words, then m scales and m zero points (int8).
    float* aq = detail::thread_scratch(static_cast<size_t>(m * ldq + 2 * m), 2);
    float* row_scale = aq + m * ldq;
    int32_t* row_zero = reinterpret_cast<int32_t*>(row_scale + m);
    detail::parallel_for(
        0, m, max_i64(1, kRowGrainFloats / max_i64(k, 1)), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            if constexpr (kType == WeightType::bf16) {
              bf16_row(a + r * lda, k, aq + r * ldq, ldq);
            } else {
              int8_row(a + r * lda, k, aq + r * ldq, ldq, row_scale + r, row_zero + r);
            }
          }
        });
    auto finish = [&](float* tile, int64_t rows, int64_t cols, int64_t i0, int64_t j0) {
      if constexpr (kType == WeightType::int8)
        dequantize_tile(tile, rows, j0, row_scale + i0, row_zero + i0, w);
      Base::template store_tile<kAct>(tile, rows, cols, i0, j0, c, ldc, ep);
    };
    if (m <= kFewRows) {
      Base::few_rows_loop(
          m, aq, ldq, w.data(), n, kw,
          [](int64_t rows, int64_t kk, const float* ar, int64_t ld, const float* panel,
             float* tile) { micro_rows<kType, MR>(rows, kk, ar, ld, panel, tile); },
          finish);
    } else {
      Base::blocked_loop(
          m, aq, ldq, w.data(), n, kw, c, ldc, ep,
          [](int64_t kc, const float* ap, const float* bp, float* tile, bool load) {
            micro<kType, MR>(kc, ap, 1, MR, bp, tile, load);
          },
          finish);
    }
  }

  template <WeightType kType>
  static void gemm_type(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                        int64_t ldc, const Epilogue& ep) {
    switch (ep.act) {
      case Activation::none:
        return gemm_lowp<kType, Activation::none>(m, a, lda, w, c, ldc, ep);
      case Activation::relu:
        return gemm_lowp<kType, Activation::relu>(m, a, lda, w, c, ldc, ep);
      case Activation::gelu_erf:
        return gemm_lowp<kType, Activation::gelu_erf>(m, a, lda, w, c, ldc, ep);
      case Activation::gelu_tanh:
        return gemm_lowp<kType, Activation::gelu_tanh>(m, a, lda, w, c, ldc, ep);
    }
  }

  // gemm() of the kernel table: the weights' type picks fp32 or the low-precision GEMM.
  static void gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                   int64_t ldc, const Epilogue& ep) {
    if (w.type() == WeightType::f32) return Base::gemm(m, a, lda, w, c, ldc, ep);
    if (m <= 0) return;
    if (w.isa() != kIsa) detail::throw_packed_isa_mismatch(kIsa, w.isa());
    if (w.type() == WeightType::bf16) return gemm_type<WeightType::bf16>(m, a, lda, w, c, ldc, ep);
    return gemm_type<WeightType::int8>(m, a, lda, w, c, ldc, ep);
  }
};

}  // namespace
}  // namespace tessera::kernels
