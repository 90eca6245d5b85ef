// Kernel benchmarks on transformer shapes (BERT/GPT-2 base: E = 768, FFN 3072, 12 heads of 64).
//   gemm/<isa>/M/K/N/threads     GFLOP/s = 2 M N K / time, every ISA this CPU runs
//   dnnl_sgemm/M/K/N/threads     oneDNN's sgemm on the same problem (C = A Wᵀ), if built with it
//   attention/<...>              GFLOP/s = 4 D x (allowed query-key pairs) x heads / time
//   softmax, layernorm, gelu, add: GB/s of the arrays each kernel must read and write
// All times are wall-clock (UseRealTime): the kernels run their own threads.
// Output: console or --benchmark_format=json. Not csv: Google Benchmark 1.7.1's CSV reporter
// aborts when runs carry different counters (GFLOP/s here, GB/s there).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

#ifdef TESSERA_BENCH_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace tk = tessera::kernels;

namespace {

std::vector<float> random_vector(size_t n, float lo, float hi, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

benchmark::Counter per_second(double amount_per_iteration, benchmark::State& st) {
  return benchmark::Counter(amount_per_iteration * static_cast<double>(st.iterations()) * 1e-9,
                            benchmark::Counter::kIsRate);
}

struct GemmShape {
  int64_t m, k, n;
};
constexpr GemmShape kGemmShapes[] = {{1, 768, 768},    {1, 768, 3072},   {128, 768, 768},
                                     {128, 768, 3072}, {128, 3072, 768}, {32, 512, 2048}};

void bench_gemm(benchmark::State& st, tk::Isa isa, GemmShape s, int threads) {
  tk::set_num_threads(threads);
  const std::vector<float> a = random_vector(static_cast<size_t>(s.m * s.k), -1, 1, 1);
  const std::vector<float> w = random_vector(static_cast<size_t>(s.n * s.k), -1, 1, 2);
  std::vector<float> c(static_cast<size_t>(s.m * s.n));
  const tk::PackedWeights pw = tk::pack_weights(w.data(), s.n, s.k, s.k, isa);
  for (auto _ : st) {
    tk::gemm(s.m, a.data(), s.k, pw, c.data(), s.n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(2.0 * s.m * s.n * s.k, st);
}

#ifdef TESSERA_BENCH_DNNL
void bench_dnnl_sgemm(benchmark::State& st, GemmShape s, int threads) {
  omp_set_num_threads(threads);
  const std::vector<float> a = random_vector(static_cast<size_t>(s.m * s.k), -1, 1, 1);
  const std::vector<float> w = random_vector(static_cast<size_t>(s.n * s.k), -1, 1, 2);
  std::vector<float> c(static_cast<size_t>(s.m * s.n));
  for (auto _ : st) {
    // Row-major C[M,N] = A[M,K] · W[N,K]ᵀ.
    if (dnnl_sgemm('N', 'T', s.m, s.n, s.k, 1.0f, a.data(), s.k, w.data(), s.k, 0.0f, c.data(),
                   s.n) != dnnl_success) {
      st.SkipWithError("dnnl_sgemm failed");
      break;
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(2.0 * s.m * s.n * s.k, st);
}
#endif

// Self-attention of one sequence, 12 heads of 64, fused QKV [T, 3E]; q_len 1 = a decode step
// against a KV cache of kv_len keys.
void bench_attention(benchmark::State& st, int64_t q_len, int64_t kv_len, int threads) {
  tk::set_num_threads(threads);
  const int64_t heads = 12, dim = 64, e = heads * dim;
  const std::vector<float> q = random_vector(static_cast<size_t>(q_len * e), -1, 1, 3);
  const std::vector<float> kv = random_vector(static_cast<size_t>(kv_len * 2 * e), -1, 1, 4);
  std::vector<float> out(static_cast<size_t>(q_len * e));
  tk::AttentionArgs g;
  g.batch = 1, g.heads = heads, g.q_len = q_len, g.kv_len = kv_len, g.head_dim = dim;
  g.q = q.data(), g.q_sb = q_len * e, g.q_st = e, g.q_sh = dim;
  g.k = kv.data(), g.k_sb = kv_len * 2 * e, g.k_ss = 2 * e, g.k_sh = dim;
  g.v = kv.data() + e, g.v_sb = g.k_sb, g.v_ss = 2 * e, g.v_sh = dim;
  g.out = out.data(), g.o_sb = q_len * e, g.o_st = e, g.o_sh = dim;
  g.scale = 0.125f;
  g.causal = true;
  g.causal_offset = kv_len - q_len;
  double pairs = 0;  // allowed (query, key) pairs
  for (int64_t t = 0; t < q_len; ++t) pairs += static_cast<double>(t + g.causal_offset + 1);
  for (auto _ : st) {
    tk::attention(g);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(4.0 * dim * pairs * heads, st);
}

enum class RowOp { softmax, layernorm, gelu, add };

void bench_rows(benchmark::State& st, RowOp op, int64_t n, int threads) {
  tk::set_num_threads(threads);
  const int64_t rows = 128;
  const size_t size = static_cast<size_t>(rows * n);
  const std::vector<float> x = random_vector(size, -3, 3, 5);
  const std::vector<float> r = random_vector(size, -3, 3, 6);
  const std::vector<float> gamma = random_vector(static_cast<size_t>(n), 0.5, 1.5, 7);
  const std::vector<float> beta = random_vector(static_cast<size_t>(n), -1, 1, 8);
  std::vector<float> y(size), s(size);
  double arrays = 0;  // float arrays of [rows, n] read or written
  for (auto _ : st) {
    switch (op) {
      case RowOp::softmax:
        tk::softmax_rows(rows, n, x.data(), n, y.data(), n);
        arrays = 2;
        break;
      case RowOp::layernorm:
        tk::add_layernorm_rows(rows, n, x.data(), n, r.data(), n, gamma.data(), beta.data(), 1e-5f,
                               y.data(), n, s.data(), n);
        arrays = 4;
        break;
      case RowOp::gelu:
        tk::activation(rows * n, x.data(), y.data(), tk::Activation::gelu_erf);
        arrays = 2;
        break;
      case RowOp::add:
        tk::add(rows * n, x.data(), r.data(), y.data());
        arrays = 3;
        break;
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.counters["GB/s"] = per_second(arrays * static_cast<double>(size) * sizeof(float), st);
}

std::string shape_name(GemmShape s, int threads) {
  return std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n) +
         "/threads:" + std::to_string(threads);
}

void register_all() {
  const int max_threads = omp_get_max_threads();
  std::vector<int> thread_counts{1};
  if (max_threads > 1) thread_counts.push_back(max_threads);
  for (const GemmShape& s : kGemmShapes) {
    for (int threads : thread_counts) {
      for (tk::Isa isa : tk::supported_isas()) {
        // Every ISA at one thread; the active one at every thread count.
        if (threads > 1 && isa != tk::active_isa()) continue;
        benchmark::RegisterBenchmark(
            ("gemm/" + std::string(tk::isa_name(isa)) + "/" + shape_name(s, threads)).c_str(),
            bench_gemm, isa, s, threads)
            ->UseRealTime();
      }
#ifdef TESSERA_BENCH_DNNL
      benchmark::RegisterBenchmark(("dnnl_sgemm/" + shape_name(s, threads)).c_str(),
                                   bench_dnnl_sgemm, s, threads)
          ->UseRealTime();
#endif
    }
  }
  for (int threads : thread_counts) {
    for (auto [q_len, kv_len] : {std::pair<int64_t, int64_t>{128, 128}, {512, 512}, {1, 512}}) {
      benchmark::RegisterBenchmark(
          ("attention/H12xD64/T" + std::to_string(q_len) + "xS" + std::to_string(kv_len) +
           "/causal/threads:" + std::to_string(threads))
              .c_str(),
          bench_attention, q_len, kv_len, threads)
          ->UseRealTime();
    }
    const std::pair<RowOp, const char*> ops[] = {{RowOp::softmax, "softmax_rows"},
                                                 {RowOp::layernorm, "add_layernorm_rows"},
                                                 {RowOp::gelu, "gelu_erf"},
                                                 {RowOp::add, "add"}};
    for (auto [op, name] : ops) {
      for (int64_t n : {768, 3072}) {
        benchmark::RegisterBenchmark((std::string(name) + "/128x" + std::to_string(n) +
                                      "/threads:" + std::to_string(threads))
                                         .c_str(),
                                     bench_rows, op, n, threads)
            ->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("tessera_isa", tk::isa_name(tk::active_isa()));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
