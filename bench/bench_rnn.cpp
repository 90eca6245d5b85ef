// The recurrent cell (kernels::rnn_cell) at batch 1 against the L2 read bandwidth, the issue-15
// target: "the recurrent cell on the hidden-state product at batch 1 streams its weights from
// cache at >= 60 % of the L2 read bandwidth".
//   rnn_cell/{gru,lstm}/H:h/rows:1   one step h' = cell(x, h) repeated (h ping-pongs between two
//                                    buffers, so each step reads the last one's output), one
//                                    thread. Counters: W_GB/s = packed W_hh bytes per step / time
//                                    per step; %L2 = that / the L2 read bandwidth measured below.
//   membw/l2_read_median/threads:1  the L2 read bandwidth this binary divides by: a read-only
//                                    sweep over half the L2 (vectorized, 16 accumulators), 32
//                                    passes per sample, median of 21 samples of thread CPU time.
// Sizes: packed W_hh is G*H*H*4 bytes (GRU 128: 192 KiB, 256: 768 KiB; LSTM 128: 256 KiB), all
// under a 1 MiB L2; GRU 64 (48 KiB) sits in L1 + L2, GRU 512 (3 MiB) past the L2 for contrast.
// Times are thread CPU time, so another process's load on a shared machine lowers them little.
//   build/bench/bench_rnn --benchmark_min_time=0.5
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_common.hpp"

namespace bench {
namespace {

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// GB/s of a read-only sweep over half the L2, median of 21 samples of 32 passes each.
double l2_read_gbs() {
  static const double gbs = [] {
    const int64_t l2 = cache_bytes(2) > 0 ? cache_bytes(2) : int64_t{1} << 20;
    const int64_t n = l2 / 2 / 4 / 256 * 256;  // floats
    std::vector<float> buf(static_cast<size_t>(n), 1.0f);
    float sink = 0;
    for (int w = 0; w < 4; ++w) sink += read_sum(buf.data(), n);  // warm the L2
    std::vector<double> samples;
    for (int s = 0; s < 21; ++s) {
      const double t0 = thread_seconds();
      for (int p = 0; p < 32; ++p) sink += read_sum(buf.data(), n);
      samples.push_back(32.0 * 4.0 * static_cast<double>(n) / (thread_seconds() - t0) * 1e-9);
    }
    benchmark::DoNotOptimize(sink);
    std::sort(samples.begin(), samples.end());
    return samples[samples.size() / 2];
  }();
  return gbs;
}

void bench_l2(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(l2_read_gbs());
  st.counters["GB/s"] = l2_read_gbs();
}

void bench_cell(benchmark::State& st, tk::RnnCell cell, int64_t hidden) {
  tk::set_num_threads(1);
  const int64_t g = tk::rnn_gates(cell), gh = g * hidden;
  // Weights scaled so h stays in tanh's linear-ish range over many steps.
  const auto w = random_vector(static_cast<size_t>(gh * hidden), -0.05f, 0.05f, 1);
  const auto b_hh = random_vector(static_cast<size_t>(gh), -0.1f, 0.1f, 2);
  const auto x = random_vector(static_cast<size_t>(gh), -1.0f, 1.0f, 3);    // [G*H]
  std::vector<float> h0(static_cast<size_t>(hidden), 0.1f), h1(h0), c(h0);  // [H] each
  const tk::PackedWeights packed = tk::pack_recurrent(w.data(), cell, hidden, hidden);
  const float* xs[1] = {x.data()};
  const float* hs[1] = {h0.data()};
  float* hos[1] = {h1.data()};
  const float* cs[1] = {c.data()};
  float* cos[1] = {c.data()};
  tk::RnnCellArgs a;
  a.cell = cell;
  a.rows = 1;
  a.hidden = hidden;
  a.x = xs;
  a.h = hs;
  a.h_out = hos;
  a.c = cs;
  a.c_out = cos;
  a.b_hh = b_hh.data();
  for (int i = 0; i < 16; ++i) tk::rnn_cell(packed, a);  // warm the caches
  int64_t steps = 0;
  const double t0 = thread_seconds();
  for (auto _ : st) {
    tk::rnn_cell(packed, a);
    float* next = hos[0];  // this step's output is the next step's input
    hos[0] = const_cast<float*>(hs[0]);
    hs[0] = next;
    ++steps;
  }
  const double seconds = thread_seconds() - t0;
  const double gbs =
      static_cast<double>(packed.bytes()) * static_cast<double>(steps) / seconds * 1e-9;
  st.counters["W_KiB"] = static_cast<double>(packed.bytes()) / 1024.0;
  st.counters["ns/step"] = seconds / static_cast<double>(steps) * 1e9;
  st.counters["W_GB/s"] = gbs;
  st.counters["%L2"] = 100.0 * gbs / l2_read_gbs();
  st.counters["GFLOP/s"] =
      2.0 * static_cast<double>(gh * hidden) * static_cast<double>(steps) / seconds * 1e-9;
}

void register_suite() {
  benchmark::RegisterBenchmark("membw/l2_read_median/threads:1", bench_l2)->Iterations(1);
  const struct {
    tk::RnnCell cell;
    const char* name;
    int64_t hidden;
  } cases[] = {{tk::RnnCell::gru, "gru", 64},    {tk::RnnCell::gru, "gru", 128},
               {tk::RnnCell::gru, "gru", 256},   {tk::RnnCell::lstm, "lstm", 128},
               {tk::RnnCell::lstm, "lstm", 256}, {tk::RnnCell::gru, "gru", 512}};
  for (const auto& c : cases)
    benchmark::RegisterBenchmark(
        ("rnn_cell/" + std::string(c.name) + "/H:" + std::to_string(c.hidden) + "/rows:1").c_str(),
        bench_cell, c.cell, c.hidden);
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  return bench::run_main(argc, argv, bench::register_suite);
}
