// Vector-math suite: the kernels' polynomial functions (kernels/math_body.hpp) over arrays of
// a few sizes, from L1-resident to past the L2.
//   math/<fn>/<n>/threads:T   fn: exp, erf, erfc, tanh (vector_math), gelu_erf, gelu_tanh
//                             (activation); n floats in, n floats out, the call repeated
// Counters: items_per_second = elements / time; bytes_per_second = bytes read + written / time
// (8 per element). The functions are compute-bound (~15-55 vector operations per vector), so
// elements/s is the number to compare; no bandwidth probe is registered.
#include "bench/bench_common.hpp"

namespace {

using namespace bench;

enum class MathOp { exp, erf, erfc, tanh, gelu_erf, gelu_tanh };

void bench_math(benchmark::State& st, MathOp op, int64_t n, int threads) {
  tk::set_num_threads(threads);
  const size_t size = static_cast<size_t>(n);
  // Arguments where every function does real work: exp's and erfc's results stay normal floats,
  // erf and tanh are not yet saturated to +-1.
  const std::vector<float> x = random_vector(size, -6, 6, 11);
  std::vector<float> y(size);
  for (auto _ : st) {
    switch (op) {
      case MathOp::exp:
        tk::vector_math(tk::MathFunction::exp, n, x.data(), y.data());
        break;
      case MathOp::erf:
        tk::vector_math(tk::MathFunction::erf, n, x.data(), y.data());
        break;
      case MathOp::erfc:
        tk::vector_math(tk::MathFunction::erfc, n, x.data(), y.data());
        break;
      case MathOp::tanh:
        tk::vector_math(tk::MathFunction::tanh, n, x.data(), y.data());
        break;
      case MathOp::gelu_erf:
        tk::activation(n, x.data(), y.data(), tk::Activation::gelu_erf);
        break;
      case MathOp::gelu_tanh:
        tk::activation(n, x.data(), y.data(), tk::Activation::gelu_tanh);
        break;
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * n);
  st.SetBytesProcessed(st.iterations() * n * static_cast<int64_t>(2 * sizeof(float)));
}

void register_suite() {
  const std::pair<MathOp, const char*> ops[] = {
      {MathOp::exp, "exp"},   {MathOp::erf, "erf"},           {MathOp::erfc, "erfc"},
      {MathOp::tanh, "tanh"}, {MathOp::gelu_erf, "gelu_erf"}, {MathOp::gelu_tanh, "gelu_tanh"}};
  for (int threads : thread_counts()) {
    for (auto [op, name] : ops) {
      // 4 KiB per array (L1), 96 KiB (L2, as bench_rows), 4 MiB (past the L2).
      for (int64_t n : {1024, 24576, 1048576}) {
        benchmark::RegisterBenchmark((std::string("math/") + name + "/" + std::to_string(n) +
                                      "/threads:" + std::to_string(threads))
                                         .c_str(),
                                     bench_math, op, n, threads)
            ->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_main(argc, argv, register_suite);
}
