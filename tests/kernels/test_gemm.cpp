// GEMM (kernels/gemm_body.hpp) against the double reference, on every ISA: every panel and row
// tail, the cache blocks, every epilogue, packing, and the oneDNN backend switch.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/kernels/gemm_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;

TEST_CASE("gemm: every N to 2*NR+1, every M to 17, K in {1, 3, 17, 127, 768}") {
  Rng rng;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::gelu_erf,
                             Activation::gelu_tanh};
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    const int64_t nr = kt.gemm_panel_width;
    int variant = 0;
    auto next = [&](int64_t m, int64_t k, int64_t n) {
      GemmCase g{m, k, n};
      const int v = variant++;
      g.act = acts[v % 4];
      g.bias = (v / 2) % 2 == 0;
      g.residual = (v / 3) % 2 == 0;
      g.alias = g.residual && (v / 5) % 2 == 1;
      g.pad = (v % 3 == 0) ? 0 : (v % 3 == 1 ? 1 : 13);
      return g;
    };
    // N sweep: every panel tail.
    for (int64_t n = 1; n <= 2 * nr + 1; ++n)
      for (int64_t m : {1, 7, 17})
        for (int64_t k : {1, 17, 127}) run_gemm_case(kt, next(m, k, n), rng);
    // M sweep: every row tail of MR = 6 or 8.
    for (int64_t m = 1; m <= 17; ++m)
      for (int64_t k : {3, 768})
        for (int64_t n : {int64_t{1}, int64_t{17}, nr + 1, int64_t{127}})
          run_gemm_case(kt, next(m, k, n), rng);
    // Larger odd shapes.
    run_gemm_case(kt, next(17, 768, 1000), rng);
    run_gemm_case(kt, next(3, 127, 1000), rng);
    run_gemm_case(kt, next(33, 17, 1000), rng);
    // Blocked path: several MC row items (with a tail), K blocks with a tail, NC tails.
    run_gemm_case(kt, next(300, 600, 530), rng);
  }
}

TEST_CASE("gemm: cache blocks from the cache sizes; any blocking gives the same bits") {
  using tk::CacheSizes;
  CHECK_THROWS_AS(tk::set_gemm_cache_sizes(CacheSizes{-1, 0, 0}), std::invalid_argument);
  const CacheSizes detected = tk::detected_cache_sizes();
  CHECK(detected.l1d >= 0);
  CHECK(tk::gemm_cache_sizes().l1d == detected.l1d);
  const CacheSizes machines[] = {{32 << 10, 1 << 20, 32 << 20},  // Zen 4
                                 {48 << 10, 1 << 20, 32 << 20},  // Zen 5
                                 {32 << 10, 256 << 10, 0},       // older cores
                                 {0, 0, 0},                      // unknown: 32 KiB / 512 KiB
                                 {4 << 10, 64 << 10, 0}};        // tiny: every clamp
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (const CacheSizes& c : machines) {
      const tk::GemmBlocking b = kt.gemm_blocking(c);
      const int64_t l1 = c.l1d > 0 ? c.l1d : 32 << 10, l2 = c.l2 > 0 ? c.l2 : 512 << 10;
      INFO(isa_str(isa) << " L1d " << c.l1d << " L2 " << c.l2 << ": KC " << b.kc << " MC " << b.mc
                        << " NC " << b.nc);
      CHECK(b.nr == kt.gemm_panel_width);
      CHECK(b.kc % 8 == 0);
      CHECK(b.mc % b.mr == 0);
      CHECK(b.nc % b.nr == 0);
      if (c.l1d >= (16 << 10)) {  // the clamps (KC >= 64, one panel, one row block) aside
        CHECK(b.kc * b.mr * 4 <= l1 / 4);
        CHECK(b.kc * b.nc * 4 <= l2 / 4);
        CHECK(b.mc * (b.kc + b.nc) * 4 <= l2 / 4);
      }
    }
    if (isa == Isa::avx512) {  // the worked examples of kernels.h
      const tk::GemmBlocking z4 = kt.gemm_blocking(machines[0]);
      CHECK((z4.kc == 256 && z4.mc == 128 && z4.nc == 256));
      const tk::GemmBlocking z5 = kt.gemm_blocking(machines[1]);
      CHECK((z5.kc == 384 && z5.mc == 120 && z5.nc == 160));
    }
  }
  // The same GEMMs blocked for each machine, on 1 and 2 threads: every result passes the
  // reference and all are bit-identical (the blocking moves work, never the k order of a sum).
  Rng rng;
  const GemmCase shapes[] = {{300, 600, 530, Activation::relu, true, true, false, 3},
                             {130, 1000, 200, Activation::gelu_tanh, true, false, false, 1},
                             {17, 129, 1000, Activation::none, false, true, true, 0}};
  const int threads_before = tk::num_threads();
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (const GemmCase& g : shapes) {
      GemmData d(g, rng);
      tk::PackedWeights pw;
      kt.pack_weights(d.w.data(), g.n, g.k, d.ldw, pw);
      std::vector<float> first;
      for (const CacheSizes& c : machines) {
        for (int threads : {1, 2}) {
          tk::set_gemm_cache_sizes(c);  // {0, 0, 0}: this machine's detected sizes
          tk::set_num_threads(threads);
          d.reset_c();
          kt.gemm(g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
          const ErrStats e = d.check();
          CHECK_MESSAGE(e.ok(), isa_str(isa) << " gemm " << g << " L1d " << c.l1d << ": " << e);
          std::vector<float> got(d.c.data(), d.c.data() + d.c.size());
          if (first.empty()) {
            first = got;
          } else {
            CHECK_MESSAGE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0,
                          isa_str(isa) << " gemm " << g << ": blocked for L1d " << c.l1d << ", L2 "
                                       << c.l2 << " on " << threads << " threads differs");
          }
        }
      }
    }
  }
  tk::set_gemm_cache_sizes(CacheSizes{});
  tk::set_num_threads(threads_before);
  CHECK(tk::gemm_cache_sizes().l2 == detected.l2);
}

TEST_CASE("gemm: every epilogue combination, residual aliasing C") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (Activation act :
         {Activation::none, Activation::relu, Activation::gelu_erf, Activation::gelu_tanh})
      for (int bias = 0; bias < 2; ++bias)
        for (int res = 0; res < 3; ++res) {  // none, separate, aliasing C
          GemmCase g{13, 127, 2 * kt.gemm_panel_width + 5, act, bias == 1, res == 1, res == 2, 3};
          run_gemm_case(kt, g, rng);
        }
  }
}

TEST_CASE("gemm: packing, M = 0, ISA mismatch, free function") {
  Rng rng;
  GemmData d({5, 17, 37, Activation::gelu_tanh, true, true, false, 2}, rng);
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    tk::PackedWeights pw = tk::pack_weights(d.w.data(), 37, 17, d.ldw, isa);
    CHECK(pw.n() == 37);
    CHECK(pw.k() == 17);
    CHECK(pw.isa() == isa);
    CHECK(pw.panel_width() == kt.gemm_panel_width);
    CHECK(!pw.empty());
    CHECK(reinterpret_cast<uintptr_t>(pw.data()) % 64 == 0);
    const int64_t panels = (37 + pw.panel_width() - 1) / pw.panel_width();
    CHECK(pw.bytes() == static_cast<size_t>(panels * pw.panel_width() * 17) * sizeof(float));
    // M = 0 does nothing.
    d.reset_c();
    kt.gemm(0, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
    CHECK(touched_padding(d.c, 5, 0, d.ldc) == 0);
    // The free gemm dispatches on the weights' ISA, whatever the active one.
    tk::gemm(5, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
    const ErrStats e = d.check();
    CHECK_MESSAGE(e.ok(), isa_str(isa) << " free gemm: " << e);
    for (Isa other : tk::supported_isas()) {
      if (other == isa) continue;
      CHECK_THROWS_AS(
          tk::kernel_table(other).gemm(5, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue()),
          std::invalid_argument);
    }
  }
  tk::PackedWeights empty;
  CHECK(empty.empty());
  CHECK_THROWS_AS(tk::gemm(1, d.a.data(), d.lda, empty, d.c.data(), d.ldc), std::invalid_argument);
  CHECK_THROWS_AS(tk::pack_weights(d.w.data(), 37, 17, 16, Isa::generic), std::invalid_argument);
}

TEST_CASE("pack_weights_kn equals pack_weights of the transpose; packed_rows gathers W's rows") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    const int64_t nr = kt.gemm_panel_width;
    for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{17}, nr - 1, nr, nr + 1, int64_t{127}})
      for (int64_t k : {1, 3, 17, 127})
        for (int64_t pad : {0, 5}) {
          const int64_t ldw = k + pad;  // W [n, k]
          const int64_t ldt = n + pad;  // Wt [k, n]
          std::vector<float> w(static_cast<size_t>(n * ldw), kNaN);
          std::vector<float> wt(static_cast<size_t>(k * ldt), kNaN);
          for (int64_t j = 0; j < n; ++j)
            for (int64_t kk = 0; kk < k; ++kk) {
              const float v = rng.uniform(-1.0f, 1.0f);
              w[static_cast<size_t>(j * ldw + kk)] = v;
              wt[static_cast<size_t>(kk * ldt + j)] = v;
            }
          const tk::PackedWeights a = tk::pack_weights(w.data(), n, k, ldw, isa);
          const tk::PackedWeights b = tk::pack_weights_kn(wt.data(), k, n, ldt, isa);
          CHECK(b.n() == n);
          CHECK(b.k() == k);
          CHECK(b.isa() == isa);
          CHECK(b.panel_width() == a.panel_width());
          REQUIRE(a.bytes() == b.bytes());
          CHECK_MESSAGE(std::memcmp(a.data(), b.data(), a.bytes()) == 0,
                        isa_str(isa) << " pack_weights_kn n=" << n << " k=" << k << " pad=" << pad);
          // packed_rows: every row, in a scrambled order with repeats, into a padded output.
          std::vector<int64_t> rows;
          for (int64_t j = n - 1; j >= 0; --j) rows.push_back(j);
          rows.push_back(0);
          rows.push_back(n - 1);
          const int64_t ldo = k + 2;
          std::vector<float> out(rows.size() * static_cast<size_t>(ldo), kNaN);
          tk::packed_rows(b, rows.data(), static_cast<int64_t>(rows.size()), out.data(), ldo);
          int64_t wrong = 0, touched = 0;
          for (size_t r = 0; r < rows.size(); ++r) {
            for (int64_t kk = 0; kk < k; ++kk)
              wrong += out[r * ldo + kk] != w[static_cast<size_t>(rows[r] * ldw + kk)];
            for (int64_t kk = k; kk < ldo; ++kk) touched += !std::isnan(out[r * ldo + kk]);
          }
          CHECK_MESSAGE(wrong == 0, isa_str(isa) << " packed_rows n=" << n << " k=" << k);
          CHECK(touched == 0);
        }
    // Bad input.
    std::vector<float> w(12, 1.0f);
    const tk::PackedWeights p = tk::pack_weights(w.data(), 3, 4, 4, isa);
    std::vector<float> out(8);
    const int64_t bad_hi[] = {3};
    const int64_t bad_lo[] = {-1};
    CHECK_THROWS_AS(tk::packed_rows(p, bad_hi, 1, out.data(), 4), std::invalid_argument);
    CHECK_THROWS_AS(tk::packed_rows(p, bad_lo, 1, out.data(), 4), std::invalid_argument);
    const int64_t ok[] = {2};
    CHECK_THROWS_AS(tk::packed_rows(p, ok, 1, out.data(), 3), std::invalid_argument);
    CHECK_THROWS_AS(tk::pack_weights_kn(w.data(), 4, 3, 2, isa), std::invalid_argument);
    CHECK_THROWS_AS(tk::packed_rows(tk::PackedWeights(), ok, 1, out.data(), 4),
                    std::invalid_argument);
  }
}

TEST_CASE("gemm backend: TESSERA_GEMM is honoured; both backends pass the same cases") {
  const char* env = std::getenv("TESSERA_GEMM");
  const tk::GemmBackend initial = tk::gemm_backend();
  if (env != nullptr && std::string(env) == "onednn") {
    CHECK(initial == tk::GemmBackend::onednn);
  } else {
    CHECK(initial == tk::GemmBackend::tessera);
  }
  CHECK(std::string(tk::gemm_backend_name(tk::GemmBackend::onednn)) == "onednn");
  std::vector<tk::GemmBackend> backends = {tk::GemmBackend::tessera};
  if (tk::onednn_available()) {
    backends.push_back(tk::GemmBackend::onednn);
  } else {
    CHECK_THROWS_AS(tk::set_gemm_backend(tk::GemmBackend::onednn), std::runtime_error);
  }
  Rng rng;
  for (tk::GemmBackend be : backends) {
    tk::set_gemm_backend(be);
    CHECK(tk::gemm_backend() == be);
    for (Isa isa : tk::supported_isas()) {
      const tk::KernelTable& kt = tk::kernel_table(isa);
      // Every epilogue (residual separate and aliasing C), few-row and blocked shapes; the same
      // weights used twice (oneDNN's reordered copy is cached in them).
      for (int64_t m : {1, 5, 40})
        for (int variant = 0; variant < 8; ++variant) {
          GemmCase g{m, 130, 70};
          g.act = static_cast<Activation>(variant % 4);
          g.bias = variant % 2 == 1;
          g.residual = variant >= 4;
          g.alias = variant >= 6;
          g.pad = variant % 3;
          run_gemm_case(kt, g, rng);
        }
    }
  }
  tk::set_gemm_backend(initial);
}
