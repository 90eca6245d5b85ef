// Attention body: fused attention, flash style (online softmax over key tiles, masks in the
// tile): the few-query path, the transposed path and the direct decode path. Uses RowsBody
// (rows_body.hpp: row_max, exp_shifted, and exp_nonpos from MathBody) and GemmBody's register
// tile MR x NR (gemm_body.hpp). Rules: simd_body.hpp.
#pragma once

#include "kernels/gemm_body.hpp"
#include "kernels/rows_body.hpp"

namespace tessera::kernels {
namespace {

template <class Arch, Isa kIsa>
struct AttentionBody : RowsBody<Arch, kIsa> {
  using Base = RowsBody<Arch, kIsa>;
  using Base::exp_nonpos;
  using Base::exp_shifted;
  using Base::fmadd;
  using Base::load;
  using Base::load_partial;
  using Base::reduce_max;
  using Base::row_max;
  using Base::store;
  using Base::store_partial;
  using Base::W;
  using typename Base::B;
  // The GEMM micro-kernel's register tile: MR rows x NR = 2 vectors.
  static constexpr int64_t NR = GemmBody<Arch, kIsa>::NR;
  static constexpr int64_t MR = GemmBody<Arch, kIsa>::MR;

  // -------------------------------------------------------------------------------------------
  // Attention, flash style: per (b, h, block of queries), tiles of keys with a running max and
  // sum (online softmax); Q·Kᵀ and P·V run as register-tiled products.
  // -------------------------------------------------------------------------------------------
  // A task is kQueryBlock queries of one (b, h), processed as sub-blocks of MR query rows. For
  // each tile of kKeyTile = NR keys (the GEMM micro-kernel's register tile: MR x NR):
  //   1. the tile of K is copied transposed, Kt [D, NR] (keys past the tile's end zero), and
  //      the tile of V copied, Vt [NR, dp2] (dp2 = D rounded up to NR). Rows of K/V in a fused
  //      QKV buffer or a KV cache are 3-12 KiB apart; the copies are contiguous, L1-resident
  //      (AVX-512, D = 64: 8 + 8 KiB) and shared by the kQueryBlock queries (copy cost: 1/(2
  //      kQueryBlock) of the flops);
  //   2. scores S [MR, NR] = (scale q) · Kt: MR broadcasts x 2 vectors per head-dim step, the
  //      GEMM register tile;
  //   3. masks applied to S in the tile (causal, key padding, bool, additive);
  //   4. online softmax per row over the NR scores (2 vectors): new max, correction
  //      exp(old max - new max), P = exp(S - max), running sum;
  //   5. acc [MR, dp2] = acc * corr + P · Vt, NR columns of the head at a time (the same
  //      register tile, K = keys of the tile).
  // Workspace per thread: (2 kQueryBlock + NR) dp2 + D NR + MR NR floats, independent of S.
  static constexpr int64_t kKeyTile = NR;
  static constexpr int64_t kQueryBlock = NR;
  // Keys per online-softmax step of the transposed path (attention_block_t).
  static constexpr int64_t kKeyBlock = 4 * MR;
  // Query blocks with more than this many queries take the transposed path.
  static constexpr int64_t kFewQueries = NR / 4;
  static_assert(kKeyBlock >= NR && kKeyBlock >= MR && kKeyBlock * NR >= 32,
                "the attention paths share the scratch layout");

  // c[r*ldc + 0:NR] = (row_scale ? c * row_scale[r] : 0) + sum_{kk < kd} a[r*lda + kk] b[kk*ldb
  // + 0:NR] for r < R. c 64-byte aligned, ldc a multiple of W; b any alignment.
  template <int R>
  static void tile_product(int64_t kd, const float* a, int64_t lda, int64_t ka, const float* b,
                           int64_t ldb, float* c, int64_t ldc, const float* row_scale) {
    B acc0[R];
    B acc1[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (row_scale) {
        const B sc(row_scale[r]);
        acc0[r] = B::load_aligned(c + r * ldc) * sc;
        acc1[r] = B::load_aligned(c + r * ldc + W) * sc;
      } else {
        acc0[r] = B(0.0f);
        acc1[r] = B(0.0f);
      }
    }
    for (int64_t kk = 0; kk < kd; ++kk) {
      const B b0 = load(b + kk * ldb);  // unaligned loads: b may be V's rows read in place
      const B b1 = load(b + kk * ldb + W);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const B x(a[r * lda + kk * ka]);
        acc0[r] = fmadd(x, b0, acc0[r]);
        acc1[r] = fmadd(x, b1, acc1[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      acc0[r].store_aligned(c + r * ldc);
      acc1[r].store_aligned(c + r * ldc + W);
    }
  }
  // tile_product<rows> for a run-time rows in [1, R].
  template <int R>
  static void tile_product_rows(int64_t rows, int64_t kd, const float* a, int64_t lda, int64_t ka,
                                const float* b, int64_t ldb, float* c, int64_t ldc,
                                const float* row_scale) {
    if constexpr (R > 0) {
      if (rows == R) {
        tile_product<R>(kd, a, lda, ka, b, ldb, c, ldc, row_scale);
      } else {
        tile_product_rows<R - 1>(rows, kd, a, lda, ka, b, ldb, c, ldc, row_scale);
      }
    }
  }

  struct AttnScratch {
    float* qs;   // [kQueryBlock, dp2]  scale * q
    float* acc;  // [kQueryBlock, dp2]  running sum of p * v
    float* kt;   // [D, NR]             key tile, transposed
    float* vt;   // [NR, dp2]           value tile
    float* sc;   // [MR, NR]            scores, then probabilities, of one sub-block
  };

  static void attention_block(const AttentionArgs& g, int64_t b, int64_t h, int64_t t0, int64_t nq,
                              int64_t dp2, const AttnScratch& w) {
    const int64_t d = g.head_dim;
    const float* kb = g.k + b * g.k_sb + h * g.k_sh;  // key s at kb + s*k_ss: [S, D]
    const float* vb = g.v + b * g.v_sb + h * g.v_sh;  // [S, D]
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    const int64_t mask_bh = (b * g.heads + h) * g.m_sbh;
    float run_max[kQueryBlock];
    float run_sum[kQueryBlock];
    float corr[kQueryBlock];
    for (int64_t qi = 0; qi < nq; ++qi) {
      const float* q = g.q + b * g.q_sb + (t0 + qi) * g.q_st + h * g.q_sh;  // [D]
      float* qrow = w.qs + qi * dp2;
      for (int64_t j = 0; j < d; ++j) qrow[j] = g.scale * q[j];
      float* arow = w.acc + qi * dp2;
      for (int64_t j = 0; j < dp2; ++j) arow[j] = 0.0f;
      run_max[qi] = -kInf;
      run_sum[qi] = 0.0f;
    }
    // Keys past the last query's causal limit are never visited.
    int64_t key_end = g.kv_len;
    if (g.causal) key_end = min_i64(key_end, t0 + nq + g.causal_offset);
    const bool masked = kp || g.mask_bool || g.mask_add;
    for (int64_t s0 = first_unpadded(kp, key_end); s0 < key_end; s0 += NR) {
      const int64_t nk = min_i64(NR, key_end - s0);
      // 1. Kt [D, NR] (keys >= nk zero), Vt [nk, dp2] (columns >= D zero).
      for (int64_t j = 0; j < nk; ++j) {
        const float* kr = kb + (s0 + j) * g.k_ss;  // [D]
        for (int64_t x = 0; x < d; ++x) w.kt[x * NR + j] = kr[x];
        const float* vr = vb + (s0 + j) * g.v_ss;  // [D]
        float* vt = w.vt + j * dp2;
        for (int64_t x = 0; x < d; ++x) vt[x] = vr[x];
        for (int64_t x = d; x < dp2; ++x) vt[x] = 0.0f;
      }
      for (int64_t x = 0; x < d; ++x)
        for (int64_t j = nk; j < NR; ++j) w.kt[x * NR + j] = 0.0f;
      for (int64_t r0 = 0; r0 < nq; r0 += MR) {
        const int64_t rows = min_i64(MR, nq - r0);
        const int64_t t_first = t0 + r0;
        // Whole sub-block in the causal past of this tile? Then the tile is skipped.
        if (g.causal && s0 > t_first + rows - 1 + g.causal_offset) continue;
        // 2. S [rows, NR].
        tile_product_rows<MR>(rows, d, w.qs + r0 * dp2, dp2, 1, w.kt, NR, w.sc, NR, nullptr);
        // 3. Masks: keys past the tile, the causal future, padding, bool and additive masks.
        const bool partial = nk < NR || (g.causal && s0 + NR - 1 > t_first + g.causal_offset);
        if (partial || masked) {
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t t = t_first + r;
            float* srow = w.sc + r * NR;
            const int64_t vis = g.causal ? min_i64(nk, t + g.causal_offset + 1 - s0) : nk;
            for (int64_t j = max_i64(vis, 0); j < NR; ++j) srow[j] = -kInf;
            if (masked) {
              const int64_t mrow = mask_bh + t * g.m_st + s0;
              for (int64_t j = 0; j < vis; ++j) {
                if ((kp && kp[s0 + j]) || (g.mask_bool && g.mask_bool[mrow + j])) {
                  srow[j] = -kInf;
                } else if (g.mask_add) {
                  srow[j] += g.mask_add[mrow + j];
                }
              }
            }
          }
        }
        // 4. Online softmax, row by row over the NR = 2W scores.
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t qi = r0 + r;
          float* srow = w.sc + r * NR;
          const B s_lo = B::load_aligned(srow);
          const B s_hi = B::load_aligned(srow + W);
          const float tile_max = reduce_max(xsimd::max(s_lo, s_hi));
          const float new_max = tile_max > run_max[qi] ? tile_max : run_max[qi];
          // Nothing allowed yet: shift by 0, so P = exp(-inf) = 0 and no -inf - -inf = NaN.
          const float shift = new_max == -kInf ? 0.0f : new_max;
          const B bshift(shift);
          const B p_lo = exp_nonpos(s_lo - bshift);
          const B p_hi = exp_nonpos(s_hi - bshift);
          p_lo.store_aligned(srow);
          p_hi.store_aligned(srow + W);
          corr[qi] = exp_nonpos(B(run_max[qi] - shift)).get(0);  // 0 on the first allowed tile
          run_sum[qi] = run_sum[qi] * corr[qi] + xsimd::hadd(p_lo + p_hi);
          run_max[qi] = new_max;
        }
        // 5. acc = acc * corr + P · Vt, NR head columns at a time.
        for (int64_t c0 = 0; c0 < dp2; c0 += NR) {
          tile_product_rows<MR>(rows, nk, w.sc, NR, 1, w.vt + c0, dp2, w.acc + r0 * dp2 + c0, dp2,
                                corr + r0);
        }
      }
    }
    for (int64_t qi = 0; qi < nq; ++qi) {
      float* o = g.out + b * g.o_sb + (t0 + qi) * g.o_st + h * g.o_sh;  // [D]
      const float* a = w.acc + qi * dp2;
      // A query with no allowed key has run_sum == 0: a zero row, not 0/0.
      const B inv(run_sum[qi] > 0.0f ? 1.0f / run_sum[qi] : 0.0f);
      int64_t j = 0;
      for (; j + W <= d; j += W) store(o + j, B::load_aligned(a + j) * inv);
      if (j < d) store_partial(o + j, B::load_aligned(a + j) * inv, d - j);
    }
  }

  // Output accumulator vectors kept in registers while a tile's values are summed (4 vectors:
  // 4 accumulators + 1 broadcast + 1-4 loads, well within 16 registers).
  static constexpr int kAccVectors = 4;

  // Lane i of the result = hadd(rows[i]), i < W: W horizontal sums in ~W shuffles and adds.
  static B transpose_sum(const B* rows) {
#if XSIMD_VERSION_MAJOR == 8 && XSIMD_VERSION_MINOR == 1
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      // xsimd 8.1's AVX-512 haddp puts hadd(rows[p(i)]) in lane i, with p swapping lanes
      // 2<->4, 3<->5, 10<->12, 11<->13 (a shuffle-order bug, caught by the kernel tests).
      // p is an involution: feeding rows[p(i)] puts every sum in its lane.
      constexpr int kPerm[16] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
      B fixed[16];
      for (int i = 0; i < 16; ++i) fixed[i] = rows[kPerm[i]];
      return xsimd::haddp(fixed);
    }
#endif
    return xsimd::haddp(rows);
  }

  // sc[j] = qs . k_j for the nk keys k_j = kb + j*k_ss; qs is 64-byte aligned and zero-padded
  // to a multiple of W. W keys at a time: one accumulator per key, then one transposed sum
  // turns the W accumulators into W scores (no per-key horizontal sum).
  static void tile_scores(const float* qs, const float* kb, int64_t k_ss, int64_t nk, int64_t d,
                          float* sc) {
    const int64_t d_full = d / W * W;
    for (int64_t j0 = 0; j0 < nk; j0 += W) {
      const int64_t g = min_i64(W, nk - j0);
      B accs[W];
      int64_t i = 0;
      // Four keys at a time: four independent FMA chains hide the FMA latency.
      for (; i + 4 <= g; i += 4) {
        const float* k0 = kb + (j0 + i) * k_ss;  // [D] each
        const float* k1 = k0 + k_ss;
        const float* k2 = k1 + k_ss;
        const float* k3 = k2 + k_ss;
        B a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
        int64_t x = 0;
        for (; x < d_full; x += W) {
          const B qv = B::load_aligned(qs + x);
          a0 = fmadd(qv, load(k0 + x), a0);
          a1 = fmadd(qv, load(k1 + x), a1);
          a2 = fmadd(qv, load(k2 + x), a2);
          a3 = fmadd(qv, load(k3 + x), a3);
        }
        if (x < d) {
          const B qv = B::load_aligned(qs + x);
          a0 = fmadd(qv, load_partial(k0 + x, d - x, 0.0f), a0);
          a1 = fmadd(qv, load_partial(k1 + x, d - x, 0.0f), a1);
          a2 = fmadd(qv, load_partial(k2 + x, d - x, 0.0f), a2);
          a3 = fmadd(qv, load_partial(k3 + x, d - x, 0.0f), a3);
        }
        accs[i] = a0;
        accs[i + 1] = a1;
        accs[i + 2] = a2;
        accs[i + 3] = a3;
      }
      for (; i < W; ++i) {
        B acc(0.0f);
        if (i < g) {
          const float* kr = kb + (j0 + i) * k_ss;  // [D]
          int64_t x = 0;
          for (; x < d_full; x += W) acc = fmadd(B::load_aligned(qs + x), load(kr + x), acc);
          if (x < d) {
            acc = fmadd(B::load_aligned(qs + x), load_partial(kr + x, d - x, 0.0f), acc);
          }
        }
        accs[i] = acc;
      }
      const B scores = transpose_sum(accs);
      if (g == W) {
        store(sc + j0, scores);
      } else {
        store_partial(sc + j0, scores, g);
      }
    }
  }

  // acc[c0, c0 + NV*W) = acc * corr + sum_j p[j] v_j[c0, ...) over the nk keys v_j = vb + j*v_ss,
  // with the NV accumulators in registers. Columns >= d are never read from V (their
  // accumulator lanes stay 0).
  template <int NV>
  static void tile_values_chunk(float* acc, float corr, const float* p, int64_t nk, const float* vb,
                                int64_t v_ss, int64_t c0, int64_t d) {
    B a[NV];
    const B bc(corr);
#pragma GCC unroll 4
    for (int r = 0; r < NV; ++r) a[r] = B::load_aligned(acc + c0 + r * W) * bc;
    const bool full = c0 + NV * W <= d;
    for (int64_t j = 0; j < nk; ++j) {
      if (p[j] == 0.0f) continue;  // masked (or underflowed) key
      const B pj(p[j]);
      const float* vr = vb + j * v_ss + c0;  // [D - c0]
      if (full) {
#pragma GCC unroll 4
        for (int r = 0; r < NV; ++r) a[r] = fmadd(pj, load(vr + r * W), a[r]);
      } else {
#pragma GCC unroll 4
        for (int r = 0; r < NV; ++r) {
          const int64_t col = c0 + r * W;
          if (col + W <= d) {
            a[r] = fmadd(pj, load(vr + r * W), a[r]);
          } else if (col < d) {
            a[r] = fmadd(pj, load_partial(vr + r * W, d - col, 0.0f), a[r]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < NV; ++r) a[r].store_aligned(acc + c0 + r * W);
  }

  // acc[0, dp) = acc * corr + sum_j p[j] v_j[0, d), dp = d rounded up to W.
  static void tile_values(float* acc, float corr, const float* p, int64_t nk, const float* vb,
                          int64_t v_ss, int64_t d, int64_t dp) {
    for (int64_t c0 = 0; c0 < dp; c0 += kAccVectors * W) {
      switch (min_i64(kAccVectors, (dp - c0) / W)) {
        case 1:
          tile_values_chunk<1>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
        case 2:
          tile_values_chunk<2>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
        case 3:
          tile_values_chunk<3>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
        default:
          tile_values_chunk<kAccVectors>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
      }
    }
  }

  // The first key in [0, end) that is not padded (end if none): leading padded keys (left
  // padding) contribute nothing -- their scores are all -inf, so the running max, sum and
  // accumulators would stay as they are -- and the paths start after them.
  static int64_t first_unpadded(const uint8_t* kp, int64_t end) {
    int64_t s = 0;
    if (kp)
      while (s < end && kp[s] != 0) ++s;
    return s;
  }

  // Keys [0, end) with the padded keys at the end dropped (right padding costs nothing).
  static int64_t trim_padded(const uint8_t* kp, int64_t end) {
    while (end > 0 && kp[end - 1] != 0) --end;
    return end;
  }

  // The direct path, for a single query (a decode step): scores are dot products of q with
  // K's rows read in place, W keys at a time with one transposed horizontal sum; values summed
  // straight from V's rows. No copy of K or V: a decode step reads each byte of its head's
  // cache once.
  static constexpr int64_t kDirectKeyTile = 32;
  // One head's state on the direct path: its scaled query, accumulators, scores and running
  // max and sum.
  struct OneQuery {
    const float* kb;  // key s of this (b, h) at kb + s * k_ss: [S, D]
    const float* vb;  // [S, D]
    float* qs;        // [dp2]: scale * q, zero-padded
    float* acc;       // [dp2]
    float* sc;        // [kDirectKeyTile]
    int64_t mrow;     // mask row of the query (key 0)
    float run_max, run_sum;
  };

  static OneQuery one_query_begin(const AttentionArgs& g, int64_t b, int64_t h, int64_t t,
                                  int64_t dp2, float* qs, float* acc, float* sc) {
    const int64_t d = g.head_dim;
    const float* q = g.q + b * g.q_sb + t * g.q_st + h * g.q_sh;  // [D]
    for (int64_t j = 0; j < dp2; ++j) qs[j] = j < d ? g.scale * q[j] : 0.0f;
    for (int64_t j = 0; j < dp2; ++j) acc[j] = 0.0f;
    return OneQuery{g.k + b * g.k_sb + h * g.k_sh,
                    g.v + b * g.v_sb + h * g.v_sh,
                    qs,
                    acc,
                    sc,
                    (b * g.heads + h) * g.m_sbh + t * g.m_st,
                    -kInf,
                    0.0f};
  }

  // Keys [s0, s0 + nk) of one head: scores, masks, online softmax, values.
  static void one_query_tile(const AttentionArgs& g, const uint8_t* kp, OneQuery& st, int64_t s0,
                             int64_t nk) {
    const int64_t d = g.head_dim;
    float* sc = st.sc;
    tile_scores(st.qs, st.kb + s0 * g.k_ss, g.k_ss, nk, d, sc);
    if (kp || g.mask_bool || g.mask_add) {
      const int64_t mrow = st.mrow + s0;
      for (int64_t j = 0; j < nk; ++j) {
        if ((kp && kp[s0 + j]) || (g.mask_bool && g.mask_bool[mrow + j])) {
          sc[j] = -kInf;
        } else if (g.mask_add) {
          sc[j] += g.mask_add[mrow + j];
        }
      }
    }
    const float tile_max = row_max(sc, nk);
    if (tile_max == -kInf) return;  // nothing allowed in this tile
    const float new_max = tile_max > st.run_max ? tile_max : st.run_max;
    const float corr = exp_nonpos(B(st.run_max - new_max)).get(0);  // 0 on the first allowed tile
    st.run_sum = st.run_sum * corr + exp_shifted(sc, sc, nk, new_max);
    st.run_max = new_max;
    tile_values(st.acc, corr, sc, nk, st.vb + s0 * g.v_ss, g.v_ss, d, ceil_div(d, W) * W);
  }

  static void one_query_end(const AttentionArgs& g, const OneQuery& st, int64_t b, int64_t h,
                            int64_t t) {
    const int64_t d = g.head_dim;
    float* o = g.out + b * g.o_sb + t * g.o_st + h * g.o_sh;    // [D]
    const B inv(st.run_sum > 0.0f ? 1.0f / st.run_sum : 0.0f);  // no allowed key: a zero row
    int64_t j = 0;
    for (; j + W <= d; j += W) store(o + j, B::load_aligned(st.acc + j) * inv);
    if (j < d) store_partial(o + j, B::load_aligned(st.acc + j) * inv, d - j);
  }

  // The keys query t of batch row b attends to: [begin, end).
  static void one_query_keys(const AttentionArgs& g, const uint8_t* kp, int64_t t, int64_t& begin,
                             int64_t& end) {
    end = g.kv_len;
    if (g.causal) end = min_i64(end, t + 1 + g.causal_offset);
    if (kp) end = trim_padded(kp, end);
    begin = first_unpadded(kp, end);
  }

  static void attention_one_query(const AttentionArgs& g, int64_t b, int64_t h, int64_t t,
                                  int64_t dp2, const AttnScratch& w) {
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    OneQuery st = one_query_begin(g, b, h, t, dp2, w.qs, w.acc, w.sc);
    int64_t begin, end;
    one_query_keys(g, kp, t, begin, end);
    for (int64_t s0 = begin; s0 < end; s0 += kDirectKeyTile)
      one_query_tile(g, kp, st, s0, min_i64(kDirectKeyTile, end - s0));
    one_query_end(g, st, b, h, t);
  }

  // The direct path for heads [h0, h1) of one query at once (q_len = 1: decode): key tiles
  // outer, heads inner, so each tile's K and V rows (all heads of a position are one contiguous
  // row of a KV cache) stream from memory once, contiguously, instead of one head's slice per
  // pass. Each head runs exactly attention_one_query's operations: the same bits.
  // Scratch: (h1 - h0) x (2 dp2 + kDirectKeyTile) floats.
  static void attention_one_query_heads(const AttentionArgs& g, int64_t b, int64_t h0, int64_t h1,
                                        int64_t dp2, float* scratch) {
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    constexpr int64_t kMaxHeads = 64;
    OneQuery st[kMaxHeads];
    const int64_t per = 2 * dp2 + kDirectKeyTile;
    for (int64_t h = h0; h < h1; ++h) {
      float* base = scratch + (h - h0) * per;
      st[h - h0] = one_query_begin(g, b, h, 0, dp2, base, base + dp2, base + 2 * dp2);
    }
    int64_t begin, end;
    one_query_keys(g, kp, 0, begin, end);
    for (int64_t s0 = begin; s0 < end; s0 += kDirectKeyTile) {
      for (int64_t h = h0; h < h1; ++h)
        one_query_tile(g, kp, st[h - h0], s0, min_i64(kDirectKeyTile, end - s0));
    }
    for (int64_t h = h0; h < h1; ++h) one_query_end(g, st[h - h0], b, h, 0);
  }

  // The transposed path, for query blocks of more than kFewQueries (up to NR) queries: the
  // queries are the VECTOR dimension. Per task, Qt [D, NR] = scale * qᵀ (once). Per block of
  // kKeyBlock keys:
  //   St [keys, NR] = K · Qt: the register tile with MR keys broadcast straight from K's rows
  //     (no copy of K) against 2 vectors of queries;
  //   masks; per query (a vector lane) the block's max, correction and sum over the keys: all
  //     vector operations, no horizontal reduction;
  //   acc [NR, dp2] = acc * corr + P · Vt, the register tile with MR queries broadcast from
  //     Pt (k stride NR) against Vt, a contiguous copy of the block's values [keys, dp2].
  static void attention_block_t(const AttentionArgs& g, int64_t b, int64_t h, int64_t t0,
                                int64_t nq, int64_t dp2, const AttnScratch& w) {
    const int64_t d = g.head_dim;
    const float* kb = g.k + b * g.k_sb + h * g.k_sh;  // key s at kb + s*k_ss: [S, D]
    const float* vb = g.v + b * g.v_sb + h * g.v_sh;  // [S, D]
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    const int64_t mask_bh = (b * g.heads + h) * g.m_sbh;
    float* qt = w.qs;  // [D, NR]
    float* st = w.sc;  // [kKeyBlock, NR]
    for (int64_t x = 0; x < d; ++x)
      for (int64_t q = 0; q < NR; ++q)
        qt[x * NR + q] =
            q < nq ? g.scale * g.q[b * g.q_sb + (t0 + q) * g.q_st + h * g.q_sh + x] : 0.0f;
    for (int64_t i = 0; i < nq * dp2; ++i) w.acc[i] = 0.0f;
    B m_lo(-kInf), m_hi(-kInf);  // running max per query
    B l_lo(0.0f), l_hi(0.0f);    // running sum per query
    alignas(64) float corr[NR];
    int64_t key_end = g.kv_len;
    if (g.causal) key_end = min_i64(key_end, t0 + nq + g.causal_offset);
    if (kp) key_end = trim_padded(kp, key_end);
    for (int64_t s0 = first_unpadded(kp, key_end); s0 < key_end; s0 += kKeyBlock) {
      const int64_t nk = min_i64(kKeyBlock, key_end - s0);
      for (int64_t j0 = 0; j0 < nk; j0 += MR) {
        tile_product_rows<MR>(min_i64(MR, nk - j0), d, kb + (s0 + j0) * g.k_ss, g.k_ss, 1, qt, NR,
                              st + j0 * NR, NR, nullptr);
      }
      // Masks. Causal: key s allowed for query t iff s <= t + offset; only blocks reaching past
      // the first query's limit need the check.
      // A padded key masks its whole row of St (two vector stores).
      const bool causal_part = g.causal && s0 + nk - 1 > t0 + g.causal_offset;
      const bool per_element = g.mask_bool || g.mask_add;
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t s = s0 + j;
        float* srow = st + j * NR;
        if (kp && kp[s]) {
          B(-kInf).store_aligned(srow);
          B(-kInf).store_aligned(srow + W);
          continue;
        }
        if (!causal_part && !per_element) continue;
        for (int64_t q = 0; q < nq; ++q) {
          const int64_t t = t0 + q;
          if (g.causal && s > t + g.causal_offset) {
            srow[q] = -kInf;
          } else if (per_element) {
            const int64_t mi = mask_bh + t * g.m_st + s;
            if (g.mask_bool && g.mask_bool[mi]) {
              srow[q] = -kInf;
            } else if (g.mask_add) {
              srow[q] += g.mask_add[mi];
            }
          }
        }
      }
      B c_lo = m_lo, c_hi = m_hi;
      for (int64_t j = 0; j < nk; ++j) {
        c_lo = xsimd::max(c_lo, B::load_aligned(st + j * NR));
        c_hi = xsimd::max(c_hi, B::load_aligned(st + j * NR + W));
      }
      // Nothing allowed yet for a query: shift by 0, so P = exp(-inf) = 0, never -inf - -inf.
      const B sh_lo = xsimd::select(c_lo == B(-kInf), B(0.0f), c_lo);
      const B sh_hi = xsimd::select(c_hi == B(-kInf), B(0.0f), c_hi);
      const B corr_lo = exp_nonpos(m_lo - sh_lo);  // 0 on a query's first allowed block
      const B corr_hi = exp_nonpos(m_hi - sh_hi);
      corr_lo.store_aligned(corr);
      corr_hi.store_aligned(corr + W);
      m_lo = c_lo;
      m_hi = c_hi;
      B sum_lo(0.0f), sum_hi(0.0f);
      for (int64_t j = 0; j < nk; ++j) {
        const B p_lo = exp_nonpos(B::load_aligned(st + j * NR) - sh_lo);
        const B p_hi = exp_nonpos(B::load_aligned(st + j * NR + W) - sh_hi);
        p_lo.store_aligned(st + j * NR);
        p_hi.store_aligned(st + j * NR + W);
        sum_lo += p_lo;
        sum_hi += p_hi;
      }
      l_lo = fmadd(l_lo, corr_lo, sum_lo);
      l_hi = fmadd(l_hi, corr_hi, sum_hi);
      // The block's values [nk, dp2]: V's rows in place when D is a multiple of NR (every NR
      // columns lie inside the head), else a zero-padded copy Vt.
      const float* vsrc = vb + s0 * g.v_ss;
      int64_t ldv = g.v_ss;
      if (d != dp2) {
        for (int64_t j = 0; j < nk; ++j) {
          const float* vr = vb + (s0 + j) * g.v_ss;  // [D]
          float* vt = w.vt + j * dp2;
          for (int64_t x = 0; x < d; ++x) vt[x] = vr[x];
          for (int64_t x = d; x < dp2; ++x) vt[x] = 0.0f;
        }
        vsrc = w.vt;
        ldv = dp2;
      }
      for (int64_t q0 = 0; q0 < nq; q0 += MR) {
        for (int64_t c0 = 0; c0 < dp2; c0 += NR) {
          tile_product_rows<MR>(min_i64(MR, nq - q0), nk, st + q0, 1, NR, vsrc + c0, ldv,
                                w.acc + q0 * dp2 + c0, dp2, corr + q0);
        }
      }
    }
    alignas(64) float sums[NR];
    l_lo.store_aligned(sums);
    l_hi.store_aligned(sums + W);
    for (int64_t q = 0; q < nq; ++q) {
      float* o = g.out + b * g.o_sb + (t0 + q) * g.o_st + h * g.o_sh;  // [D]
      const float* a = w.acc + q * dp2;
      // A query with no allowed key has a zero sum: a zero row, not 0/0.
      const B inv(sums[q] > 0.0f ? 1.0f / sums[q] : 0.0f);
      int64_t j = 0;
      for (; j + W <= d; j += W) store(o + j, B::load_aligned(a + j) * inv);
      if (j < d) store_partial(o + j, B::load_aligned(a + j) * inv, d - j);
    }
  }

  static void attention(const AttentionArgs& g) {
    if (g.batch <= 0 || g.heads <= 0 || g.q_len <= 0 || g.head_dim <= 0) return;
    const int64_t dp2 = ceil_div(g.head_dim, NR) * NR;
    if (g.q_len == 1) {
      // Decode: (b, group of heads) tasks, groups of up to 64 heads, cut further only as far as
      // the threads need work (a lone batch row on 2 threads: 2 groups).
      const int64_t threads = detail::in_parallel_job() ? 1 : num_threads();
      int64_t groups = ceil_div(g.heads, 64);
      if (g.batch < threads) groups = max_i64(groups, min_i64(g.heads, ceil_div(threads, g.batch)));
      const int64_t per_group = ceil_div(g.heads, groups);
      groups = ceil_div(g.heads, per_group);
      const size_t scratch_floats = static_cast<size_t>(per_group * (2 * dp2 + kDirectKeyTile));
      const int64_t task_work = 4 * g.head_dim * per_group * max_i64(g.kv_len, 1);
      detail::parallel_for(
          0, g.batch * groups, max_i64(1, kMinChunkWork / task_work), [&](int64_t lo, int64_t hi) {
            float* scratch = detail::thread_scratch(scratch_floats);
            for (int64_t task = lo; task < hi; ++task) {
              const int64_t b = task / groups, h0 = (task % groups) * per_group;
              attention_one_query_heads(g, b, h0, min_i64(g.heads, h0 + per_group), dp2, scratch);
            }
          });
      return;
    }
    const int64_t qblocks = ceil_div(g.q_len, kQueryBlock);
    const int64_t tasks = g.batch * g.heads * qblocks;  // (b, h, query block)
    const size_t scratch_floats =
        static_cast<size_t>(2 * NR * dp2 + kKeyBlock * dp2 + kKeyBlock * NR + g.head_dim * NR);
    // ~4 D flops per (query, key) pair; causal masking only makes tasks cheaper.
    const int64_t task_work = 4 * g.head_dim * min_i64(kQueryBlock, g.q_len) * max_i64(g.kv_len, 1);
    detail::parallel_for(0, tasks, max_i64(1, kMinChunkWork / task_work),
                         [&](int64_t lo, int64_t hi) {
                           float* base = detail::thread_scratch(scratch_floats);
                           AttnScratch w;
                           w.qs = base;              // [NR, dp2] (qs) or [D, NR] (qt; D <= dp2)
                           w.acc = w.qs + NR * dp2;  // [NR, dp2]
                           w.vt = w.acc + NR * dp2;  // [kKeyBlock >= NR, dp2]
                           w.sc = w.vt + kKeyBlock * dp2;  // [kKeyBlock >= MR, NR]
                           w.kt = w.sc + kKeyBlock * NR;   // [D, NR]
                           for (int64_t task = lo; task < hi; ++task) {
                             const int64_t qb = task % qblocks;
                             const int64_t bh = task / qblocks;
                             const int64_t t0 = qb * kQueryBlock;
                             const int64_t nq = min_i64(kQueryBlock, g.q_len - t0);
                             if (nq > kFewQueries) {
                               attention_block_t(g, bh / g.heads, bh % g.heads, t0, nq, dp2, w);
                             } else if (nq == 1) {
                               attention_one_query(g, bh / g.heads, bh % g.heads, t0, dp2, w);
                             } else {
                               attention_block(g, bh / g.heads, bh % g.heads, t0, nq, dp2, w);
                             }
                           }
                         });
  }
};

}  // namespace
}  // namespace tessera::kernels
