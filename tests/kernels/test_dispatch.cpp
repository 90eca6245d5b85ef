// ISA selection and dispatch (kernels/dispatch.cpp): the supported list, the tables, names, the
// TESSERA_ISA override, and the free functions against the active table, bit for bit.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/kernels/attention_test_util.hpp"
#include "tests/kernels/gemm_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;

// =============================================================================================
// ISA selection and dispatch
// =============================================================================================
TEST_CASE("isa: supported list, tables, names") {
  const std::vector<Isa> isas = tk::supported_isas();
  REQUIRE(!isas.empty());
  CHECK(isas.back() == Isa::generic);  // best first, the baseline last
  CHECK(tk::isa_supported(Isa::generic));
  for (Isa isa : isas) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    CHECK(kt.isa == isa);
    CHECK(kt.gemm_panel_width > 0);
    CHECK((kt.pack_weights != nullptr));
    CHECK((kt.attention != nullptr));
  }
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (!tk::isa_supported(isa)) CHECK_THROWS_AS(tk::kernel_table(isa), std::runtime_error);
  }
  CHECK(std::string(tk::isa_name(Isa::avx2)) == "avx2");
  CHECK(tk::detail::isa_from_string("generic") == Isa::generic);
  CHECK_THROWS_AS(tk::detail::isa_from_string("avx1024"), std::runtime_error);
  CHECK_THROWS_AS(tk::detail::isa_from_string(""), std::runtime_error);
  if (!tk::isa_supported(Isa::avx512)) {
    CHECK_THROWS_AS(tk::detail::isa_from_string("avx512"), std::runtime_error);
  }
  const int before = tk::num_threads();
  CHECK(before >= 1);
  CHECK_THROWS_AS(tk::set_num_threads(0), std::invalid_argument);
  tk::set_num_threads(1);
  CHECK(tk::num_threads() == 1);
  tk::set_num_threads(before);
}

// =============================================================================================
// The free functions, on the active ISA (ctest also runs this suite with TESSERA_ISA=generic
// and TESSERA_ISA=avx2).
// =============================================================================================
TEST_SUITE("active_isa") {
  TEST_CASE("active_isa honours TESSERA_ISA; free functions match its table bit for bit") {
    const char* env = std::getenv("TESSERA_ISA");
    if (env != nullptr && *env != '\0') {
      bool valid = false;
      try {
        const Isa want = tk::detail::isa_from_string(env);
        valid = true;
        CHECK(tk::active_isa() == want);
      } catch (const std::runtime_error&) {
        CHECK_FALSE(valid);
      }
      if (!valid) {
        // Unknown or unsupported here: active_isa() must refuse, every time.
        CHECK_THROWS_AS(tk::active_isa(), std::runtime_error);
        CHECK_THROWS_AS(tk::active_isa(), std::runtime_error);
        return;
      }
    } else {
      CHECK(tk::active_isa() == tk::supported_isas().front());
    }
    const Isa isa = tk::active_isa();
    MESSAGE("active ISA: " << isa_str(isa));
    const tk::KernelTable& kt = tk::kernel_table(isa);
    Rng rng;

    // gemm through the default pack_weights (active ISA).
    GemmData d({9, 127, 2 * kt.gemm_panel_width + 3, Activation::gelu_erf, true, true, true, 1},
               rng);
    const tk::PackedWeights pw = tk::pack_weights(d.w.data(), d.g.n, d.g.k, d.ldw);
    CHECK(pw.isa() == isa);
    tk::gemm(d.g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
    const ErrStats e = d.check();
    CHECK_MESSAGE(e.ok(), "free gemm: " << e);

    // Row kernels: the free function and the table give identical bits.
    const int64_t rows = 3, n = 77, ld = 80;
    Buf x(rows * ld), r(rows * ld), y1(rows * ld), y2(rows * ld), s1(rows * ld), s2(rows * ld);
    Buf gamma(n), beta(n);
    rng.fill(x, -3.0f, 3.0f);
    rng.fill(r, -3.0f, 3.0f);
    rng.fill(gamma, 0.5f, 1.5f);
    rng.fill(beta, -1.0f, 1.0f);
    auto same = [](const Buf& p, const Buf& q) {
      return std::memcmp(p.data(), q.data(), p.size() * sizeof(float)) == 0;
    };
    tk::softmax_rows(rows, n, x.data(), ld, y1.data(), ld);
    kt.softmax_rows(rows, n, x.data(), ld, y2.data(), ld);
    CHECK(same(y1, y2));
    CHECK(check_softmax(x, y1, rows, n, ld, ld).ok());
    tk::add_layernorm_rows(rows, n, x.data(), ld, r.data(), ld, gamma.data(), beta.data(), 1e-5f,
                           y1.data(), ld, s1.data(), ld);
    kt.add_layernorm_rows(rows, n, x.data(), ld, r.data(), ld, gamma.data(), beta.data(), 1e-5f,
                          y2.data(), ld, s2.data(), ld);
    CHECK(same(y1, y2));
    CHECK(same(s1, s2));
    tk::activation(rows * ld, x.data(), y1.data(), Activation::gelu_tanh);
    kt.activation(rows * ld, x.data(), y2.data(), Activation::gelu_tanh);
    CHECK(same(y1, y2));
    tk::add(rows * ld, x.data(), r.data(), y1.data());
    kt.add(rows * ld, x.data(), r.data(), y2.data());
    CHECK(same(y1, y2));
    const int64_t ids[] = {2, 0, 1};
    const int64_t pos[] = {0, 1, 2};
    tk::embedding(3, ids, x.data(), n, 2.0f, pos, r.data(), y1.data(), ld);
    kt.embedding(3, ids, x.data(), n, 2.0f, pos, r.data(), y2.data(), ld);
    CHECK(same(y1, y2));

    AttnCase ac{.batch = 1,
                .heads = 2,
                .q_len = 5,
                .kv_len = 70,
                .head_dim = 17,
                .causal = true,
                .offset = 65,
                .key_padding = true};
    AttnData a1(ac, rng);
    tk::attention(a1.args);
    const ErrStats ea = a1.check();
    CHECK_MESSAGE(ea.ok(), "free attention: " << ea);
  }
}

TEST_CASE("allocate_aligned: alignment, every size class, memory usable up to the last byte") {
  // Heap blocks below 64 KiB, mapped ones from 64 KiB, 2 MiB aligned ones from 2 MiB.
  for (size_t bytes : {size_t{1}, size_t{63}, size_t{65535}, size_t{65536}, size_t{300000},
                       (size_t{2} << 20) - 1, size_t{2} << 20, (size_t{5} << 20) + 3}) {
    CAPTURE(bytes);
    auto* p = static_cast<unsigned char*>(tk::allocate_aligned(bytes));
    REQUIRE(p != nullptr);
    const size_t align = bytes >= (size_t{2} << 20) ? (size_t{2} << 20) : 64;
    CHECK(reinterpret_cast<uintptr_t>(p) % align == 0);
    std::memset(p, 0xab, bytes);
    CHECK(p[0] == 0xab);
    CHECK(p[bytes - 1] == 0xab);
    tk::free_aligned(p, bytes);
    // zeroed: every byte reads 0 (heap blocks cleared, mapped ones fresh from the kernel).
    auto* z = static_cast<unsigned char*>(tk::allocate_aligned(bytes, /*zeroed=*/true));
    CHECK(reinterpret_cast<uintptr_t>(z) % align == 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < bytes; ++i) nonzero += z[i] != 0;
    CHECK(nonzero == 0);
    tk::free_aligned(z, bytes);
  }
  tk::free_aligned(nullptr, 100);  // nothing
  // Many at once from several threads: each block its own, every one freed.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      std::vector<std::pair<void*, size_t>> blocks;
      for (int i = 0; i < 50; ++i) {
        const size_t bytes = size_t{60000} + size_t(i) * 7919 + size_t(t);
        auto* p = static_cast<unsigned char*>(tk::allocate_aligned(bytes));
        p[0] = p[bytes - 1] = static_cast<unsigned char>(i);
        blocks.emplace_back(p, bytes);
      }
      for (auto [p, bytes] : blocks) tk::free_aligned(p, bytes);
    });
  for (auto& th : threads) th.join();
}
