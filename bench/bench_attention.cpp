// Attention suite: self-attention of one sequence, 12 heads of 64, Q/K/V in a fused [S, 3E]
// buffer (E = 768), S in {128, 512, 2048}, causal or key-padded (the last quarter of the keys).
//   attention/fused/S<S>/<causal|padded>/threads:T     tk::attention (flash style, no [S, S])
//   attention/unfused/S<S>/<causal|padded>/threads:T   Tessera's own unfused path, per head:
//       K_h packed as GEMM weights; scores [S, S] = (scale Q_h) · K_hᵀ + mask (the epilogue's
//       residual: a precomputed 0 / -inf matrix); softmax_rows over [S, S]; out_h = P · V_h
//       (V_h packed with pack_weights_kn). Packing and scaling are inside the timed call.
//   attention/fused/decode/S<S>/threads:T               one query against S cached keys
// Counter: GFLOP/s = 4 D x (allowed query-key pairs) x heads / time, the same for both paths.
#include <limits>

#include "bench/bench_common.hpp"

namespace {

using namespace bench;

constexpr int64_t kHeads = 12, kDim = 64, kE = kHeads * kDim;

struct Problem {
  int64_t s;
  bool causal;
  int64_t valid;             // keys [0, valid) are not padded
  std::vector<float> qkv;    // [S, 3E]
  std::vector<float> out;    // [S, E]
  std::vector<uint8_t> pad;  // [S]
  double pairs = 0;          // allowed (query, key) pairs per head
  Problem(int64_t s_, bool causal_) : s(s_), causal(causal_), valid(causal_ ? s_ : s_ - s_ / 4) {
    qkv = random_vector(static_cast<size_t>(s * 3 * kE), -1, 1, 3);
    out.assign(static_cast<size_t>(s * kE), 0.0f);
    pad.assign(static_cast<size_t>(s), 0);
    for (int64_t j = valid; j < s; ++j) pad[static_cast<size_t>(j)] = 1;
    for (int64_t t = 0; t < s; ++t) pairs += static_cast<double>(causal ? t + 1 : valid);
  }
  tk::AttentionArgs args() {
    tk::AttentionArgs g;
    g.batch = 1, g.heads = kHeads, g.q_len = s, g.kv_len = s, g.head_dim = kDim;
    g.q = qkv.data(), g.q_sb = s * 3 * kE, g.q_st = 3 * kE, g.q_sh = kDim;
    g.k = qkv.data() + kE, g.k_sb = g.q_sb, g.k_ss = 3 * kE, g.k_sh = kDim;
    g.v = qkv.data() + 2 * kE, g.v_sb = g.q_sb, g.v_ss = 3 * kE, g.v_sh = kDim;
    g.out = out.data(), g.o_sb = s * kE, g.o_st = kE, g.o_sh = kDim;
    g.scale = 0.125f;
    g.causal = causal;
    if (!causal) g.key_padding = pad.data(), g.kp_sb = s;
    return g;
  }
};

void bench_fused(benchmark::State& st, int64_t s, bool causal, int threads) {
  tk::set_num_threads(threads);
  Problem p(s, causal);
  const tk::AttentionArgs g = p.args();
  for (auto _ : st) {
    tk::attention(g);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(4.0 * kDim * p.pairs * kHeads, st);
}

void bench_unfused(benchmark::State& st, int64_t s, bool causal, int threads) {
  tk::set_num_threads(threads);
  Problem p(s, causal);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> mask(static_cast<size_t>(s * s));  // [S, S]: 0 or -inf
  for (int64_t t = 0; t < s; ++t)
    for (int64_t j = 0; j < s; ++j)
      mask[static_cast<size_t>(t * s + j)] = (causal ? j > t : j >= p.valid) ? kNegInf : 0.0f;
  std::vector<float> q(static_cast<size_t>(s * kE));      // [S, E] scale * Q
  std::vector<float> scores(static_cast<size_t>(s * s));  // [S, S]
  for (auto _ : st) {
    for (int64_t t = 0; t < s; ++t)
      for (int64_t x = 0; x < kE; ++x)
        q[static_cast<size_t>(t * kE + x)] = 0.125f * p.qkv[static_cast<size_t>(t * 3 * kE + x)];
    for (int64_t h = 0; h < kHeads; ++h) {
      const float* k = p.qkv.data() + kE + h * kDim;      // [S, D], row stride 3E
      const float* v = p.qkv.data() + 2 * kE + h * kDim;  // [S, D], row stride 3E
      const tk::PackedWeights kw = tk::pack_weights(k, s, kDim, 3 * kE);
      tk::Epilogue ep;
      ep.residual = mask.data();
      ep.ld_residual = s;
      tk::gemm(s, q.data() + h * kDim, kE, kw, scores.data(), s, ep);
      tk::softmax_rows(s, s, scores.data(), s, scores.data(), s);
      const tk::PackedWeights vw = tk::pack_weights_kn(v, s, kDim, 3 * kE);  // Vᵀ [D, S]
      tk::gemm(s, scores.data(), s, vw, p.out.data() + h * kDim, kE);
    }
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(4.0 * kDim * p.pairs * kHeads, st);
}

void bench_decode(benchmark::State& st, int64_t s, int threads) {
  tk::set_num_threads(threads);
  Problem p(s, true);
  tk::AttentionArgs g = p.args();
  g.q_len = 1;
  g.q = p.qkv.data() + (s - 1) * 3 * kE;
  g.causal_offset = s - 1;
  for (auto _ : st) {
    tk::attention(g);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(4.0 * kDim * static_cast<double>(s) * kHeads, st);
}

void register_suite() {
  for (int threads : thread_counts()) {
    const std::string t = "/threads:" + std::to_string(threads);
    for (int64_t s : {128, 512, 2048}) {
      for (bool causal : {true, false}) {
        const std::string name = "/S" + std::to_string(s) + (causal ? "/causal" : "/padded") + t;
        benchmark::RegisterBenchmark(("attention/fused" + name).c_str(), bench_fused, s, causal,
                                     threads)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("attention/unfused" + name).c_str(), bench_unfused, s, causal,
                                     threads)
            ->UseRealTime();
      }
      benchmark::RegisterBenchmark(("attention/fused/decode/S" + std::to_string(s) + t).c_str(),
                                   bench_decode, s, threads)
          ->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_main(argc, argv, register_suite);
}
