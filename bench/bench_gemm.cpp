// GEMM suite: C[M,N] = A[M,K] · Wᵀ on the shapes a transformer runs (M x K x N).
//   gemm/tessera/MxKxN/threads:T      Tessera's GEMM (the active ISA), weights prepacked
//   gemm/onednn/MxKxN/threads:T       oneDNN's matmul primitive through Tessera's backend
//                                     switch: the same PackedWeights, reordered once into
//                                     oneDNN's layout (prepacked), primitive cached
//   gemm/dnnl_sgemm/MxKxN/threads:T   dnnl_sgemm on the plain W (no prepacking)
//   gemm_isa/<isa>/MxKxN/threads:1    every ISA this CPU runs, one thread
//   gemm_blocks/l1d32k/MxKxN/threads:T  Tessera blocked as for a 32 KiB L1d / 1 MiB L2 core
//                                     (the Zen 4 blocks: KC 256, MC 128, NC 256), against
//                                     gemm/tessera's blocks from this CPU's caches (M >= 32)
//   gemm_mem/{tessera,onednn}/MxKxN/threads:T   M <= 4 with weights from memory: the call
//                                     cycles through 512 MiB of weight copies (as the DRAM probe)
//                                     (GB/s of weights streamed, and GFLOP/s)
//   membw/{dram_read,l2_read}/threads:T   the bandwidths those are compared with
//   gemm_lowp/{bf16,int8}/tessera/MxKxN/threads:T   Tessera's bf16 / int8 GEMM (the weights
//                                     packed as that type; A converted from fp32 inside every
//                                     call, as a model runs it; C fp32 with the epilogue)
//   gemm_lowp/{bf16,int8}/onednn/MxKxN/threads:T    oneDNN's matmul primitive of the same
//                                     precision: bf16 (A, W bf16, C f32) and int8 (A u8, W s8,
//                                     C s32), weights reordered once into the layout it picks;
//                                     A given already converted (its conversion not timed)
//   gemm_mem_lowp/{bf16,int8}/tessera/MxKxN/threads:T   M <= 4, weights from memory
//                                     (GB/s of weights streamed: 2 or 1 bytes per weight)
// Counters: GFLOP/s = 2 M N K / time (int8: GOP/s, the same count); GB/s (gemm_mem) = bytes of
// weights / time. Wall-clock time.
#include <algorithm>
#include <memory>
#include <string>
#include <unordered_map>

#include "bench/bench_common.hpp"

#ifdef TESSERA_BENCH_DNNL
#include <oneapi/dnnl/dnnl.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using namespace bench;

struct GemmShape {
  int64_t m, k, n;
};
constexpr GemmShape kShapes[] = {{1, 768, 768},     {1, 768, 3072},   {1, 3072, 768},
                                 {1, 768, 50257},   {4, 768, 3072},   {128, 768, 768},
                                 {128, 768, 2304},  {128, 768, 3072}, {128, 3072, 768},
                                 {1024, 768, 3072}, {32, 512, 2048}};
constexpr GemmShape kMemShapes[] = {
    {1, 768, 768}, {1, 768, 3072}, {1, 3072, 768}, {1, 768, 50257}, {4, 768, 3072}};

std::string shape_name(GemmShape s, int threads) {
  return std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n) +
         "/threads:" + std::to_string(threads);
}

// Restores the backend when a benchmark ends.
struct BackendScope {
  tk::GemmBackend before = tk::gemm_backend();
  explicit BackendScope(tk::GemmBackend b) { tk::set_gemm_backend(b); }
  ~BackendScope() { tk::set_gemm_backend(before); }
};

void bench_gemm_as(benchmark::State& st, tk::GemmBackend backend, tk::Isa isa, tk::WeightType type,
                   GemmShape s, int threads) {
  tk::set_num_threads(threads);
  BackendScope scope(backend);
  const std::vector<float> a = random_vector(static_cast<size_t>(s.m * s.k), -1, 1, 1);
  const std::vector<float> w = random_vector(static_cast<size_t>(s.n * s.k), -1, 1, 2);
  std::vector<float> c(static_cast<size_t>(s.m * s.n));
  const tk::PackedWeights pw = tk::pack_weights_as(w.data(), s.n, s.k, s.k, false, type, isa);
  tk::gemm(s.m, a.data(), s.k, pw, c.data(), s.n);  // oneDNN: primitive + weights reorder
  for (auto _ : st) {
    tk::gemm(s.m, a.data(), s.k, pw, c.data(), s.n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(2.0 * s.m * s.n * s.k, st);
}

void bench_gemm(benchmark::State& st, tk::GemmBackend backend, tk::Isa isa, GemmShape s,
                int threads) {
  bench_gemm_as(st, backend, isa, tk::WeightType::f32, s, threads);
}

// Restores the GEMM's cache sizes when a benchmark ends.
struct CacheScope {
  tk::CacheSizes before = tk::gemm_cache_sizes();
  explicit CacheScope(const tk::CacheSizes& c) { tk::set_gemm_cache_sizes(c); }
  ~CacheScope() { tk::set_gemm_cache_sizes(before); }
};

void bench_gemm_blocks(benchmark::State& st, tk::CacheSizes caches, GemmShape s, int threads) {
  CacheScope scope(caches);
  bench_gemm(st, tk::GemmBackend::tessera, tk::active_isa(), s, threads);
  const tk::GemmBlocking b = tk::gemm_blocking(tk::active_isa());
  st.SetLabel("KC " + std::to_string(b.kc) + " MC " + std::to_string(b.mc) + " NC " +
              std::to_string(b.nc));
}

// Weights from memory: `copies` distinct packed copies, together > dram_bytes() (the size of the
// membw/dram_read probe's array), used in turn, so each call streams its weights from DRAM.
// 64 MiB (2x the 32 MiB L3 the Zen 4 VM reports) was not enough: at 2 threads some shapes read
// above the DRAM bandwidth, so part of the working set still came from a cache the VM hides.
const char* lowp_name(tk::WeightType t) {
  return t == tk::WeightType::bf16 ? "bf16" : "int8";
}

void bench_gemm_lowp(benchmark::State& st, tk::WeightType type, GemmShape s, int threads) {
  bench_gemm_as(st, tk::GemmBackend::tessera, tk::active_isa(), type, s, threads);
}

void bench_gemm_mem_as(benchmark::State& st, tk::GemmBackend backend, tk::WeightType type,
                       GemmShape s, int threads) {
  tk::set_num_threads(threads);
  BackendScope scope(backend);
  const double per_weight = type == tk::WeightType::f32    ? 4.0
                            : type == tk::WeightType::bf16 ? 2.0
                                                           : 1.0;
  const double bytes = per_weight * static_cast<double>(s.n * s.k);
  const int copies = static_cast<int>(std::max(2.0, static_cast<double>(dram_bytes()) / bytes + 1));
  const std::vector<float> a = random_vector(static_cast<size_t>(s.m * s.k), -1, 1, 1);
  std::vector<tk::PackedWeights> pws;
  {
    const std::vector<float> w = random_vector(static_cast<size_t>(s.n * s.k), -1, 1, 2);
    for (int i = 0; i < copies; ++i)
      pws.push_back(tk::pack_weights_as(w.data(), s.n, s.k, s.k, false, type));
  }
  std::vector<float> c(static_cast<size_t>(s.m * s.n));
  for (const auto& pw : pws) tk::gemm(s.m, a.data(), s.k, pw, c.data(), s.n);  // warm-up
  size_t i = 0;
  for (auto _ : st) {
    tk::gemm(s.m, a.data(), s.k, pws[i], c.data(), s.n);
    i = (i + 1) % pws.size();
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  st.counters["GB/s"] = per_second(bytes, st);
  st.counters["GFLOP/s"] = per_second(2.0 * s.m * s.n * s.k, st);
}

void bench_gemm_mem(benchmark::State& st, tk::GemmBackend backend, GemmShape s, int threads) {
  bench_gemm_mem_as(st, backend, tk::WeightType::f32, s, threads);
}

void bench_gemm_mem_lowp(benchmark::State& st, tk::WeightType type, GemmShape s, int threads) {
  bench_gemm_mem_as(st, tk::GemmBackend::tessera, type, s, threads);
}

#ifdef TESSERA_BENCH_DNNL
// oneDNN's matmul of the same precision: bf16 x bf16 -> f32, or u8 x s8 -> s32. The weights are
// reordered once into the layout the primitive asks for (format any), as a deployment would.
void bench_dnnl_matmul_lowp(benchmark::State& st, tk::WeightType type, GemmShape s, int threads) {
  using dnnl::memory;
  omp_set_num_threads(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const bool bf16 = type == tk::WeightType::bf16;
  const memory::data_type src_t = bf16 ? memory::data_type::bf16 : memory::data_type::u8;
  const memory::data_type wei_t = bf16 ? memory::data_type::bf16 : memory::data_type::s8;
  const memory::data_type dst_t = bf16 ? memory::data_type::f32 : memory::data_type::s32;
  const memory::desc a_md({s.m, s.k}, src_t, memory::format_tag::ab);
  const memory::desc w_any({s.k, s.n}, wei_t, memory::format_tag::any);
  const memory::desc w_plain({s.k, s.n}, wei_t, memory::format_tag::ba);  // W [N, K] row-major
  const memory::desc c_md({s.m, s.n}, dst_t, memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd;
  try {
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, w_any, c_md), eng);
  } catch (const dnnl::error& e) {
    st.SkipWithError((std::string("oneDNN matmul: ") + e.what()).c_str());
    return;
  }
  // Inputs: A and W of the type (bf16: the bits of random floats rounded; int8: random bytes).
  const std::vector<float> af = random_vector(static_cast<size_t>(s.m * s.k), -1, 1, 1);
  const std::vector<float> wf = random_vector(static_cast<size_t>(s.n * s.k), -1, 1, 2);
  memory a_mem(a_md, eng), w_src(w_plain, eng), w_mem(pd.weights_desc(), eng), c_mem(c_md, eng);
  if (bf16) {
    auto* ap = static_cast<uint16_t*>(a_mem.get_data_handle());
    auto* wp = static_cast<uint16_t*>(w_src.get_data_handle());
    for (size_t i = 0; i < af.size(); ++i) ap[i] = tk::f32_to_bf16(af[i]);
    for (size_t i = 0; i < wf.size(); ++i) wp[i] = tk::f32_to_bf16(wf[i]);
  } else {
    auto* ap = static_cast<uint8_t*>(a_mem.get_data_handle());
    auto* wp = static_cast<int8_t*>(w_src.get_data_handle());
    for (size_t i = 0; i < af.size(); ++i) ap[i] = static_cast<uint8_t>((af[i] + 1.0f) * 127.0f);
    for (size_t i = 0; i < wf.size(); ++i) wp[i] = static_cast<int8_t>(wf[i] * 127.0f);
  }
  dnnl::reorder(w_src, w_mem).execute(strm, w_src, w_mem);
  dnnl::matmul prim(pd);
  const std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, c_mem}};
  prim.execute(strm, args);
  strm.wait();
  for (auto _ : st) {
    prim.execute(strm, args);
    strm.wait();
    benchmark::ClobberMemory();
  }
  st.counters["GFLOP/s"] = per_second(2.0 * s.m * s.n * s.k, st);
  st.SetLabel(pd.impl_info_str());
}

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

void register_suite() {
  const tk::Isa active = tk::active_isa();
  for (const GemmShape& s : kShapes) {
    for (int threads : thread_counts()) {
      benchmark::RegisterBenchmark(("gemm/tessera/" + shape_name(s, threads)).c_str(), bench_gemm,
                                   tk::GemmBackend::tessera, active, s, threads)
          ->UseRealTime();
      if (tk::onednn_available()) {
        benchmark::RegisterBenchmark(("gemm/onednn/" + shape_name(s, threads)).c_str(), bench_gemm,
                                     tk::GemmBackend::onednn, active, s, threads)
            ->UseRealTime();
      }
#ifdef TESSERA_BENCH_DNNL
      benchmark::RegisterBenchmark(("gemm/dnnl_sgemm/" + shape_name(s, threads)).c_str(),
                                   bench_dnnl_sgemm, s, threads)
          ->UseRealTime();
#endif
    }
    if (s.m >= 32) {
      for (int threads : thread_counts()) {
        benchmark::RegisterBenchmark(("gemm_blocks/l1d32k/" + shape_name(s, threads)).c_str(),
                                     bench_gemm_blocks, tk::CacheSizes{32 << 10, 1 << 20, 0}, s,
                                     threads)
            ->UseRealTime();
      }
    }
    for (tk::Isa isa : tk::supported_isas()) {
      benchmark::RegisterBenchmark(
          ("gemm_isa/" + std::string(tk::isa_name(isa)) + "/" + shape_name(s, 1)).c_str(),
          bench_gemm, tk::GemmBackend::tessera, isa, s, 1)
          ->UseRealTime();
    }
  }
  for (tk::WeightType type : {tk::WeightType::bf16, tk::WeightType::int8}) {
    const std::string t = lowp_name(type);
    for (const GemmShape& s : kShapes) {
      for (int threads : thread_counts()) {
        benchmark::RegisterBenchmark(
            ("gemm_lowp/" + t + "/tessera/" + shape_name(s, threads)).c_str(), bench_gemm_lowp,
            type, s, threads)
            ->UseRealTime();
#ifdef TESSERA_BENCH_DNNL
        benchmark::RegisterBenchmark(
            ("gemm_lowp/" + t + "/onednn/" + shape_name(s, threads)).c_str(),
            bench_dnnl_matmul_lowp, type, s, threads)
            ->UseRealTime();
#endif
      }
    }
    for (const GemmShape& s : kMemShapes) {
      for (int threads : thread_counts()) {
        benchmark::RegisterBenchmark(
            ("gemm_mem_lowp/" + t + "/tessera/" + shape_name(s, threads)).c_str(),
            bench_gemm_mem_lowp, type, s, threads)
            ->UseRealTime();
      }
    }
  }
  for (const GemmShape& s : kMemShapes) {
    for (int threads : thread_counts()) {
      benchmark::RegisterBenchmark(("gemm_mem/tessera/" + shape_name(s, threads)).c_str(),
                                   bench_gemm_mem, tk::GemmBackend::tessera, s, threads)
          ->UseRealTime();
      if (tk::onednn_available()) {
        benchmark::RegisterBenchmark(("gemm_mem/onednn/" + shape_name(s, threads)).c_str(),
                                     bench_gemm_mem, tk::GemmBackend::onednn, s, threads)
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
