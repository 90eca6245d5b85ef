// RNN body: the kernels of the `rnn_attention` family. Packing of the recurrent weights
// (pack_recurrent), the fused GRU / LSTM cell (rnn_cell: W_hh h and the gate non-linearities in
// one pass), a bidirectional layer's whole recurrence (rnn_bidirectional: one thread per
// direction) and the fused additive attention of a decoder step (additive_attention). Uses
// RowsBody (rows_body.hpp) for exp/tanh and the softmax helpers. Rules: simd_body.hpp.
#pragma once

#include "kernels/rows_body.hpp"

namespace tessera::kernels {
namespace {

template <class Arch, Isa kIsa>
struct RnnBody : RowsBody<Arch, kIsa> {
  using Base = RowsBody<Arch, kIsa>;
  using Base::exp;
  using Base::exp_shifted;
  using Base::fmadd;
  using Base::load;
  using Base::load_partial;
  using Base::row_max;
  using Base::store;
  using Base::store_partial;
  using Base::tanh;
  using Base::W;
  using typename Base::B;

  // Rows of one register tile of the cell: RB rows x G gates accumulators of W units, plus the
  // G weight vectors of the current k and one broadcast.
  //  * AVX-512 (32 zmm): RB = 4 -> LSTM 16 + 4 + 1 = 21 registers (GRU 12 + 3 + 1).
  //  * AVX2 / SSE2 (16 registers): RB = 2 -> LSTM 8 + 4 + 1 = 13 (GRU 6 + 3 + 1).
  // Each weight vector loaded is used by RB FMAs; at batch 1 the loop is bound by the loads
  // (G vector loads per G FMAs), which is what streaming the matrix from cache costs anyway.
  static constexpr int64_t RB = W >= 16 ? 4 : 2;
  static constexpr int64_t PW = W;  // hidden units per panel

  static int64_t gates(RnnCell cell) { return cell == RnnCell::gru ? 3 : 4; }

  // Panel p (units [p*PW, p*PW + PW)) is [H, G, PW] k-major:
  //   packed[((p*H + k)*G + g)*PW + u] = W_hh[g*H + p*PW + u, k]   (0 where p*PW + u >= H).
  static void pack_recurrent(const float* w, RnnCell cell, int64_t hidden, int64_t ldw,
                             PackedWeights& out) {
    const int64_t g_count = gates(cell), panels = ceil_div(hidden, PW);
    detail::allocate_packed(out, g_count * hidden, hidden, PW, kIsa,
                            static_cast<size_t>(panels * hidden * g_count * PW));
    float* dst = out.mutable_data();
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t k = 0; k < hidden; ++k)
        for (int64_t g = 0; g < g_count; ++g)
          for (int64_t u = 0; u < PW; ++u) {
            const int64_t unit = p * PW + u;
            dst[((p * hidden + k) * g_count + g) * PW + u] =
                unit < hidden ? w[(g * hidden + unit) * ldw + k] : 0.0f;
          }
  }

  static B sigmoid(const B& x) { return B(1.0f) / (B(1.0f) + exp(-x)); }

  // Lanes [0, n) of p (n <= PW): a full load when n == PW.
  static B load_n(const float* p, int64_t n) {
    return n == PW ? load(p) : load_partial(p, n, 0.0f);
  }
  static void store_n(float* p, const B& v, int64_t n) {
    if (n == PW)
      store(p, v);
    else
      store_partial(p, v, n);
  }

  // Rows [r0, r0 + kRows) of panel p: accumulate W_hh h for every gate, then the cell.
  template <int64_t kG, int64_t kRows>
  static void cell_tile(const float* panel, int64_t p, const RnnCellArgs& a, int64_t r0) {
    const int64_t h_size = a.hidden, u0 = p * PW, n = min_i64(PW, h_size - u0);
    B acc[kRows * kG];
    for (int64_t g = 0; g < kG; ++g) {
      const B bias = a.b_hh ? load_n(a.b_hh + g * h_size + u0, n) : B(0.0f);
      for (int64_t r = 0; r < kRows; ++r) acc[r * kG + g] = bias;
    }
    const float* hp[kRows];
    for (int64_t r = 0; r < kRows; ++r) hp[r] = a.h[r0 + r];
    for (int64_t k = 0; k < h_size; ++k) {
      const float* wk = panel + k * kG * PW;
      B wv[kG];
      for (int64_t g = 0; g < kG; ++g) wv[g] = load(wk + g * PW);
      for (int64_t r = 0; r < kRows; ++r) {
        const B hk(hp[r][k]);
        for (int64_t g = 0; g < kG; ++g) acc[r * kG + g] = fmadd(wv[g], hk, acc[r * kG + g]);
      }
    }
    for (int64_t r = 0; r < kRows; ++r) {
      const float* x = a.x[r0 + r] + u0;
      B* ac = acc + r * kG;
      if constexpr (kG == 3) {  // GRU: r, z, n
        const B rg = sigmoid(load_n(x, n) + ac[0]);
        const B zg = sigmoid(load_n(x + h_size, n) + ac[1]);
        const B ng = tanh(fmadd(rg, ac[2], load_n(x + 2 * h_size, n)));
        const B hprev = load_n(hp[r] + u0, n);
        store_n(a.h_out[r0 + r] + u0, fmadd(zg, hprev - ng, ng), n);
      } else {  // LSTM: i, f, g, o
        const B ig = sigmoid(load_n(x, n) + ac[0]);
        const B fg = sigmoid(load_n(x + h_size, n) + ac[1]);
        const B gg = tanh(load_n(x + 2 * h_size, n) + ac[2]);
        const B og = sigmoid(load_n(x + 3 * h_size, n) + ac[3]);
        const B c = fmadd(fg, load_n(a.c[r0 + r] + u0, n), ig * gg);
        store_n(a.c_out[r0 + r] + u0, c, n);
        store_n(a.h_out[r0 + r] + u0, og * tanh(c), n);
      }
    }
  }

  template <int64_t kG>
  static void cell_panels(const PackedWeights& w, const RnnCellArgs& a, int64_t p0, int64_t p1) {
    const int64_t h_size = a.hidden;
    for (int64_t p = p0; p < p1; ++p) {
      const float* panel = w.data() + p * h_size * kG * PW;
      int64_t r = 0;
      for (; r + RB <= a.rows; r += RB) cell_tile<kG, RB>(panel, p, a, r);
      for (; r < a.rows; ++r) cell_tile<kG, 1>(panel, p, a, r);
    }
  }

  static void rnn_cell(const PackedWeights& w, const RnnCellArgs& a) {
    if (w.isa() != kIsa) detail::throw_packed_isa_mismatch(kIsa, w.isa());
    if (a.rows <= 0) return;
    const int64_t g_count = gates(a.cell), panels = ceil_div(a.hidden, PW);
    // Panels are the parallel unit: each unit's gates are summed by one thread in k order.
    const int64_t per_panel = 2 * a.rows * g_count * PW * a.hidden;
    const int64_t grain = max_i64(1, kMinChunkWork / max_i64(per_panel, 1));
    detail::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
      if (g_count == 3)
        cell_panels<3>(w, a, p0, p1);
      else
        cell_panels<4>(w, a, p0, p1);
    });
  }

  // One direction of a layer over every time step (serially: each step needs the last).
  static void run_direction(RnnCell cell, int64_t batch, int64_t seq, int64_t hidden,
                            const int64_t* lengths, const RnnDirectionArgs& d, bool reverse) {
    const int64_t g_count = gates(cell), gh = g_count * hidden;
    // Workspace: five pointer arrays of `batch` entries, then H zeros (the initial state).
    float** ptrs = reinterpret_cast<float**>(d.workspace);
    const float** xs = const_cast<const float**>(ptrs);
    const float** hs = const_cast<const float**>(ptrs + batch);
    float** hos = ptrs + 2 * batch;
    const float** cs = const_cast<const float**>(ptrs + 3 * batch);
    float** cos = ptrs + 4 * batch;
    float* zeros = d.workspace + 10 * batch;
    for (int64_t j = 0; j < hidden; ++j) zeros[j] = 0.0f;
    if (cell == RnnCell::lstm)
      for (int64_t j = 0; j < batch * hidden; ++j) d.c_state[j] = 0.0f;
    int64_t longest = 0;
    for (int64_t b = 0; b < batch; ++b) longest = max_i64(longest, lengths[b]);
    RnnCellArgs a;
    a.cell = cell;
    a.hidden = hidden;
    a.x = xs;
    a.h = hs;
    a.h_out = hos;
    a.c = cs;
    a.c_out = cos;
    a.b_hh = d.b_hh;
    for (int64_t i = 0; i < longest; ++i) {
      int64_t rows = 0;
      for (int64_t b = 0; b < batch; ++b) {
        if (i >= lengths[b]) continue;
        const int64_t t = reverse ? lengths[b] - 1 - i : i;
        const int64_t prev = reverse ? t + 1 : t - 1;
        xs[rows] = d.x + (b * seq + t) * gh;
        hs[rows] = i == 0 ? zeros : d.out + (b * seq + prev) * d.ld_out;
        hos[rows] = d.out + (b * seq + t) * d.ld_out;
        cs[rows] = d.c_state ? d.c_state + b * hidden : nullptr;
        cos[rows] = d.c_state ? d.c_state + b * hidden : nullptr;
        ++rows;
      }
      a.rows = rows;
      rnn_cell(*d.w_hh, a);
    }
  }

  static void rnn_bidirectional(RnnCell cell, int64_t batch, int64_t seq, int64_t hidden,
                                const int64_t* lengths, const RnnDirectionArgs& fwd,
                                const RnnDirectionArgs& bwd) {
    // One chunk per direction: with 2 threads they run at once, each step's cell then serial
    // inside (no nested parallelism).
    detail::parallel_for(0, 2, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t d = lo; d < hi; ++d)
        run_direction(cell, batch, seq, hidden, lengths, d == 0 ? fwd : bwd, d == 1);
    });
  }

  static void additive_attention(const AdditiveAttentionArgs& a) {
    const int64_t s_len = a.src_len, na = a.attention_dim, nd = a.memory_dim;
    const int64_t per_row = s_len * (na * 4 + nd * 2);
    const int64_t grain = max_i64(1, kMinChunkWork / max_i64(per_row, 1));
    detail::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t s = a.src_rows ? a.src_rows[r] : r;
        const int64_t len = a.lengths[s];
        const float* q = a.query + r * a.ldq;
        const float* keys = a.keys + s * s_len * na;
        const float* mem = a.memory + s * s_len * nd;
        float* alpha = a.alpha + r * a.ld_alpha;
        // Scores: two vector partial sums over alternating vectors of A, then hadd (the order
        // depends on A only).
        for (int64_t j = 0; j < len; ++j) {
          const float* kj = keys + j * na;
          B s0(0.0f), s1(0.0f);
          int64_t i = 0;
          for (; i + 2 * W <= na; i += 2 * W) {
            s0 = fmadd(load(a.v + i), tanh(load(q + i) + load(kj + i)), s0);
            s1 = fmadd(load(a.v + i + W), tanh(load(q + i + W) + load(kj + i + W)), s1);
          }
          if (i + W <= na) {
            s0 = fmadd(load(a.v + i), tanh(load(q + i) + load(kj + i)), s0);
            i += W;
          }
          if (i < na) {
            const int64_t n = na - i;
            s1 = fmadd(load_partial(a.v + i, n, 0.0f),
                       tanh(load_partial(q + i, n, 0.0f) + load_partial(kj + i, n, 0.0f)), s1);
          }
          alpha[j] = xsimd::hadd(s0 + s1);
        }
        const float m = row_max(alpha, len);
        const float inv = 1.0f / exp_shifted(alpha, alpha, len, m);
        for (int64_t j = 0; j < len; ++j) alpha[j] *= inv;
        for (int64_t j = len; j < s_len; ++j) alpha[j] = 0.0f;
        // Context: sum_j alpha_j mem_j, j in order, W columns at a time.
        float* ctx = a.context + r * a.ldc;
        int64_t i = 0;
        for (; i + W <= nd; i += W) {
          B acc(0.0f);
          for (int64_t j = 0; j < len; ++j) acc = fmadd(B(alpha[j]), load(mem + j * nd + i), acc);
          store(ctx + i, acc);
        }
        if (i < nd) {
          const int64_t n = nd - i;
          B acc(0.0f);
          for (int64_t j = 0; j < len; ++j)
            acc = fmadd(B(alpha[j]), load_partial(mem + j * nd + i, n, 0.0f), acc);
          store_partial(ctx + i, acc, n);
        }
      }
    });
  }
};

}  // namespace
}  // namespace tessera::kernels
