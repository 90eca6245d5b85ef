// GEMM body: C = epilogue(A · Wᵀ). Weight packing (pack_weights, pack_weights_kn), the
// register-tile micro-kernels (MR x NR), the cache-blocked path (A packing, blocking_for /
// gemm_blocking, items over threads), the streaming few-row path, the fused epilogue (bias,
// activation, residual) and gemm(). Uses MathBody (math_body.hpp) for the activations; the
// register tile (MR, NR) is also attention's (attention_body.hpp). Rules: simd_body.hpp.
#pragma once

#include "kernels/math_body.hpp"

namespace tessera::kernels {
namespace {

// Which A the blocked GEMM's packed-A scratch of this thread (thread_scratch slot 1) holds: the
// gemm call (a number from g_gemm_calls, unique per call) and the row item. The pool may hand a
// thread several items of one call in separate chunks; the tag lets it reuse the row item it
// packed for an earlier one instead of packing again.
struct PackedATag {
  uint64_t call = 0;
  int64_t row_item = -1;
};
thread_local PackedATag t_packed_a;
uint64_t g_gemm_calls = 0;  // updated with __atomic builtins (no std::atomic template here)

template <class Arch, Isa kIsa>
struct GemmBody : MathBody<Arch, kIsa> {
  using Base = MathBody<Arch, kIsa>;
  using Base::fmadd;
  using Base::load;
  using Base::load_partial;
  using Base::store;
  using Base::store_partial;
  using Base::W;
  using typename Base::B;
  // Base::act<kAct> is called as Base::template act<kAct>: a using-declaration cannot say that
  // a dependent base's member is a template.

  // -------------------------------------------------------------------------------------------
  // GEMM: C[M,N] = epilogue(A[M,K] · Wᵀ)
  // -------------------------------------------------------------------------------------------
  // Register tile MR x NR, NR = 2 vectors. Per k step the micro-kernel loads 2 vectors of the
  // packed panel, broadcasts MR scalars of A and issues 2*MR independent FMAs.
  //  * AVX-512 (32 zmm): MR = 8 -> 16 accumulators + 2 panel vectors + 1 broadcast = 19 regs.
  //    16 independent FMA chains cover FMA latency (4 cycles) x throughput (1-2 zmm/cycle).
  //  * AVX2 / SSE2 (16 registers): MR = 6 -> 12 accumulators + 2 + 1 = 15 regs (the classic
  //    6x16 Haswell tile); 12 chains cover 4-5 cycles x 2 FMA/cycle.
  static constexpr int64_t NR = 2 * W;
  static constexpr int64_t MR = W >= 16 ? 8 : 6;

  // Packed layout: panel p holds columns [p*NR, p*NR + NR) of C, K x NR, k-major:
  //   packed[(p*K + kk)*NR + jj] = W[p*NR + jj, kk]   (0 where p*NR + jj >= N).
  // Every panel row is NR*4 >= vector bytes from a 64-byte aligned base: aligned loads.
  static void pack_weights(const float* w, int64_t n, int64_t k, int64_t ldw, PackedWeights& out) {
    const int64_t panels = ceil_div(n, NR);
    detail::allocate_packed(out, n, k, NR, kIsa, static_cast<size_t>(panels * k * NR));
    float* dst = out.mutable_data();  // [panels, K, NR]
    const int64_t grain = max_i64(1, kMinChunkWork / (k * NR));
    detail::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* panel = dst + p * k * NR;  // [K, NR]
        const int64_t j0 = p * NR;
        const int64_t cols = min_i64(NR, n - j0);
        for (int64_t jj = 0; jj < NR; ++jj) {
          if (jj < cols) {
            const float* src = w + (j0 + jj) * ldw;  // row j0+jj of W: [K]
            for (int64_t kk = 0; kk < k; ++kk) panel[kk * NR + jj] = src[kk];
          } else {
            for (int64_t kk = 0; kk < k; ++kk) panel[kk * NR + jj] = 0.0f;
          }
        }
      }
    });
  }

  // The same layout from W stored transposed, wt [K, N] row-major (row stride ldw >= N): each
  // panel row is a contiguous run of a row of wt.
  static void pack_weights_kn(const float* wt, int64_t k, int64_t n, int64_t ldw,
                              PackedWeights& out) {
    const int64_t panels = ceil_div(n, NR);
    detail::allocate_packed(out, n, k, NR, kIsa, static_cast<size_t>(panels * k * NR));
    float* dst = out.mutable_data();  // [panels, K, NR]
    const int64_t grain = max_i64(1, kMinChunkWork / (k * NR));
    detail::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* panel = dst + p * k * NR;  // [K, NR]
        const int64_t j0 = p * NR;
        const int64_t cols = min_i64(NR, n - j0);
        for (int64_t kk = 0; kk < k; ++kk) {
          const float* src = wt + kk * ldw + j0;  // row kk of wt, columns [j0, j0 + cols)
          float* d = panel + kk * NR;
          for (int64_t jj = 0; jj < cols; ++jj) d[jj] = src[jj];
          for (int64_t jj = cols; jj < NR; ++jj) d[jj] = 0.0f;
        }
      }
    });
  }

  // Software prefetch distance of the streaming micro-kernel: 4 KiB ahead at NR = 32 (about
  // DRAM latency x one core's share of the bandwidth: ~100 ns x 27 GB/s = 2.7 KB in flight).
  static constexpr int64_t kPrefetchSteps = 4096 / (NR * 4);

  // tile[r, :] = sum_kk a[r*lda + kk] * panel[kk, :] for r < R, summed in k order.
  // tile: [MR, NR] (rows >= R untouched). R is a template parameter so the accumulators are
  // fully unrolled into registers.
  template <int R>
  static void micro_kernel(int64_t k, const float* a, int64_t lda, const float* panel,
                           float* tile) {
    B acc0[R];
    B acc1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r] = B(0.0f);
      acc1[r] = B(0.0f);
    }
    for (int64_t kk = 0; kk < k; ++kk) {
      // Prefetch the panel kPrefetchSteps k steps ahead (past its end: harmless, a prefetch
      // never faults).
      __builtin_prefetch(panel + (kk + kPrefetchSteps) * NR, 0, 0);
      if constexpr (NR * 4 > 64) __builtin_prefetch(panel + (kk + kPrefetchSteps) * NR + 16, 0, 0);
      const B b0 = B::load_aligned(panel + kk * NR);
      const B b1 = B::load_aligned(panel + kk * NR + W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const B av(a[r * lda + kk]);
        acc0[r] = fmadd(av, b0, acc0[r]);
        acc1[r] = fmadd(av, b1, acc1[r]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r].store_aligned(tile + r * NR);
      acc1[r].store_aligned(tile + r * NR + W);
    }
  }

  // micro_kernel<rows> for a run-time rows in [1, R].
  template <int R>
  static void micro_kernel_rows(int64_t rows, int64_t k, const float* a, int64_t lda,
                                const float* panel, float* tile) {
    if constexpr (R > 0) {
      if (rows == R) {
        micro_kernel<R>(k, a, lda, panel, tile);
      } else {
        micro_kernel_rows<R - 1>(rows, k, a, lda, panel, tile);
      }
    }
  }

  // C[i0 + r, j0 + j] = epilogue(tile[r, j]) for r < rows, j < cols. Never touches C outside
  // the tile; a residual aliasing C is read before the same element is written.
  template <Activation kAct>
  static void store_tile(const float* tile, int64_t rows, int64_t cols, int64_t i0, int64_t j0,
                         float* c, int64_t ldc, const Epilogue& ep) {
    for (int64_t r = 0; r < rows; ++r) {
      float* crow = c + (i0 + r) * ldc + j0;
      const float* rrow = ep.residual ? ep.residual + (i0 + r) * ep.ld_residual + j0 : nullptr;
      for (int64_t h = 0; h < cols; h += W) {
        const int64_t nv = min_i64(W, cols - h);
        B v = B::load_aligned(tile + r * NR + h);
        if (nv == W) {
          if (ep.bias) v += load(ep.bias + j0 + h);
          v = Base::template act<kAct>(v);
          if (rrow) v += load(rrow + h);
          store(crow + h, v);
        } else {
          if (ep.bias) v += load_partial(ep.bias + j0 + h, nv, 0.0f);
          v = Base::template act<kAct>(v);
          if (rrow) v += load_partial(rrow + h, nv, 0.0f);
          store_partial(crow + h, v, nv);
        }
      }
    }
  }

  // ---- Blocked path (M > kFewRows): the GotoBLAS / BLIS loop nest ----------------------------
  // The roles map onto BLIS's with A and B swapped: our vector operand is the packed weight
  // panel (BLIS's A micro-panel, streamed from L2), our broadcast operand is A (BLIS's B
  // micro-panel, resident in L1). Per call:
  //   1. C is cut into items of up to MC rows x NC columns (item = unit of OpenMP work).
  //   2. A's rows are packed into MR-row micro-panels (rows past M zero), so the MR broadcasts
  //      of one k step read 4*MR contiguous bytes: by each thread, for the row item it works
  //      on, one K block at a time just before its first use.
  //   3. Per item: for each KC block of K: for each MR row block: for each NR panel: the
  //      micro-kernel accumulates an MR x NR tile over the KC block.
  // Cache blocks, from the cache sizes the CPU reports (gemm_blocking(); see kernels.h):
  //   * KC: the A micro-panel of one K block, KC x MR x 4 B, fills a quarter of L1d (8 KiB
  //     at MR = 8 on a 32 KiB L1d: KC = 256; 48 KiB: KC = 384), so it stays in L1 while the
  //     item's panels stream past it, next to the streamed W lines and the C tile. Long
  //     enough that loading/storing the MR x NR accumulators between K blocks (2 x MR
  //     vectors) costs < 1 % of the KC x 2MR FMAs; a larger KC halves that again and, on a
  //     core that retires two 512-bit FMAs per cycle, the per-block overhead weighs double.
  //   * NC: the item's W block, KC x NC x 4 B, fills a quarter of L2 while the item's row
  //     blocks each sweep it.
  //   * MC: the item's A block and its accumulators, MC x (KC + NC) x 4 B, another quarter of
  //     L2 (half of L2 in all; the rest holds C lines, the next block's prefetches and the
  //     other streams). The whole packed W (e.g. 9 MiB for 768 x 3072) is L3-resident and
  //     read once per row item: at MC = 128, 1/64 byte per flop, ~2 GB/s at peak.
  // Unknown sizes: 32 KiB L1d, 512 KiB L2. K is cut into equal blocks of at most KC (a
  // multiple of 8: the AVX-512 A packing transposes 8 k steps at a time).
  static GemmBlocking blocking_for(const CacheSizes& caches) {
    const int64_t l1 = caches.l1d > 0 ? caches.l1d : int64_t{32} << 10;
    const int64_t l2 = caches.l2 > 0 ? caches.l2 : int64_t{512} << 10;
    const int64_t kc = max_i64(64, min_i64(1024, l1 / 4 / (MR * 4) / 8 * 8));
    const int64_t nc = NR * max_i64(1, min_i64(32, l2 / 4 / (kc * NR * 4)));
    const int64_t mc = MR * max_i64(1, min_i64(128, l2 / 4 / ((kc + nc) * 4) / MR));
    return GemmBlocking{MR, NR, kc, mc, nc};
  }
  static GemmBlocking gemm_blocking(const CacheSizes& caches) {
    return blocking_for(caches);
  }
  // Items are smaller than MC x NC when needed to give every thread several of them. Each
  // C element is accumulated by one thread, in k order, in one register chain (reloading
  // the accumulator between K blocks is exact), so the result is independent of the thread
  // count and of the blocking. The epilogue is applied to a tile right after its last K block,
  // while it is in L1.
  // M up to this many rows takes the few-row (streaming) path: a decode step of up to 4 row
  // blocks (continuous batching's batches of sequences) reads every weight from memory once.
  static constexpr int64_t kFewRows = 4 * MR;

  // ap [K, MR] = rows [i0, i0 + rows) of A, k-major, rows past `rows` zero.
  static void pack_a_block(const float* a, int64_t lda, int64_t rows, int64_t k, float* ap) {
#ifdef __AVX512F__  // only the AVX-512 translation unit declares the 256-bit types
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && MR == 8) {
      // 8 k steps at a time: an 8 x 8 in-register transpose (the scalar strided copy below
      // costs ~1 cycle per element, ~7 % of the FMA work when N = 768).
      int64_t kk = 0;
      for (; kk + 8 <= k; kk += 8) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
          r[i] = i < rows ? _mm256_loadu_ps(a + i * lda + kk) : _mm256_setzero_ps();
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float* d = ap + kk * MR;  // column j (k step kk + j) at d + 8 j
        _mm256_storeu_ps(d + 0, _mm256_permute2f128_ps(s0, s4, 0x20));
        _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(s1, s5, 0x20));
        _mm256_storeu_ps(d + 16, _mm256_permute2f128_ps(s2, s6, 0x20));
        _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s3, s7, 0x20));
        _mm256_storeu_ps(d + 32, _mm256_permute2f128_ps(s0, s4, 0x31));
        _mm256_storeu_ps(d + 40, _mm256_permute2f128_ps(s1, s5, 0x31));
        _mm256_storeu_ps(d + 48, _mm256_permute2f128_ps(s2, s6, 0x31));
        _mm256_storeu_ps(d + 56, _mm256_permute2f128_ps(s3, s7, 0x31));
      }
      for (; kk < k; ++kk)
        for (int64_t r = 0; r < MR; ++r) ap[kk * MR + r] = r < rows ? a[r * lda + kk] : 0.0f;
      return;
    }
#endif
    for (int64_t r = 0; r < MR; ++r) {
      float* d = ap + r;
      if (r < rows) {
        const float* src = a + r * lda;  // [K]
        for (int64_t kk = 0; kk < k; ++kk) d[kk * MR] = src[kk];
      } else {
        for (int64_t kk = 0; kk < k; ++kk) d[kk * MR] = 0.0f;
      }
    }
  }

  // Prefetch distance of micro_kernel_packed over its weight panel: 4 KiB ahead at NR = 32, as
  // the streaming kernel's (the loads cover L3 latency on an item's first row-block sweep).
  static constexpr int64_t kPanelPrefetchSteps = 4096 / (NR * 4);

  // tile [MR, NR] = (load ? tile : 0) + sum over kc steps of ap[kk, :]ᵀ · bp[kk, :], one FMA
  // chain per accumulator. ap: [kc, MR] (L1), bp: [kc, NR] (a KC block of a weight panel).
  static void micro_kernel_packed(int64_t kc, const float* ap, const float* bp, float* tile,
                                  bool load) {
    B acc0[MR];
    B acc1[MR];
    if (load) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        acc0[r] = B::load_aligned(tile + r * NR);
        acc1[r] = B::load_aligned(tile + r * NR + W);
      }
    } else {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        acc0[r] = B(0.0f);
        acc1[r] = B(0.0f);
      }
    }
    for (int64_t kk = 0; kk < kc; ++kk) {
      // The panel's lines kPanelPrefetchSteps k steps ahead: on a row block's first sweep over
      // an item's W block they come from L3 (~50-80 ns, ~40 k steps of FMAs on a 2-FMA/cycle
      // core), later from L2. Past the block's end this prefetches the panel's next K block
      // (or harmlessly past the panel: a prefetch never faults). One line per 64 bytes.
      __builtin_prefetch(bp + (kk + kPanelPrefetchSteps) * NR, 0, 3);
      if constexpr (NR * 4 > 64)
        __builtin_prefetch(bp + (kk + kPanelPrefetchSteps) * NR + 16, 0, 3);
      const B b0 = B::load_aligned(bp + kk * NR);
      const B b1 = B::load_aligned(bp + kk * NR + W);
      const float* av = ap + kk * MR;
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const B x(av[r]);
        acc0[r] = fmadd(x, b0, acc0[r]);
        acc1[r] = fmadd(x, b1, acc1[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      acc0[r].store_aligned(tile + r * NR);
      acc1[r].store_aligned(tile + r * NR + W);
    }
  }

  // Prefetches the lines of C (and of the residual) that store_tile will touch for this tile,
  // issued before the tile's last K block: the stores' read-for-ownership misses (C is usually
  // in L3 or DRAM, written once per call) then overlap the block's FMAs instead of stalling the
  // store buffer after them (a tile's last block is ~KC x 2 x MR FMAs: ~0.6 us on one Zen core).
  static void prefetch_tile_outputs(int64_t rows, int64_t cols, int64_t i0, int64_t j0,
                                    const float* c, int64_t ldc, const Epilogue& ep) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* crow = c + (i0 + r) * ldc + j0;
      for (int64_t h = 0; h < cols; h += 16) __builtin_prefetch(crow + h, 1, 3);
      __builtin_prefetch(crow + cols - 1, 1, 3);  // an unaligned row's last line
      if (ep.residual) {
        const float* rrow = ep.residual + (i0 + r) * ep.ld_residual + j0;
        for (int64_t h = 0; h < cols; h += 16) __builtin_prefetch(rrow + h, 0, 3);
        __builtin_prefetch(rrow + cols - 1, 0, 3);
      }
    }
  }

  // Width (in panels) of the blocked path's items when `threads` share row_items x panels: the
  // widest, up to NC / NR, whose split over the threads is balanced within 1/16 (the busiest
  // thread's ceil(items / threads) items of up to that width, against the mean share). Wide
  // items matter: each A micro-panel is loaded into L1 once per K block per item and reused
  // for the item's panels; at 2 panels per item (what "about 8 items per thread" gave for
  // N = 768 on 2 threads) the micro-kernel also streams A from L2, and 2-thread GEMMs ran at
  // ~80 % of oneDNN on a Zen 5. Equal-width items balance a dynamic split as well as a static one.
  static int64_t balanced_item_panels(int64_t row_items, int64_t panels, int64_t threads,
                                      int64_t max_panels) {
    for (int64_t ip = max_panels; ip > 1; --ip) {
      const int64_t items = row_items * ceil_div(panels, ip);
      if (items < threads) continue;
      const int64_t busiest = ceil_div(items, threads) * ip;  // row-item x panel units
      if (16 * busiest * threads <= 17 * row_items * panels) return ip;
    }
    return 1;
  }

  template <Activation kAct>
  static void gemm_blocked(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                           int64_t ldc, const Epilogue& ep) {
    blocked_loop(
        m, a, lda, w.data(), w.n(), w.k(), c, ldc, ep,
        [](int64_t kc, const float* ap, const float* bp, float* tile, bool load) {
          micro_kernel_packed(kc, ap, bp, tile, load);
        },
        [&](float* tile, int64_t rows, int64_t cols, int64_t i0, int64_t j0) {
          store_tile<kAct>(tile, rows, cols, i0, j0, c, ldc, ep);
        });
  }

  // The blocked loop nest over a packed A of `k` 32-bit elements per row (fp32 values, or the
  // bf16 pairs / u8 quads of the low-precision GEMMs, whose panels hold words of the same
  // layout): micro(kc, ap, bp, tile, load) accumulates a tile over a K block,
  // finish(tile, rows, cols, i0, j0) stores a finished tile through the epilogue.
  template <class Micro, class Finish>
  static void blocked_loop(int64_t m, const float* a, int64_t lda, const float* packed, int64_t n,
                           int64_t k, float* c, int64_t ldc, const Epilogue& ep, Micro micro,
                           Finish finish) {
    // packed: [panels, K, NR]
    const int64_t panels = ceil_div(n, NR);
    const int64_t row_blocks = ceil_div(m, MR);

    // 2. Items: row_items x col_items, each up to MC rows (whole row blocks) x NC columns (whole
    //    panels). With several threads, items narrow only as far as balance needs (see
    //    balanced_item_panels).
    const GemmBlocking bl = blocking_for(gemm_cache_sizes());
    const int64_t row_items = ceil_div(row_blocks, bl.mc / MR);
    int64_t item_panels = bl.nc / NR;
    // K blocks: ceil(K / KC) of equal length (a multiple of 8), no short tail block.
    const int64_t k_blocks = ceil_div(k, bl.kc);
    const int64_t kc_len = min_i64(bl.kc, ceil_div(ceil_div(k, k_blocks), 8) * 8);
    // Threads worth using: each should get at least 4 kMinChunkWork flops (a small GEMM stays
    // on one thread, where a fork/join would cost more than it saves).
    const int64_t threads =
        min_i64(num_threads(), max_i64(1, 2 * m * panels * NR * k / (4 * kMinChunkWork)));
    if (threads > 1) item_panels = balanced_item_panels(row_items, panels, threads, item_panels);
    const int64_t col_items = ceil_div(panels, item_panels);
    const int64_t max_item_blocks = ceil_div(row_blocks, row_items);
    const size_t acc_floats = static_cast<size_t>(max_item_blocks * item_panels * MR * NR);
    const size_t ap_floats = static_cast<size_t>(max_item_blocks * k * MR);

    // One thread: a single chunk (parallel_for then runs it on the calling thread).
    const int64_t item_grain = threads > 1 ? 1 : row_items * col_items;
    const uint64_t call = __atomic_add_fetch(&g_gemm_calls, 1, __ATOMIC_RELAXED);
    detail::parallel_for(0, row_items * col_items, item_grain, [&](int64_t t0, int64_t t1) {
      float* acc = detail::thread_scratch(acc_floats, 0);  // [item blocks, item panels, MR, NR]
      // 1. A packed by the thread that uses it, into MR-row micro-panels of its row item:
      //    ap [item blocks, K, MR] (rows past M zero), each K block just before its first use
      //    (hot in L1/L2 for the micro-kernel) and kept for the thread's next items of the same
      //    row item (t_packed_a says which it holds). No serial packing step and no barrier
      //    before the items; with several threads a row item may be packed once per thread
      //    that computes some of its columns.
      float* ap = detail::thread_scratch(ap_floats, 1);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ri = t / col_items;
        const int64_t ci = t % col_items;
        const int64_t rb0 = ri * row_blocks / row_items;  // row blocks [rb0, rb1)
        const int64_t rb1 = (ri + 1) * row_blocks / row_items;
        const int64_t p0 = ci * item_panels;  // panels [p0, p1)
        const int64_t p1 = min_i64(panels, p0 + item_panels);
        const int64_t np = p1 - p0;
        const bool pack = t_packed_a.call != call || t_packed_a.row_item != ri;
        t_packed_a = {call, ri};
        for (int64_t k0 = 0; k0 < k; k0 += kc_len) {
          const int64_t kc = min_i64(kc_len, k - k0);
          const bool last = k0 + kc == k;
          for (int64_t rb = rb0; rb < rb1; ++rb) {
            float* apb = ap + ((rb - rb0) * k + k0) * MR;  // [kc, MR]
            const int64_t i0 = rb * MR;
            if (pack) pack_a_block(a + i0 * lda + k0, lda, min_i64(MR, m - i0), kc, apb);
            for (int64_t p = p0; p < p1; ++p) {
              float* tile = acc + ((rb - rb0) * np + (p - p0)) * MR * NR;  // [MR, NR]
              const int64_t rows = min_i64(MR, m - i0);
              const int64_t cols = min_i64(NR, n - p * NR);
              if (last) prefetch_tile_outputs(rows, cols, i0, p * NR, c, ldc, ep);
              micro(kc, apb, packed + (p * k + k0) * NR, tile, k0 > 0);
              if (last) finish(tile, rows, cols, i0, p * NR);
            }
          }
        }
      }
    });
  }

  // ---- Few-row path (M <= kFewRows: a decode step) -------------------------------------------
  // Bandwidth-bound: every weight byte is used M times, so the kernel streams each packed panel
  // once from memory (whole K, A's rows read straight from L1/L2) and prefetches kPrefetchSteps
  // k steps ahead; for M > MR the panel's further row blocks read it again from L2 (a panel is
  // K x NR x 4 bytes: 96 KiB at K = 768 and NR = 32). The threads split the panels (the N
  // range). Each C element is one k-order chain, as in the blocked path: the same bits.
  template <Activation kAct>
  static void gemm_few_rows(int64_t m, const float* a, int64_t lda, const PackedWeights& w,
                            float* c, int64_t ldc, const Epilogue& ep) {
    few_rows_loop(
        m, a, lda, w.data(), w.n(), w.k(),
        [](int64_t rows, int64_t k, const float* a_rows, int64_t ld, const float* panel,
           float* tile) { micro_kernel_rows<MR>(rows, k, a_rows, ld, panel, tile); },
        [&](float* tile, int64_t rows, int64_t cols, int64_t i0, int64_t j0) {
          store_tile<kAct>(tile, rows, cols, i0, j0, c, ldc, ep);
        });
  }

  // The few-row loop over rows of `k` 32-bit elements (see blocked_loop):
  // micro(rows, k, a_rows, lda, panel, tile) computes a whole-K tile of up to MR rows.
  template <class Micro, class Finish>
  static void few_rows_loop(int64_t m, const float* a, int64_t lda, const float* packed, int64_t n,
                            int64_t k, Micro micro, Finish finish) {
    const int64_t panels = ceil_div(n, NR);  // packed: [panels, K, NR]
    const int64_t grain = max_i64(1, kMinChunkWork / (2 * m * NR * k));
    detail::parallel_for(0, panels, grain, [&](int64_t q0, int64_t q1) {
      alignas(64) float tile[MR * NR];  // [MR, NR]
      for (int64_t p = q0; p < q1; ++p)
        for (int64_t i0 = 0; i0 < m; i0 += MR) {
          const int64_t rows = min_i64(MR, m - i0);
          micro(rows, k, a + i0 * lda, lda, packed + p * k * NR, tile);
          finish(tile, rows, min_i64(NR, n - p * NR), i0, p * NR);
        }
    });
  }

  template <Activation kAct>
  static void gemm_impl(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                        int64_t ldc, const Epilogue& ep) {
    if (m <= kFewRows) {
      gemm_few_rows<kAct>(m, a, lda, w, c, ldc, ep);
    } else {
      gemm_blocked<kAct>(m, a, lda, w, c, ldc, ep);
    }
  }

  static void gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                   int64_t ldc, const Epilogue& ep) {
    if (m <= 0) return;
    if (w.isa() != kIsa) detail::throw_packed_isa_mismatch(kIsa, w.isa());
    switch (ep.act) {
      case Activation::none:
        return gemm_impl<Activation::none>(m, a, lda, w, c, ldc, ep);
      case Activation::relu:
        return gemm_impl<Activation::relu>(m, a, lda, w, c, ldc, ep);
      case Activation::gelu_erf:
        return gemm_impl<Activation::gelu_erf>(m, a, lda, w, c, ldc, ep);
      case Activation::gelu_tanh:
        return gemm_impl<Activation::gelu_tanh>(m, a, lda, w, c, ldc, ep);
    }
  }
};

}  // namespace
}  // namespace tessera::kernels
