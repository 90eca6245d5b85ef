// The GEMM test cases, shared by test_gemm.cpp, test_threads.cpp and test_dispatch.cpp: a case
// (shape, epilogue, padding), its data and double reference, and one run against a table.
#pragma once

#include <cmath>
#include <cstdint>
#include <ostream>

#include "tests/kernels/kernel_test_util.hpp"

namespace kernel_test {

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------
struct GemmCase {
  int64_t m, k, n;
  Activation act = Activation::none;
  bool bias = false;
  bool residual = false;
  bool alias = false;  // residual == C (same pointer and stride)
  int64_t pad = 0;     // extra floats per row in lda, ldw, ldc and ld_residual
};

inline std::ostream& operator<<(std::ostream& os, const GemmCase& g) {
  return os << "M=" << g.m << " K=" << g.k << " N=" << g.n << " act=" << act_name(g.act)
            << " bias=" << g.bias << " residual=" << g.residual << " alias=" << g.alias
            << " pad=" << g.pad;
}

struct GemmData {
  GemmCase g;
  int64_t lda, ldw, ldc;
  Buf a, w, bias, res, c;
  GemmData(const GemmCase& gc, Rng& rng)
      : g(gc),
        lda(gc.k + gc.pad),
        ldw(gc.k + gc.pad),
        ldc(gc.n + gc.pad),
        a(static_cast<size_t>(gc.m * (gc.k + gc.pad))),
        w(static_cast<size_t>(gc.n * (gc.k + gc.pad))),
        bias(static_cast<size_t>(gc.n)),
        res(static_cast<size_t>(gc.m * (gc.n + gc.pad))),
        c(static_cast<size_t>(gc.m * (gc.n + gc.pad))) {
    // Unit-variance-ish pre-activations: a in [-1, 1], w in [-2, 2] / sqrt(K).
    const float ws = 2.0f / std::sqrt(static_cast<float>(gc.k));
    for (int64_t i = 0; i < gc.m; ++i)
      for (int64_t kk = 0; kk < gc.k; ++kk) a[i * lda + kk] = rng.uniform(-1.0f, 1.0f);
    for (int64_t j = 0; j < gc.n; ++j)
      for (int64_t kk = 0; kk < gc.k; ++kk) w[j * ldw + kk] = rng.uniform(-ws, ws);
    rng.fill(bias, -1.0f, 1.0f);
    for (int64_t i = 0; i < gc.m; ++i)
      for (int64_t j = 0; j < gc.n; ++j) res[i * ldc + j] = rng.uniform(-2.0f, 2.0f);
    reset_c();
  }
  // C poisoned with NaN; in the alias case its valid part holds the residual.
  void reset_c() {
    for (size_t i = 0; i < c.size(); ++i) c[i] = kNaN;
    if (g.alias) {
      for (int64_t i = 0; i < g.m; ++i)
        for (int64_t j = 0; j < g.n; ++j) c[i * ldc + j] = res[i * ldc + j];
    }
  }
  tk::Epilogue epilogue() {
    tk::Epilogue ep;
    ep.act = g.act;
    if (g.bias) ep.bias = bias.data();
    if (g.alias) {
      ep.residual = c.data();
      ep.ld_residual = ldc;
    } else if (g.residual) {
      ep.residual = res.data();
      ep.ld_residual = ldc;
    }
    return ep;
  }
  // Checks C against the double reference:
  //   |err| <= L (K+2) eps (sum_k |a w| + |bias|) + act_rel_tol eps |act(v)| + eps |out|
  // (K+2: one rounding per FMA -- two per step without FMA on SSE2, covered by the factor of
  // two between eps and the unit roundoff -- plus the bias add; L: act's Lipschitz bound).
  ErrStats check() const {
    ErrStats e;
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) {
        double dot = 0.0;
        double mag = 0.0;
        for (int64_t kk = 0; kk < g.k; ++kk) {
          const double p = static_cast<double>(a[i * lda + kk]) * w[j * ldw + kk];
          dot += p;
          mag += std::fabs(p);
        }
        const double b = g.bias ? bias[j] : 0.0;
        const double v = dot + b;
        const double act = ref_act(g.act, v);
        const double r = (g.alias || g.residual) ? res[i * ldc + j] : 0.0;
        const double want = act + r;
        const double tol = kActLipschitz * (g.k + 2) * kEps * (mag + std::fabs(b)) +
                           act_rel_tol(g.act, v) * kEps * std::fabs(act) + kEps * std::fabs(want) +
                           kDenormSlack;
        e.add(i * ldc + j, c[i * ldc + j], want, tol);
      }
    }
    return e;
  }
};

inline void run_gemm_case(const tk::KernelTable& kt, const GemmCase& g, Rng& rng) {
  GemmData d(g, rng);
  tk::PackedWeights pw;
  kt.pack_weights(d.w.data(), g.n, g.k, d.ldw, pw);
  const tk::Epilogue ep = d.epilogue();
  // The free gemm: the weights' ISA (kt's) with the tessera backend, or oneDNN's matmul under
  // TESSERA_GEMM=onednn (CTest kernels_onednn runs this whole suite that way).
  tk::gemm(g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, ep);
  const ErrStats e = d.check();
  CHECK_MESSAGE(e.ok(), isa_str(kt.isa) << " gemm " << g << ": " << e);
  const int64_t bad = touched_padding(d.c, g.m, g.n, d.ldc);
  CHECK_MESSAGE(bad == 0, isa_str(kt.isa)
                              << " gemm " << g << ": wrote " << bad << " floats outside C");
}

}  // namespace kernel_test
