// Row body: the row kernels (softmax_rows, with the row_max / exp_shifted that attention's
// online softmax shares; add_layernorm_rows; embedding) and the element-wise add. Uses MathBody
// (math_body.hpp) for exp_nonpos. Rules: simd_body.hpp.
#pragma once

#include <cmath>

#include "kernels/math_body.hpp"

namespace tessera::kernels {
namespace {

template <class Arch, Isa kIsa>
struct RowsBody : MathBody<Arch, kIsa> {
  using Base = MathBody<Arch, kIsa>;
  using Base::exp_nonpos;
  using Base::load;
  using Base::load_partial;
  using Base::reduce_max;
  using Base::store;
  using Base::store_partial;
  using Base::W;
  using typename Base::B;

  // -------------------------------------------------------------------------------------------
  // Row kernels
  // -------------------------------------------------------------------------------------------
  static int64_t row_grain(int64_t n) { return max_i64(1, kRowGrainFloats / max_i64(n, 1)); }

  // max(x[0..n)); -inf for n = 0 or an all -inf row. Four independent max chains.
  static float row_max(const float* x, int64_t n) {
    B m0(-kInf), m1(-kInf), m2(-kInf), m3(-kInf);
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      m0 = xsimd::max(m0, load(x + i));
      m1 = xsimd::max(m1, load(x + i + W));
      m2 = xsimd::max(m2, load(x + i + 2 * W));
      m3 = xsimd::max(m3, load(x + i + 3 * W));
    }
    for (; i + W <= n; i += W) m0 = xsimd::max(m0, load(x + i));
    if (i < n) m0 = xsimd::max(m0, load_partial(x + i, n - i, -kInf));
    return reduce_max(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
  }

  // y[i] = exp(x[i] - m) for i < n (x may equal y), m >= max(x); returns the sum (two vector
  // partial sums over alternating vectors, then hadd: the order depends on n only). Shared by
  // softmax and the attention's online softmax.
  static float exp_shifted(const float* x, float* y, int64_t n, float m) {
    const B bm(m);
    B s0(0.0f), s1(0.0f);
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const B e0 = exp_nonpos(load(x + i) - bm);
      const B e1 = exp_nonpos(load(x + i + W) - bm);
      store(y + i, e0);
      store(y + i + W, e1);
      s0 += e0;
      s1 += e1;
    }
    if (i + W <= n) {
      const B e = exp_nonpos(load(x + i) - bm);
      store(y + i, e);
      s0 += e;
      i += W;
    }
    if (i < n) {
      const B e = exp_nonpos(load_partial(x + i, n - i, -kInf) - bm);  // padding: exp(-inf) = 0
      store_partial(y + i, e, n - i);
      s1 += e;
    }
    return xsimd::hadd(s0 + s1);
  }

  // y = softmax(x) over n >= 1 floats; x may equal y. Three sweeps over an L1-resident row:
  // max (read), exp + sum (read, write), scale (read, write); the row is read from L2/memory
  // once, the other sweeps hit L1. The cost is exp's arithmetic (~16 vector ops per vector).
  static void softmax_row(const float* x, float* y, int64_t n) {
    const float m = row_max(x, n);
    if (m == -kInf) {  // every entry -inf: defined as a zero row
      for (int64_t j = 0; j < n; ++j) y[j] = 0.0f;
      return;
    }
    const B inv(1.0f / exp_shifted(x, y, n, m));
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      store(y + i, load(y + i) * inv);
      store(y + i + W, load(y + i + W) * inv);
    }
    for (; i + W <= n; i += W) store(y + i, load(y + i) * inv);
    if (i < n) store_partial(y + i, load_partial(y + i, n - i, 0.0f) * inv, n - i);
  }

  static void softmax_rows(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y,
                           int64_t ldy) {
    if (rows <= 0 || n <= 0) return;
    detail::parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) softmax_row(x + r * ldx, y + r * ldy, n);
    });
  }

  // Widening of a float batch into two double batches (lanes [0, W/2) and [W/2, W)).
  using BD = xsimd::batch<double, Arch>;
  static void widen(const B& v, BD& lo, BD& hi) {
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      lo = BD(_mm512_cvtps_pd(_mm512_castps512_ps256(v)));
      hi = BD(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    } else if constexpr (std::is_base_of_v<xsimd::avx, Arch>) {
      lo = BD(_mm256_cvtps_pd(_mm256_castps256_ps128(v)));
      hi = BD(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    } else {
      lo = BD(_mm_cvtps_pd(v));
      hi = BD(_mm_cvtps_pd(_mm_movehl_ps(v, v)));
    }
  }
  static double reduce_sum_d(const BD& v) {
    alignas(64) double buf[BD::size];
    v.store_aligned(buf);
    double t = 0.0;
    for (size_t l = 0; l < BD::size; ++l) t += buf[l];  // lane order: deterministic
    return t;
  }

  // One row of add_layernorm_rows. Two sweeps:
  //  1. s = x + residual, stored to `sbuf` (sum_out if requested, else y), while the sums of
  //     d = s - K and d^2 are accumulated in DOUBLE (K = s[0], a shift that keeps the sums near
  //     the data's spread). Each float s is exact in double and d's rounding is ~1e-16
  //     relative, so mean = K + sum d / n and var = sum d^2 / n - (sum d / n)^2 lose at most
  //     ~n 2^-52 (1 + (mean - K)^2 / var) relative: far below float's eps for any row a float
  //     can hold (this replaces a per-vector Welford division).
  //  2. y = (s - mean) * rstd * gamma + beta, reading s back from sbuf.
  // Aliasing: x[j] and residual[j] are read before sbuf[j] is written; y[j] is written after
  // sbuf[j] is read, so y / sum_out may alias x or residual.
  static void layernorm_row(const float* x, const float* res, const float* gamma, const float* beta,
                            float eps, float* sbuf, float* y, int64_t n) {
    const float k0 = res ? x[0] + res[0] : x[0];
    const BD bk(static_cast<double>(k0));
    BD s1a(0.0), s1b(0.0), s2a(0.0), s2b(0.0);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      B s = load(x + i);
      if (res) s += load(res + i);
      store(sbuf + i, s);
      BD lo, hi;
      widen(s, lo, hi);
      lo -= bk;
      hi -= bk;
      s1a += lo;
      s1b += hi;
      s2a = xsimd::fma(lo, lo, s2a);
      s2b = xsimd::fma(hi, hi, s2b);
    }
    double sum1 = reduce_sum_d(s1a + s1b);
    double sum2 = reduce_sum_d(s2a + s2b);
    if (i < n) {
      const int64_t r = n - i;
      B s = load_partial(x + i, r, 0.0f);
      if (res) s += load_partial(res + i, r, 0.0f);
      store_partial(sbuf + i, s, r);
      alignas(64) float ls[W];
      s.store_aligned(ls);
      for (int64_t l = 0; l < r; ++l) {
        const double d = static_cast<double>(ls[l]) - static_cast<double>(k0);
        sum1 += d;
        sum2 += d * d;
      }
    }
    const double inv_n = 1.0 / static_cast<double>(n);
    const double dmean = sum1 * inv_n;
    const double tot_mean = static_cast<double>(k0) + dmean;
    const double var_raw = sum2 * inv_n - dmean * dmean;
    const double var = var_raw > 0.0 ? var_raw : 0.0;  // biased, as PyTorch
    const B bmean(static_cast<float>(tot_mean));
    const B brstd(static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps))));
    for (i = 0; i + W <= n; i += W) {
      B v = (load(sbuf + i) - bmean) * brstd;
      if (gamma) v *= load(gamma + i);
      if (beta) v += load(beta + i);
      store(y + i, v);
    }
    if (i < n) {
      const int64_t r = n - i;
      B v = (load_partial(sbuf + i, r, 0.0f) - bmean) * brstd;
      if (gamma) v *= load_partial(gamma + i, r, 0.0f);
      if (beta) v += load_partial(beta + i, r, 0.0f);
      store_partial(y + i, v, r);
    }
  }

  static void add_layernorm_rows(int64_t rows, int64_t n, const float* x, int64_t ldx,
                                 const float* residual, int64_t ldr, const float* gamma,
                                 const float* beta, float eps, float* y, int64_t ldy,
                                 float* sum_out, int64_t ld_sum) {
    if (rows <= 0 || n <= 0) return;
    detail::parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* yr = y + r * ldy;
        float* sbuf = sum_out ? sum_out + r * ld_sum : yr;
        layernorm_row(x + r * ldx, residual ? residual + r * ldr : nullptr, gamma, beta, eps, sbuf,
                      yr, n);
      }
    });
  }

  static void embedding(int64_t rows, const int64_t* ids, const float* table, int64_t dim,
                        float scale, const int64_t* positions, const float* pos_table, float* out,
                        int64_t ldo) {
    if (rows <= 0 || dim <= 0) return;
    const B bscale(scale);
    detail::parallel_for(0, rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* e = table + ids[r] * dim;                                  // [dim]
        const float* p = pos_table ? pos_table + positions[r] * dim : nullptr;  // [dim]
        float* o = out + r * ldo;                                               // [dim]
        int64_t i = 0;
        for (; i + W <= dim; i += W) {
          B v = load(e + i) * bscale;
          if (p) v += load(p + i);
          store(o + i, v);
        }
        if (i < dim) {
          const int64_t rem = dim - i;
          B v = load_partial(e + i, rem, 0.0f) * bscale;
          if (p) v += load_partial(p + i, rem, 0.0f);
          store_partial(o + i, v, rem);
        }
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // Element-wise add
  // -------------------------------------------------------------------------------------------
  static void add(int64_t n, const float* a, const float* b, float* y) {
    if (n <= 0) return;
    detail::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      int64_t i = lo;
      for (; i + W <= hi; i += W) store(y + i, load(a + i) + load(b + i));
      if (i < hi) {
        const int64_t r = hi - i;
        store_partial(y + i, load_partial(a + i, r, 0.0f) + load_partial(b + i, r, 0.0f), r);
      }
    });
  }
};

}  // namespace
}  // namespace tessera::kernels
