// Thread-count independence of gemm and attention, and the kernels' thread pool
// (kernels/thread_pool.cpp, parallel_for): every index once, nested calls, concurrent callers,
// the back-off after a stalled worker.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "tests/kernels/attention_test_util.hpp"
#include "tests/kernels/gemm_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;

// =============================================================================================
// Thread-count independence
// =============================================================================================
TEST_CASE("threads: gemm and attention are bit-identical for 1, 2 and 3 threads") {
  const int before = tk::num_threads();
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    const GemmCase shapes[] = {{1, 768, 768, Activation::gelu_erf, true},
                               {37, 127, 1000, Activation::none, true, true},
                               {130, 256, 200, Activation::gelu_tanh, false, true, true, 1},
                               {300, 600, 530, Activation::relu, true, true, false, 3}};
    for (const GemmCase& g : shapes) {
      GemmData d(g, rng);
      tk::PackedWeights pw;
      kt.pack_weights(d.w.data(), g.n, g.k, d.ldw, pw);
      std::vector<float> first;
      for (int threads : {1, 2, 3}) {
        tk::set_num_threads(threads);
        d.reset_c();
        tk::gemm(g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
        std::vector<float> got(d.c.data(), d.c.data() + d.c.size());
        if (first.empty()) {
          first = got;
        } else {
          CHECK_MESSAGE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0,
                        isa_str(isa) << " gemm " << g << ": differs at " << threads << " threads");
        }
      }
    }
    AttnCase ac{.batch = 2,
                .heads = 3,
                .q_len = 70,
                .kv_len = 70,
                .head_dim = 17,
                .causal = true,
                .key_padding = true,
                .mask_add = MaskKind::per_head};
    AttnData d(ac, rng);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      tk::set_num_threads(threads);
      kt.attention(d.args);
      std::vector<float> got(d.out.data(), d.out.data() + d.out.size());
      if (first.empty()) {
        first = got;
      } else {
        CHECK_MESSAGE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0,
                      isa_str(isa) << " attention differs at " << threads << " threads");
      }
    }
  }
  tk::set_num_threads(before);
}

// =============================================================================================
// The thread pool
// =============================================================================================
TEST_CASE("threads: parallel_for runs every index once, nested calls serially, callers at once") {
  const int before = tk::num_threads();
  for (int threads : {1, 2, 3, 5}) {
    tk::set_num_threads(threads);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{17}, int64_t{127}, int64_t{1000}})
      for (int64_t grain : {int64_t{1}, int64_t{3}, int64_t{64}}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n) + 2);
        const bool parallel = threads > 1 && n > grain;
        tk::detail::parallel_for(1, n + 1, grain, [&](int64_t lo, int64_t hi) {
          CHECK(lo < hi);
          CHECK(hi - lo <= std::max<int64_t>(grain, n));
          for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)]++;
          // A loop nested in a parallel one runs on this thread, in one call.
          std::atomic<int64_t> inner{0};
          tk::detail::parallel_for(0, 100, 1, [&](int64_t a, int64_t b) {
            if (parallel) CHECK((a == 0 && b == 100));
            inner += b - a;
          });
          CHECK(inner == 100);
        });
        int wrong = 0;
        for (int64_t i = 0; i < n + 2; ++i)
          wrong += hits[static_cast<size_t>(i)] != (i >= 1 && i <= n);
        CHECK_MESSAGE(wrong == 0, "threads " << threads << " n " << n << " grain " << grain);
      }
  }
  // Two application threads running kernels at once (the pool serves one job, the other runs on
  // its own thread): each result bit-identical to the same call alone.
  tk::set_num_threads(2);
  Rng rng;
  const GemmCase g{300, 600, 530, Activation::relu, true, true, false, 3};
  GemmData d0(g, rng), d1(g, rng);
  const tk::PackedWeights pw0 = tk::pack_weights(d0.w.data(), g.n, g.k, d0.ldw);
  const tk::PackedWeights pw1 = tk::pack_weights(d1.w.data(), g.n, g.k, d1.ldw);
  d0.reset_c();
  d1.reset_c();
  tk::gemm(g.m, d0.a.data(), d0.lda, pw0, d0.c.data(), d0.ldc, d0.epilogue());
  tk::gemm(g.m, d1.a.data(), d1.lda, pw1, d1.c.data(), d1.ldc, d1.epilogue());
  const std::vector<float> want0(d0.c.data(), d0.c.data() + d0.c.size());
  const std::vector<float> want1(d1.c.data(), d1.c.data() + d1.c.size());
  for (int round = 0; round < 20; ++round) {
    d0.reset_c();
    d1.reset_c();
    std::thread other(
        [&] { tk::gemm(g.m, d1.a.data(), d1.lda, pw1, d1.c.data(), d1.ldc, d1.epilogue()); });
    tk::gemm(g.m, d0.a.data(), d0.lda, pw0, d0.c.data(), d0.ldc, d0.epilogue());
    other.join();
    REQUIRE(std::memcmp(want0.data(), d0.c.data(), want0.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(want1.data(), d1.c.data(), want1.size() * sizeof(float)) == 0);
  }
  tk::set_num_threads(before);
}

TEST_CASE("threads: after a stalled worker the pool backs off to the caller, then threads return") {
  const char* env = std::getenv("TESSERA_POOL_BACKOFF");
  if (env != nullptr && std::strcmp(env, "0") == 0) return;  // back-off turned off
  const int before = tk::num_threads();
  tk::set_num_threads(2);
  const std::thread::id caller = std::this_thread::get_id();
  auto spin = [](std::chrono::microseconds us) {
    const auto until = std::chrono::steady_clock::now() + us;
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  // A first back-off of 60 s, so that "right after" below holds however loaded the machine is
  // (the default is 10 ms); this also ends any back-off earlier tests left.
  tk::detail::set_pool_backoff_first_us(60'000'000);
  // A job whose chunks take 5 ms when a worker runs them (a worker descheduled while it holds a
  // chunk) and 20 us on the caller: the caller waits far longer than its own chunks took. On a
  // loaded machine the caller may itself be descheduled and see no loss: try again.
  bool backed_off = false;
  for (int attempt = 0; attempt < 50 && !backed_off; ++attempt) {
    tk::detail::parallel_for(0, 32, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      else
        spin(std::chrono::microseconds(20));
    });
    backed_off = tk::detail::pool_backing_off();
  }
  REQUIRE_MESSAGE(backed_off, "the pool never backed off in 50 jobs a worker stalled");
  // Right after: the next job runs on the caller alone, in one call.
  std::atomic<int> calls{0}, off_caller{0};
  std::vector<int> hits(64, 0);
  tk::detail::parallel_for(0, 64, 1, [&](int64_t lo, int64_t hi) {
    calls++;
    if (std::this_thread::get_id() != caller) off_caller++;
    for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)]++;
  });
  CHECK(off_caller == 0);
  CHECK(calls == 1);
  CHECK(std::count(hits.begin(), hits.end(), 1) == 64);
  // Once the back-off ends (here: the default restored, which ends it), jobs whose chunks take
  // the same time on any thread use the workers again.
  tk::detail::set_pool_backoff_first_us(10'000);
  bool worker_back = false;
  for (int job = 0; job < 2000 && !worker_back; ++job) {
    std::atomic<int> by_worker{0};
    tk::detail::parallel_for(0, 16, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller) by_worker++;
      spin(std::chrono::microseconds(50));
    });
    worker_back = by_worker > 0;
  }
  CHECK_MESSAGE(worker_back, "the workers took no chunk in 2000 jobs after the back-off");
  tk::set_num_threads(before);
}
