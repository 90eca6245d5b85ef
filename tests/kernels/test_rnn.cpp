// The rnn_attention family's kernels (kernels/rnn_body.hpp) against double references, on every
// ISA: the fused GRU/LSTM cell (pack_recurrent + rnn_cell), a bidirectional layer's recurrence
// over a ragged batch (rnn_bidirectional) and the fused additive attention.
//
// Tolerances: a gate pre-activation sums H products (and the input part), so its float error is
// at most ~H eps sum|w h| (sequential FMA chain, each step one rounding); sigmoid and tanh have
// Lipschitz constants 1/4 and 1 and add a few eps of their own; the state update adds a few eps.
// The checks use 4 (H + 8) eps (1 + sum|w h| + |x|) per element, which the real errors stay far
// below, and a recurrence multiplies it by its steps.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;

namespace {

double sigm(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// One cell step in double: W_hh [G*H, H], b_hh [G*H], x [G*H], h [H], c [H] -> h', c'. Also
// returns the bound of the pre-activations' magnitudes (for the tolerance).
void ref_cell(tk::RnnCell cell, int64_t hs, const float* w, const float* b, const float* x,
              const float* h, const float* c, double* h_out, double* c_out, double* scale) {
  const int64_t g = cell == tk::RnnCell::gru ? 3 : 4;
  std::vector<double> a(static_cast<size_t>(g * hs));
  double mag = 1;
  for (int64_t j = 0; j < g * hs; ++j) {
    double s = b[j], m = std::abs(b[j]);
    for (int64_t k = 0; k < hs; ++k) {
      s += static_cast<double>(w[j * hs + k]) * h[k];
      m += std::abs(static_cast<double>(w[j * hs + k]) * h[k]);
    }
    a[j] = s;
    mag = std::max(mag, m + std::abs(x[j]));
  }
  *scale = mag;
  for (int64_t u = 0; u < hs; ++u) {
    if (cell == tk::RnnCell::gru) {
      const double r = sigm(x[u] + a[u]), z = sigm(x[hs + u] + a[hs + u]);
      const double n = std::tanh(x[2 * hs + u] + r * a[2 * hs + u]);
      h_out[u] = (1 - z) * n + z * h[u];
    } else {
      const double i = sigm(x[u] + a[u]), f = sigm(x[hs + u] + a[hs + u]);
      const double gg = std::tanh(x[2 * hs + u] + a[2 * hs + u]);
      const double o = sigm(x[3 * hs + u] + a[3 * hs + u]);
      c_out[u] = f * c[u] + i * gg;
      h_out[u] = o * std::tanh(c_out[u]);
    }
  }
}

std::vector<int64_t> hidden_sizes(int64_t w) {
  std::vector<int64_t> v = {1, 3, 17, 127, w - 1, w, w + 1, 2 * w + 1};
  std::vector<int64_t> out;
  for (int64_t x : v)
    if (x >= 1 && std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  return out;
}

}  // namespace

TEST_CASE("rnn_cell: GRU and LSTM, H {1,3,17,127,W-1,W,W+1,2W+1}, rows {1,2,3,5,17}, every ISA") {
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& t = tk::kernel_table(isa);
    Rng rng;
    for (tk::RnnCell cell : {tk::RnnCell::gru, tk::RnnCell::lstm}) {
      const int64_t g = cell == tk::RnnCell::gru ? 3 : 4;
      for (int64_t hs : hidden_sizes(t.rnn_panel_width)) {
        Buf w(static_cast<size_t>(g * hs * hs)), b(static_cast<size_t>(g * hs));
        rng.fill(w, -0.5f, 0.5f);
        rng.fill(b, -0.5f, 0.5f);
        tk::PackedWeights pw;
        t.pack_recurrent(w.data(), cell, hs, hs, pw);
        REQUIRE(pw.n() == g * hs);
        for (int64_t rows : {1, 2, 3, 5, 17}) {
          Buf x(static_cast<size_t>(rows * g * hs)), h(static_cast<size_t>(rows * hs)),
              c(static_cast<size_t>(rows * hs)), ho(static_cast<size_t>(rows * hs)),
              c0(static_cast<size_t>(rows * hs));
          rng.fill(x, -2.0f, 2.0f);
          rng.fill(h, -1.0f, 1.0f);
          rng.fill(c0, -2.0f, 2.0f);
          std::memcpy(c.data(), c0.data(), sizeof(float) * c0.size());
          // Rows in reverse order in memory: the kernel follows the pointers.
          std::vector<const float*> xs, hp, cp;
          std::vector<float*> hop, cop;
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t m = rows - 1 - r;
            xs.push_back(x.data() + m * g * hs);
            hp.push_back(h.data() + m * hs);
            hop.push_back(ho.data() + m * hs);
            cp.push_back(c.data() + m * hs);
            cop.push_back(c.data() + m * hs);  // in place
          }
          tk::RnnCellArgs a{.cell = cell,
                            .rows = rows,
                            .hidden = hs,
                            .x = xs.data(),
                            .h = hp.data(),
                            .h_out = hop.data(),
                            .c = cp.data(),
                            .c_out = cop.data(),
                            .b_hh = b.data()};
          t.rnn_cell(pw, a);
          double worst = 0;
          std::vector<double> rh(static_cast<size_t>(hs)), rc(static_cast<size_t>(hs));
          for (int64_t m = 0; m < rows; ++m) {
            double scale = 1;
            ref_cell(cell, hs, w.data(), b.data(), x.data() + m * g * hs, h.data() + m * hs,
                     c0.data() + m * hs, rh.data(), rc.data(), &scale);
            const double tol = 4 * (hs + 8) * kEps * scale;
            for (int64_t u = 0; u < hs; ++u) {
              const double e = std::abs(ho[m * hs + u] - rh[u]) / tol;
              worst = std::max(worst, std::isnan(e) ? 1e30 : e);
              if (cell == tk::RnnCell::lstm)
                worst = std::max(worst, std::abs(c[m * hs + u] - rc[u]) / tol);
            }
          }
          INFO("isa " << isa_str(isa) << " cell " << g << " gates, H " << hs << ", rows " << rows
                      << ": worst error / tolerance " << worst);
          CHECK(worst <= 1.0);
          CHECK(ho.guard_intact());
          CHECK(c.guard_intact());
        }
      }
    }
  }
}

TEST_CASE("rnn_bidirectional: ragged batch, packed semantics, both directions, every ISA") {
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& t = tk::kernel_table(isa);
    Rng rng;
    for (tk::RnnCell cell : {tk::RnnCell::gru, tk::RnnCell::lstm}) {
      const int64_t g = cell == tk::RnnCell::gru ? 3 : 4;
      for (int64_t hs : {int64_t{1}, int64_t{3}, int64_t{17}, t.rnn_panel_width + 1}) {
        const std::vector<int64_t> lengths = {5, 1, 9, 3};
        const int64_t batch = 4, seq = 9;
        Buf wf(static_cast<size_t>(g * hs * hs)), wb(wf.size()), bf(static_cast<size_t>(g * hs)),
            bb(bf.size());
        rng.fill(wf, -0.5f, 0.5f);
        rng.fill(wb, -0.5f, 0.5f);
        rng.fill(bf, -0.5f, 0.5f);
        rng.fill(bb, -0.5f, 0.5f);
        tk::PackedWeights pf, pb;
        t.pack_recurrent(wf.data(), cell, hs, hs, pf);
        t.pack_recurrent(wb.data(), cell, hs, hs, pb);
        Buf xf(static_cast<size_t>(batch * seq * g * hs)), xb(xf.size());
        rng.fill(xf, -1.5f, 1.5f);
        rng.fill(xb, -1.5f, 1.5f);
        std::vector<float> out(static_cast<size_t>(batch * seq * 2 * hs), -7.0f);
        std::vector<float> cf(static_cast<size_t>(batch * hs)), cb(cf.size());
        const int64_t ws = tk::rnn_layer_workspace(batch, hs);
        std::vector<float> work(static_cast<size_t>(2 * ws));
        tk::RnnDirectionArgs df{.w_hh = &pf,
                                .b_hh = bf.data(),
                                .x = xf.data(),
                                .out = out.data(),
                                .ld_out = 2 * hs,
                                .c_state = cf.data(),
                                .workspace = work.data()};
        tk::RnnDirectionArgs db{.w_hh = &pb,
                                .b_hh = bb.data(),
                                .x = xb.data(),
                                .out = out.data() + hs,
                                .ld_out = 2 * hs,
                                .c_state = cb.data(),
                                .workspace = work.data() + ws};
        if (cell == tk::RnnCell::gru) df.c_state = db.c_state = nullptr;
        t.rnn_bidirectional(cell, batch, seq, hs, lengths.data(), df, db);
        double worst = 0;
        for (int64_t b = 0; b < batch; ++b)
          for (int dir = 0; dir < 2; ++dir) {
            std::vector<float> h(static_cast<size_t>(hs), 0.0f), c(static_cast<size_t>(hs), 0.0f);
            std::vector<double> rh(static_cast<size_t>(hs)), rc(static_cast<size_t>(hs));
            const int64_t len = lengths[b];
            for (int64_t i = 0; i < len; ++i) {
              const int64_t tt = dir == 0 ? i : len - 1 - i;
              const float* x = (dir == 0 ? xf : xb).data() + (b * seq + tt) * g * hs;
              double scale = 1;
              ref_cell(cell, hs, (dir == 0 ? wf : wb).data(), (dir == 0 ? bf : bb).data(), x,
                       h.data(), c.data(), rh.data(), rc.data(), &scale);
              const double tol = 4 * (hs + 8) * kEps * scale * (i + 1);
              for (int64_t u = 0; u < hs; ++u) {
                const float got = out[(b * seq + tt) * 2 * hs + dir * hs + u];
                worst = std::max(worst, std::abs(got - rh[u]) / tol);
                h[u] = got;  // follow the kernel's own trajectory (errors do not compound)
                if (cell == tk::RnnCell::lstm) c[u] = static_cast<float>(rc[u]);
              }
            }
            for (int64_t tt = len; tt < seq; ++tt)
              for (int64_t u = 0; u < hs; ++u)
                CHECK(out[(b * seq + tt) * 2 * hs + dir * hs + u] == -7.0f);  // padding untouched
            if (cell == tk::RnnCell::lstm)
              for (int64_t u = 0; u < hs; ++u)
                worst = std::max(worst, std::abs((dir == 0 ? cf : cb)[b * hs + u] - c[u]) /
                                            (4 * (hs + 8) * kEps * 8));
          }
        INFO("isa " << isa_str(isa) << " gates " << g << " H " << hs << ": worst / tol " << worst);
        CHECK(worst <= 1.0);
      }
    }
  }
}

TEST_CASE("additive_attention: rows {1,3,17}, S {1,3,17,127}, A and D over every tail, ISAs") {
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& t = tk::kernel_table(isa);
    const int64_t w = t.rnn_panel_width;
    Rng rng;
    for (int64_t rows : {1, 3, 17})
      for (int64_t s_len : {1, 3, 17, 127})
        for (int64_t na : {int64_t{1}, int64_t{3}, w - 1, w, w + 1, 2 * w + 3})
          for (int64_t nd : {int64_t{1}, w + 3, int64_t{18}}) {
            if (na < 1) continue;
            const int64_t b0 = 2;  // source rows; each row r attends to source r % 2
            std::vector<int64_t> lengths = {s_len, std::max<int64_t>(1, s_len / 2)};
            std::vector<int64_t> src(static_cast<size_t>(rows));
            for (int64_t r = 0; r < rows; ++r) src[r] = (r + 1) % 2;
            Buf q(static_cast<size_t>(rows * na)), keys(static_cast<size_t>(b0 * s_len * na)),
                mem(static_cast<size_t>(b0 * s_len * nd)), v(static_cast<size_t>(na)),
                alpha(static_cast<size_t>(rows * s_len)), ctx(static_cast<size_t>(rows * nd));
            rng.fill(q, -1.5f, 1.5f);
            rng.fill(keys, -1.5f, 1.5f);
            rng.fill(mem, -1.0f, 1.0f);
            rng.fill(v, -1.0f, 1.0f);
            tk::AdditiveAttentionArgs a{.rows = rows,
                                        .src_len = s_len,
                                        .attention_dim = na,
                                        .memory_dim = nd,
                                        .query = q.data(),
                                        .ldq = na,
                                        .keys = keys.data(),
                                        .memory = mem.data(),
                                        .v = v.data(),
                                        .lengths = lengths.data(),
                                        .src_rows = src.data(),
                                        .alpha = alpha.data(),
                                        .ld_alpha = s_len,
                                        .context = ctx.data(),
                                        .ldc = nd};
            t.additive_attention(a);
            double worst = 0;
            double sum_v = 0;
            for (int64_t i = 0; i < na; ++i) sum_v += std::abs(v[i]);
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t s = src[r], len = lengths[s];
              std::vector<double> e(static_cast<size_t>(len));
              double m = -1e300;
              for (int64_t j = 0; j < len; ++j) {
                double acc = 0;
                for (int64_t i = 0; i < na; ++i)
                  acc += v[i] * std::tanh(static_cast<double>(q[r * na + i]) +
                                          keys[(s * s_len + j) * na + i]);
                e[j] = acc;
                m = std::max(m, acc);
              }
              double z = 0;
              for (auto& x : e) z += (x = std::exp(x - m));
              // Scores err <= (A + 4) eps sum|v|; the softmax turns an absolute score error d into
              // a relative weight error ~2d; the context sums len weighted rows.
              const double tol_a = 4 * ((na + 4) * sum_v + 8) * kEps;
              for (int64_t j = 0; j < s_len; ++j) {
                const double want = j < len ? e[j] / z : 0.0;
                const double got = alpha[r * s_len + j];
                if (j >= len)
                  CHECK(got == 0.0f);
                else
                  worst = std::max(worst, std::abs(got - want) / tol_a);
              }
              for (int64_t dd = 0; dd < nd; ++dd) {
                double want = 0;
                for (int64_t j = 0; j < len; ++j) want += e[j] / z * mem[(s * s_len + j) * nd + dd];
                const double tol_c = tol_a + 4 * (len + 4) * kEps;
                worst = std::max(worst, std::abs(ctx[r * nd + dd] - want) / tol_c);
              }
            }
            INFO("isa " << isa_str(isa) << " rows " << rows << " S " << s_len << " A " << na
                        << " D " << nd << ": worst / tol " << worst);
            CHECK(worst <= 1.0);
            CHECK(alpha.guard_intact());
            CHECK(ctx.guard_intact());
          }
  }
}

TEST_CASE("rnn_cell: bit-identical for 1, 2 and 3 threads (panels split over threads)") {
  const tk::Isa isa = tk::active_isa();
  Rng rng;
  const int64_t hs = 300, rows = 3, g = 4;
  std::vector<float> w(static_cast<size_t>(g * hs * hs)), x(static_cast<size_t>(rows * g * hs)),
      h(static_cast<size_t>(rows * hs));
  for (auto& v : w) v = rng.uniform(-0.1f, 0.1f);
  for (auto& v : x) v = rng.uniform(-1, 1);
  for (auto& v : h) v = rng.uniform(-1, 1);
  const tk::PackedWeights pw = tk::pack_recurrent(w.data(), tk::RnnCell::lstm, hs, hs, isa);
  std::vector<float> first;
  const int before = tk::num_threads();
  for (int threads : {1, 2, 3}) {
    tk::set_num_threads(threads);
    std::vector<float> ho(static_cast<size_t>(rows * hs)), c(ho.size(), 0.5f);
    std::vector<const float*> xs, hp, cp;
    std::vector<float*> hop, cop;
    for (int64_t r = 0; r < rows; ++r) {
      xs.push_back(x.data() + r * g * hs);
      hp.push_back(h.data() + r * hs);
      hop.push_back(ho.data() + r * hs);
      cp.push_back(c.data() + r * hs);
      cop.push_back(c.data() + r * hs);
    }
    tk::rnn_cell(pw, {.cell = tk::RnnCell::lstm,
                      .rows = rows,
                      .hidden = hs,
                      .x = xs.data(),
                      .h = hp.data(),
                      .h_out = hop.data(),
                      .c = cp.data(),
                      .c_out = cop.data()});
    if (first.empty())
      first = ho;
    else
      CHECK(std::memcmp(first.data(), ho.data(), sizeof(float) * ho.size()) == 0);
  }
  tk::set_num_threads(before);
}
