// Row kernels (kernels/rows_body.hpp) against the double references, on every ISA: softmax_rows,
// add_layernorm_rows, embedding (and sinusoidal_positions, kernels/positional.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;

TEST_CASE("softmax_rows: every n to 65, strides, in place, -inf rows") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (int64_t n = 1; n <= 65; ++n) {
      for (int64_t rows : {0, 1, 3}) {
        const int64_t ld = n + (n % 3);
        Buf x(static_cast<size_t>(std::max<int64_t>(rows, 1) * ld));
        Buf y(x.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) x[r * ld + j] = rng.uniform(-30.0f, 30.0f);
        if (rows == 3) {
          for (int64_t j = 0; j < n; ++j) x[1 * ld + j] = -kInf;  // all -inf: zeros
          x[2 * ld + n / 2] = -kInf;                              // one -inf: weight 0
        }
        kt.softmax_rows(rows, n, x.data(), ld, y.data(), ld);
        ErrStats e = check_softmax(x, y, rows, n, ld, ld);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax n=" << n << " rows=" << rows << ": " << e);
        CHECK(touched_padding(y, std::max<int64_t>(rows, 1), rows ? n : 0, ld) == 0);
        // In place.
        Buf z(x.size());
        for (size_t i = 0; i < x.size(); ++i) z[i] = x[i];
        kt.softmax_rows(rows, n, z.data(), ld, z.data(), ld);
        e = check_softmax(x, z, rows, n, ld, ld);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax in place n=" << n << ": " << e);
      }
    }
  }
}

TEST_CASE("softmax_rows: exp accuracy over [-20, 20] and extremes") {
  // Max error found (AMD Zen 4, the kernels' exp; printed by this test): relative error of the
  // probabilities 2.06e-6 = 17 eps (avx512, avx2), 17 eps (generic) on the two dense 4001-wide
  // rows, well inside the derived bound (4n + 8 + 2|x - m|) eps; exp alone is within 1 eps of
  // std::exp (TEST_CASE "vector_math"), with correct denormals down to exp(-103.3).
  Rng rng;
  const int64_t n = 4001;
  Buf x(static_cast<size_t>(3 * n));
  for (int64_t j = 0; j < n; ++j) x[j] = -20.0f + 40.0f * static_cast<float>(j) / (n - 1);
  // Row 1: pairs compared against the max only: exponent differences up to 87.
  for (int64_t j = 0; j < n; ++j) x[n + j] = -87.0f * static_cast<float>(j) / (n - 1);
  const float extremes[] = {88.0f, -88.0f, 1e4f, -1e4f, 0.0f, -kInf, 87.5f, -103.0f};
  for (int64_t j = 0; j < n; ++j) x[2 * n + j] = extremes[j % 8];
  for (Isa isa : tk::supported_isas()) {
    Buf y(x.size());
    tk::kernel_table(isa).softmax_rows(3, n, x.data(), n, y.data(), n);
    const ErrStats e = check_softmax(x, y, 3, n, n, n);
    CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax wide range: " << e);
    double max_rel = 0.0;  // relative error where the result is a normal float
    for (int64_t r = 0; r < 2; ++r) {
      double m = -1e300, sum = 0.0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(x[r * n + j]));
      for (int64_t j = 0; j < n; ++j) sum += std::exp(x[r * n + j] - m);
      for (int64_t j = 0; j < n; ++j) {
        const double want = std::exp(x[r * n + j] - m) / sum;
        if (want > 1e-30) max_rel = std::max(max_rel, std::fabs(y[r * n + j] - want) / want);
      }
    }
    MESSAGE(isa_str(isa) << " softmax: max relative error " << max_rel << " (" << max_rel / kEps
                         << " eps)");
  }
}

TEST_CASE("softmax_rows: two-entry rows [0, x] probe the softmax exp over x in [-110, 0]") {
  // y1 = e / (1 + e), e = exp(x), m = 0 so x - m is exact: the float result has the kernel's
  // exp error (exp_nonpos: measured <= 1 eps) plus three roundings (1 + e, 1 / sum, e * inv).
  // Bound: 8 eps relative, plus FLT_MIN absolute (results below FLT_MIN may be flushed);
  // exp(-inf) must give exactly 0 and y0 = 1 / (1 + e) within 3 eps. Measured (Zen 4): 1.45 eps
  // (avx512, avx2), 1.58 eps (generic) where y1 is a normal float.
  const int64_t rows = 110001;
  Buf x(static_cast<size_t>(2 * rows));
  for (int64_t r = 0; r < rows; ++r) {
    x[2 * r] = 0.0f;
    x[2 * r + 1] = r + 1 == rows ? -kInf : -110.0f * static_cast<float>(r) / (rows - 2);
  }
  for (Isa isa : tk::supported_isas()) {
    Buf y(x.size());
    tk::kernel_table(isa).softmax_rows(rows, 2, x.data(), 2, y.data(), 2);
    ErrStats e;
    double worst = 0.0, worst_x = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      const double xv = x[2 * r + 1];
      const double ev = std::exp(xv);
      const double want1 = ev / (1.0 + ev), want0 = 1.0 / (1.0 + ev);
      e.add(2 * r, y[2 * r], want0, 3.0 * kEps * want0);
      e.add(2 * r + 1, y[2 * r + 1], want1, 8.0 * kEps * want1 + FLT_MIN);
      if (want1 >= FLT_MIN) {
        const double rel = std::fabs(y[2 * r + 1] - want1) / want1;
        if (rel > worst) worst = rel, worst_x = xv;
      }
    }
    CHECK(y[2 * (rows - 1) + 1] == 0.0f);  // exp(-inf) = 0 exactly
    CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax [0, x]: " << e);
    MESSAGE(isa_str(isa) << " softmax [0, x]: max relative error " << worst / kEps
                         << " eps at x = " << worst_x);
  }
}

TEST_CASE("add_layernorm_rows: every n to 65 and 768/3072, residual, gamma/beta, aliasing") {
  Rng rng;
  // |err| of y_j, from the float computation of s = x + r, mean (lane-wise Welford: about
  // n/4 + 4 roundings of max|s|), s - mean, rstd (Welford M2 + sqrt + division):
  //   e_c = eps (|s_j| + |s_j - mean|) + (n/4 + 4) eps max|s|      (centered value)
  //   e_r = (n + 8) eps + 2 e_c,max / sigma                         (relative, rstd)
  //   tol = |g| rstd e_c + |g (s_j - mean) rstd| e_r + 2 eps |y_j|
  auto check = [](const std::vector<double>& s_row, const float* g, const float* b, float eps,
                  const float* y, int64_t n, ErrStats& e, int64_t base) {
    double mean = 0.0, var = 0.0, smax = 0.0;
    for (double s : s_row) mean += s, smax = std::max(smax, std::fabs(s));
    mean /= static_cast<double>(n);
    for (double s : s_row) var += (s - mean) * (s - mean);
    var /= static_cast<double>(n);
    const double sigma = std::sqrt(var + eps);
    const double rstd = 1.0 / sigma;
    double ec_max = 0.0;
    for (double s : s_row) {
      ec_max = std::max(
          ec_max, kEps * (std::fabs(s) + std::fabs(s - mean)) + (n / 4.0 + 4.0) * kEps * smax);
    }
    const double er = (n + 8.0) * kEps + 2.0 * ec_max / sigma;
    for (int64_t j = 0; j < n; ++j) {
      const double s = s_row[static_cast<size_t>(j)];
      const double gj = g ? g[j] : 1.0;
      const double want = (s - mean) * rstd * gj + (b ? b[j] : 0.0);
      const double ec = kEps * (std::fabs(s) + std::fabs(s - mean)) + (n / 4.0 + 4.0) * kEps * smax;
      const double tol = std::fabs(gj) * rstd * ec + std::fabs(gj * (s - mean) * rstd) * er +
                         2.0 * kEps * std::fabs(want) + 1e-30;
      e.add(base + j, y[j], want, tol);
    }
  };
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 65; ++n) sizes.push_back(n);
  sizes.push_back(768);
  sizes.push_back(3072);
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    int variant = 0;
    for (int64_t n : sizes) {
      for (int mode = 0; mode < 6; ++mode) {
        // mode 0: plain (no residual, no gamma/beta)   1: residual + gamma/beta + sum_out
        //      2: y == x            3: y == residual    4: sum_out == x   5: sum_out == residual
        const int v = variant++;
        const int64_t rows = 1 + v % 3;
        const int64_t ld = n + (v % 4);
        const float offset = (v % 5 == 0) ? 100.0f : 0.0f;  // mean >> sigma rows
        const float eps = 1e-5f;
        Buf x(static_cast<size_t>(rows * ld)), res(x.size()), y(x.size()), sum(x.size());
        Buf gamma(static_cast<size_t>(n)), beta(static_cast<size_t>(n));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            x[r * ld + j] = offset + rng.uniform(-1.0f, 1.0f);
            res[r * ld + j] = rng.uniform(-1.0f, 1.0f);
          }
        rng.fill(gamma, 0.5f, 1.5f);
        rng.fill(beta, -0.5f, 0.5f);
        const bool use_res = mode != 0;
        const bool affine = mode != 0;
        const bool want_sum = mode == 1 || mode == 4 || mode == 5;
        // Expected s, from the inputs before the call.
        std::vector<std::vector<double>> s_rows(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            // s is one float add, as in the kernel.
            const float s = use_res ? x[r * ld + j] + res[r * ld + j] : x[r * ld + j];
            s_rows[static_cast<size_t>(r)].push_back(s);
          }
        float* yp = mode == 2 ? x.data() : (mode == 3 ? res.data() : y.data());
        float* sp =
            !want_sum ? nullptr : (mode == 4 ? x.data() : (mode == 5 ? res.data() : sum.data()));
        kt.add_layernorm_rows(rows, n, x.data(), ld, use_res ? res.data() : nullptr, ld,
                              affine ? gamma.data() : nullptr, affine ? beta.data() : nullptr, eps,
                              yp, ld, sp, ld);
        ErrStats e;
        for (int64_t r = 0; r < rows; ++r)
          check(s_rows[static_cast<size_t>(r)], affine ? gamma.data() : nullptr,
                affine ? beta.data() : nullptr, eps, yp + r * ld, n, e, r * ld);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " layernorm n=" << n << " mode=" << mode
                                           << " rows=" << rows << ": " << e);
        if (sp != nullptr) {
          ErrStats es;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < n; ++j)
              es.add(r * ld + j, sp[r * ld + j],
                     s_rows[static_cast<size_t>(r)][static_cast<size_t>(j)], 0.0);
          CHECK_MESSAGE(es.ok(), isa_str(isa) << " layernorm sum_out n=" << n << " mode=" << mode
                                              << ": " << es);
        }
        if (mode == 0 || mode == 1) CHECK(touched_padding(y, rows, n, ld) == 0);
        if (mode == 1) CHECK(touched_padding(sum, rows, n, ld) == 0);
      }
    }
  }
}

TEST_CASE("embedding and sinusoidal_positions") {
  Rng rng;
  const int64_t vocab = 11, max_pos = 9;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    std::vector<int64_t> dims;
    for (int64_t d = 1; d <= 65; ++d) dims.push_back(d);
    dims.push_back(1000);
    for (int64_t dim : dims) {
      const int64_t rows = 1 + dim % 4;
      const int64_t ldo = dim + dim % 3;
      Buf table(static_cast<size_t>(vocab * dim)), pos(static_cast<size_t>(max_pos * dim));
      rng.fill(table, -1.0f, 1.0f);
      rng.fill(pos, -1.0f, 1.0f);
      std::vector<int64_t> ids, positions;
      for (int64_t r = 0; r < rows; ++r) {
        ids.push_back(rng.below(vocab));
        positions.push_back(rng.below(max_pos));
      }
      for (int with_pos = 0; with_pos < 2; ++with_pos) {
        Buf out(static_cast<size_t>(rows * ldo));
        const float scale = with_pos ? 27.7128f : 1.0f;
        kt.embedding(rows, ids.data(), table.data(), dim, scale,
                     with_pos ? positions.data() : nullptr, with_pos ? pos.data() : nullptr,
                     out.data(), ldo);
        ErrStats e;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < dim; ++j) {
            const double t =
                static_cast<double>(table[ids[static_cast<size_t>(r)] * dim + j]) * scale;
            const double want =
                t + (with_pos ? pos[positions[static_cast<size_t>(r)] * dim + j] : 0.0);
            e.add(r * ldo + j, out[r * ldo + j], want, kEps * (std::fabs(t) + std::fabs(want)));
          }
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " embedding dim=" << dim << ": " << e);
        CHECK(touched_padding(out, rows, dim, ldo) == 0);
      }
    }
  }
  for (int64_t dim : {1, 2, 7, 64}) {
    const int64_t positions = 1000;
    std::vector<float> pe(static_cast<size_t>(positions * dim));
    tk::sinusoidal_positions(positions, dim, pe.data());
    ErrStats e;
    for (int64_t p = 0; p < positions; ++p)
      for (int64_t j = 0; j < dim; ++j) {
        const double freq = std::exp(-std::log(10000.0) * static_cast<double>(j - j % 2) / dim);
        const double want = j % 2 == 0 ? std::sin(p * freq) : std::cos(p * freq);
        e.add(p * dim + j, pe[static_cast<size_t>(p * dim + j)], want, kEps + 1e-12 * p);
      }
    CHECK_MESSAGE(e.ok(), "sinusoidal_positions dim=" << dim << ": " << e);
  }
}
