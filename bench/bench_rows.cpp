// Row-kernel suite, L2-resident: every array of one call fits in a quarter of the 1 MiB L2
// (96 KiB per array: 32 rows of 768 or 8 rows of 3072), and the call is repeated, so the
// kernels run from L2.
//   rows/<kernel>/<rows>x<N>/threads:T   softmax_rows, add_layernorm_rows (residual, gamma,
//                                        beta, sum_out), gelu_erf, gelu_tanh, add, embedding
//   membw/{dram_read,l2_read}/threads:T  the bandwidths they are compared with
// Counter: GB/s = bytes each kernel must read and write / time.
#include "bench/bench_common.hpp"

namespace {

using namespace bench;

enum class RowOp { softmax, layernorm, gelu_erf, gelu_tanh, add, embedding };

void bench_rows(benchmark::State& st, RowOp op, int64_t n, int threads) {
  tk::set_num_threads(threads);
  const int64_t rows = 24576 / n;  // 96 KiB per [rows, n] array
  const size_t size = static_cast<size_t>(rows * n);
  const std::vector<float> x = random_vector(size, -3, 3, 5);
  const std::vector<float> r = random_vector(size, -3, 3, 6);
  const std::vector<float> gamma = random_vector(static_cast<size_t>(n), 0.5, 1.5, 7);
  const std::vector<float> beta = random_vector(static_cast<size_t>(n), -1, 1, 8);
  const int64_t vocab = 64;  // embedding table [vocab, n] (rows of it are read)
  const std::vector<float> table = random_vector(static_cast<size_t>(vocab * n), -1, 1, 9);
  const std::vector<float> pos = random_vector(static_cast<size_t>(rows * n), -1, 1, 10);
  std::vector<int64_t> ids(static_cast<size_t>(rows)), positions(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    ids[static_cast<size_t>(i)] = (i * 37) % vocab;
    positions[static_cast<size_t>(i)] = i;
  }
  std::vector<float> y(size), s(size);
  double arrays = 0;  // [rows, n] float arrays read or written per call
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
      case RowOp::gelu_erf:
        tk::activation(rows * n, x.data(), y.data(), tk::Activation::gelu_erf);
        arrays = 2;
        break;
      case RowOp::gelu_tanh:
        tk::activation(rows * n, x.data(), y.data(), tk::Activation::gelu_tanh);
        arrays = 2;
        break;
      case RowOp::add:
        tk::add(rows * n, x.data(), r.data(), y.data());
        arrays = 3;
        break;
      case RowOp::embedding:
        tk::embedding(rows, ids.data(), table.data(), n, 1.0f, positions.data(), pos.data(),
                      y.data(), n);
        arrays = 3;  // table rows, positional rows, out
        break;
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.counters["GB/s"] = per_second(arrays * static_cast<double>(size) * sizeof(float), st);
}

void register_suite() {
  const std::pair<RowOp, const char*> ops[] = {{RowOp::softmax, "softmax_rows"},
                                               {RowOp::layernorm, "add_layernorm_rows"},
                                               {RowOp::gelu_erf, "gelu_erf"},
                                               {RowOp::gelu_tanh, "gelu_tanh"},
                                               {RowOp::add, "add"},
                                               {RowOp::embedding, "embedding"}};
  for (int threads : thread_counts()) {
    for (auto [op, name] : ops) {
      for (int64_t n : {768, 3072}) {
        benchmark::RegisterBenchmark(
            (std::string("rows/") + name + "/" + std::to_string(24576 / n) + "x" +
             std::to_string(n) + "/threads:" + std::to_string(threads))
                .c_str(),
            bench_rows, op, n, threads)
            ->UseRealTime();
      }
    }
  }
  register_bandwidth_probes();
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_main(argc, argv, register_suite);
}
