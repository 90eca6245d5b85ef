// The attention test cases, shared by test_attention.cpp, test_threads.cpp and
// test_dispatch.cpp: a case (sizes, masks, layout), its data and double reference, and one run
// against a table.
#pragma once

#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

#include "tests/kernels/kernel_test_util.hpp"

namespace kernel_test {

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------
enum class Layout {
  separate,  // q [B, T, H*D], k/v [B, S, H*D], out [B, T, H*D + 3]
  fused,     // one [B, T, 3E] buffer (needs S == T): q = +0, k = +E, v = +2E
  cache,     // q [B, H, T, D], k/v [B, H, S + 5, D] (a KV cache with room), out [B, T, H, D]
};
enum class MaskKind { none, broadcast, per_head };

struct AttnCase {
  int64_t batch, heads, q_len, kv_len, head_dim;
  bool causal = false;
  int64_t offset = 0;
  bool key_padding = false;
  MaskKind mask_bool = MaskKind::none;
  MaskKind mask_add = MaskKind::none;  // must equal mask_bool's kind when both are used
  Layout layout = Layout::separate;
  float scale = 0.0f;           // 0: 1/sqrt(head_dim)
  bool mask_whole_row = false;  // one (b, h, t) row fully masked by mask_bool
  bool pad_last_batch = false;  // every key of the last batch padded: zero rows
  bool pad_left = false;        // the first 3/4 of the keys padded (whole key blocks skipped)
};

inline std::ostream& operator<<(std::ostream& os, const AttnCase& c) {
  return os << "B=" << c.batch << " H=" << c.heads << " T=" << c.q_len << " S=" << c.kv_len
            << " D=" << c.head_dim << " causal=" << c.causal << " offset=" << c.offset
            << " kp=" << c.key_padding << " mask_bool=" << static_cast<int>(c.mask_bool)
            << " mask_add=" << static_cast<int>(c.mask_add)
            << " layout=" << static_cast<int>(c.layout);
}

struct AttnData {
  AttnCase c;
  tk::AttentionArgs args;
  Buf q, k, v, out, kp, mb, ma;
  int64_t out_rows = 0, out_n = 0, out_ld = 0;  // out as a strided matrix, for padding checks

  static size_t mask_size(const AttnCase& c) {
    const MaskKind kind = c.mask_bool != MaskKind::none ? c.mask_bool : c.mask_add;
    if (kind == MaskKind::none) return 0;
    const size_t per = static_cast<size_t>(c.q_len * (c.kv_len + 1));
    return kind == MaskKind::broadcast ? per : per * static_cast<size_t>(c.batch * c.heads);
  }
  static size_t q_size(const AttnCase& c) {
    const int64_t e = c.heads * c.head_dim;
    return static_cast<size_t>(c.layout == Layout::fused ? c.batch * c.q_len * 3 * e
                                                         : c.batch * c.q_len * e);
  }
  static size_t kv_size(const AttnCase& c) {
    const int64_t e = c.heads * c.head_dim;
    switch (c.layout) {
      case Layout::separate:
        return static_cast<size_t>(c.batch * c.kv_len * e);
      case Layout::fused:
        return 0;
      case Layout::cache:
        return static_cast<size_t>(c.batch * (c.kv_len + 5) * e);
    }
    return 0;
  }

  AttnData(const AttnCase& ac, Rng& rng)
      : c(ac),
        q(q_size(ac)),
        k(kv_size(ac)),
        v(kv_size(ac)),
        out(static_cast<size_t>(ac.batch * ac.q_len * (ac.heads * ac.head_dim + 3))),
        kp(static_cast<size_t>(ac.batch * (ac.kv_len + 2))),
        mb(mask_size(ac)),
        ma(mask_size(ac)) {
    const int64_t B = c.batch, H = c.heads, T = c.q_len, S = c.kv_len, D = c.head_dim;
    const int64_t E = H * D;
    rng.fill(q, -2.0f, 2.0f);
    rng.fill(k, -2.0f, 2.0f);
    rng.fill(v, -1.0f, 1.0f);
    tk::AttentionArgs& g = args;
    g.batch = B;
    g.heads = H;
    g.q_len = T;
    g.kv_len = S;
    g.head_dim = D;
    g.scale = c.scale != 0.0f ? c.scale : 1.0f / std::sqrt(static_cast<float>(D));
    g.causal = c.causal;
    g.causal_offset = c.offset;
    switch (c.layout) {
      case Layout::separate:
        g.q = q.data(), g.q_sb = T * E, g.q_st = E, g.q_sh = D;
        g.k = k.data(), g.k_sb = S * E, g.k_ss = E, g.k_sh = D;
        g.v = v.data(), g.v_sb = S * E, g.v_ss = E, g.v_sh = D;
        break;
      case Layout::fused:
        REQUIRE(S == T);
        g.q = q.data(), g.q_sb = T * 3 * E, g.q_st = 3 * E, g.q_sh = D;
        g.k = q.data() + E, g.k_sb = g.q_sb, g.k_ss = g.q_st, g.k_sh = D;
        g.v = q.data() + 2 * E, g.v_sb = g.q_sb, g.v_ss = g.q_st, g.v_sh = D;
        break;
      case Layout::cache:
        g.q = q.data(), g.q_sb = H * T * D, g.q_st = D, g.q_sh = T * D;
        g.k = k.data(), g.k_sb = H * (S + 5) * D, g.k_ss = D, g.k_sh = (S + 5) * D;
        g.v = v.data(), g.v_sb = g.k_sb, g.v_ss = D, g.v_sh = g.k_sh;
        break;
    }
    out_ld = E + 3;
    out_rows = B * T;
    out_n = E;
    g.out = out.data(), g.o_sb = T * out_ld, g.o_st = out_ld, g.o_sh = D;
    // Masks (stored as float buffers for the bool one: converted below).
    if (c.key_padding) {
      g.kp_sb = S + 2;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S + 2; ++s) {
          const bool pad =
              (c.pad_last_batch && b == B - 1) || (c.pad_left && 4 * s < 3 * S) || rng.unit() < 0.2;
          kp_bytes.push_back(pad ? 1 : 0);
        }
      g.key_padding = kp_bytes.data();
    }
    const MaskKind kind = c.mask_bool != MaskKind::none ? c.mask_bool : c.mask_add;
    if (kind != MaskKind::none) {
      g.m_st = S + 1;
      g.m_sbh = kind == MaskKind::per_head ? T * (S + 1) : 0;
    }
    if (c.mask_bool != MaskKind::none) {
      mb_bytes.resize(mb.size());
      for (auto& x : mb_bytes) x = rng.unit() < 0.25 ? 1 : 0;
      if (c.mask_whole_row) {  // row t = T/2 of the last (b, h) (or of every head if broadcast)
        const int64_t bh = kind == MaskKind::per_head ? B * H - 1 : 0;
        for (int64_t s = 0; s < S; ++s)
          mb_bytes[static_cast<size_t>(bh * g.m_sbh + T / 2 * g.m_st + s)] = 1;
      }
      g.mask_bool = mb_bytes.data();
    }
    if (c.mask_add != MaskKind::none) {
      for (size_t i = 0; i < ma.size(); ++i)
        ma[i] = rng.unit() < 0.15 ? -kInf : rng.uniform(-2.0f, 2.0f);
      g.mask_add = ma.data();
    }
  }

  // Double reference, materializing the scores of each (b, h, t). Tolerance per output element:
  //   each score s_j = scale q.k_j (+ mask) has |err| <= d_j = (D+2) eps scale sum|q k_j| + 2 eps
  //   |s_j|; softmax weights then have relative error <= 2 max_j d_j (+ exp's few eps); the
  //   weighted sum of V (plus the online rescalings, one per tile) adds <= (S+16) eps relative to
  //   sum_j p_j |v_j|, which bounds |out|.
  // A row with no allowed key must be exactly 0.
  ErrStats check() const {
    const tk::AttentionArgs& g = args;
    const int64_t B = c.batch, H = c.heads, T = c.q_len, S = c.kv_len, D = c.head_dim;
    ErrStats e;
    std::vector<double> score(static_cast<size_t>(S)), delta(static_cast<size_t>(S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const float* qr = g.q + b * g.q_sb + t * g.q_st + h * g.q_sh;
          const int64_t mrow = (b * H + h) * g.m_sbh + t * g.m_st;
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t s = 0; s < S; ++s) {
            bool allowed = true;
            if (g.causal && s > t + g.causal_offset) allowed = false;
            if (g.key_padding && g.key_padding[b * g.kp_sb + s]) allowed = false;
            if (g.mask_bool && g.mask_bool[mrow + s]) allowed = false;
            double sc = -std::numeric_limits<double>::infinity();
            double mag = 0.0;
            if (allowed) {
              const float* kr = g.k + b * g.k_sb + s * g.k_ss + h * g.k_sh;
              double dot = 0.0;
              for (int64_t d = 0; d < D; ++d) {
                dot += static_cast<double>(qr[d]) * kr[d];
                mag += std::fabs(static_cast<double>(qr[d]) * kr[d]);
              }
              sc = g.scale * dot;
              if (g.mask_add) sc += g.mask_add[mrow + s];
            }
            score[static_cast<size_t>(s)] = sc;
            delta[static_cast<size_t>(s)] =
                std::isinf(sc) ? 0.0 : (D + 2) * kEps * g.scale * mag + 2 * kEps * std::fabs(sc);
            m = std::max(m, sc);
          }
          const float* o = g.out + b * g.o_sb + t * g.o_st + h * g.o_sh;
          const int64_t base = o - g.out;
          if (m == -std::numeric_limits<double>::infinity()) {
            for (int64_t d = 0; d < D; ++d) e.add(base + d, o[d], 0.0, 0.0);
            continue;
          }
          double sum = 0.0, max_delta = 0.0;
          for (int64_t s = 0; s < S; ++s) {
            sum += std::exp(score[static_cast<size_t>(s)] - m);
            max_delta = std::max(max_delta, delta[static_cast<size_t>(s)]);
          }
          for (int64_t d = 0; d < D; ++d) {
            double want = 0.0, mag = 0.0;
            for (int64_t s = 0; s < S; ++s) {
              const double p = std::exp(score[static_cast<size_t>(s)] - m) / sum;
              const double vv = g.v[b * g.v_sb + s * g.v_ss + h * g.v_sh + d];
              want += p * vv;
              mag += p * std::fabs(vv);
            }
            const double tol = (2.0 * max_delta + (S + 16) * kEps) * mag + 1e-30;
            e.add(base + d, o[d], want, tol);
          }
        }
    return e;
  }

  std::vector<uint8_t> kp_bytes, mb_bytes;
};

inline void run_attention_case(const tk::KernelTable& kt, const AttnCase& c, Rng& rng) {
  AttnData d(c, rng);
  kt.attention(d.args);
  const ErrStats e = d.check();
  CHECK_MESSAGE(e.ok(), isa_str(kt.isa) << " attention " << c << ": " << e);
  const int64_t bad = touched_padding(d.out, d.out_rows, d.out_n, d.out_ld);
  CHECK_MESSAGE(bad == 0, isa_str(kt.isa)
                              << " attention " << c << ": wrote " << bad << " floats outside out");
}

}  // namespace kernel_test
