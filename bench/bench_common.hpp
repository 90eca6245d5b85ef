// Shared by the kernel benchmark suites (bench_gemm, bench_attention, bench_rows, bench_math).
//   membw/dram_read/threads:T   read bandwidth of an array far larger than the last-level cache
//                               the CPU reports (dram_bytes()): GB/s
//   membw/l2_read/threads:T     read bandwidth of a quarter of the L2 per thread: GB/s
// Both suites that compare with a bandwidth register these, so every table's "fraction of
// bandwidth" divides by a number measured in the same run.
#pragma once

#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace bench {

namespace tk = tessera::kernels;

inline std::vector<float> random_vector(size_t n, float lo, float hi, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

inline benchmark::Counter per_second(double amount_per_iteration, benchmark::State& st) {
  return benchmark::Counter(amount_per_iteration * static_cast<double>(st.iterations()) * 1e-9,
                            benchmark::Counter::kIsRate);
}

// 1, and the machine's thread count if larger.
inline std::vector<int> thread_counts() {
  std::vector<int> t{1};
  if (omp_get_max_threads() > 1) t.push_back(omp_get_max_threads());
  return t;
}

// Size in bytes of the cache of the given level (1 = L1d, 2, 3) the CPU reports (sysfs of cpu0,
// else sysconf), 0 when unknown.
inline int64_t cache_bytes(int level) {
  int64_t found = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream fl(dir + "level"), ft(dir + "type"), fs(dir + "size");
    int l = 0;
    std::string type, size;
    if (!(fl >> l) || !(ft >> type) || !(fs >> size) || l != level || type == "Instruction")
      continue;
    int64_t bytes = std::atoll(size.c_str());
    if (size.back() == 'K') bytes <<= 10;
    if (size.back() == 'M') bytes <<= 20;
    found = std::max(found, bytes);
  }
  if (found > 0) return found;
  // No sysfs cache directory (some VMs): what glibc derives from cpuid.
  const long v = sysconf(level == 1   ? _SC_LEVEL1_DCACHE_SIZE
                         : level == 2 ? _SC_LEVEL2_CACHE_SIZE
                                      : _SC_LEVEL3_CACHE_SIZE);
  return v > 0 ? v : 0;
}

// Bytes a benchmark must stream to be sure they come from DRAM: twice the largest cache level
// the CPU reports, and at least 1 GiB. (VMs report odd L3 sizes: 32 MiB on the Zen 4 machine,
// where 64 MiB still hit a cache at 2 threads; 508 MiB on the Zen 5 one.)
inline int64_t dram_bytes() {
  return std::max(int64_t{1} << 30, 2 * std::max({cache_bytes(1), cache_bytes(2), cache_bytes(3)}));
}

// Sum of p[0, n) with 64-byte AVX-512 loads and 8 independent accumulators (the compiler
// vectorizes it under the target attribute).
__attribute__((target("avx512f"))) inline float read_sum_avx512(const float* p, int64_t n) {
  float acc[128] = {};
  for (int64_t i = 0; i + 128 <= n; i += 128)
    for (int j = 0; j < 128; ++j) acc[j] += p[i + j];
  float s = 0;
  for (float a : acc) s += a;
  return s;
}
// Sum of p[0, n) with 32-byte AVX2 loads and 8 independent accumulators (the compiler
// vectorizes it under the target attribute); the bandwidth probes' inner loop.
__attribute__((target("avx2,fma"))) inline float read_sum_avx2(const float* p, int64_t n) {
  float acc[64] = {};
  for (int64_t i = 0; i + 64 <= n; i += 64)
    for (int j = 0; j < 64; ++j) acc[j] += p[i + j];
  float s = 0;
  for (float a : acc) s += a;
  return s;
}
inline float read_sum_plain(const float* p, int64_t n) {
  float acc[16] = {};
  for (int64_t i = 0; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
  float s = 0;
  for (float a : acc) s += a;
  return s;
}
inline float read_sum(const float* p, int64_t n) {
  if (__builtin_cpu_supports("avx512f")) return read_sum_avx512(p, n);
  return __builtin_cpu_supports("avx2") ? read_sum_avx2(p, n) : read_sum_plain(p, n);
}
// Sum of p[0, n) read as 4 concurrent streams (its quarters, in lockstep, one 64-byte line of
// each per step, 16 accumulators): one sequential stream leaves DRAM bandwidth unused (a core's
// prefetchers track few lines per stream; 24.5 GB/s against 41 with 4 streams on a Zen 5 core).
__attribute__((target("avx512f"))) inline float read_sum4_avx512(const float* p, int64_t n) {
  const int64_t q = n / 4 / 64 * 64;  // floats per stream, whole 4-line groups
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t i = 0; i < q; i += 64)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 4; ++l)
        acc[4 * s + l] = _mm512_add_ps(acc[4 * s + l], _mm512_loadu_ps(p + s * q + i + 16 * l));
  __m512 t = acc[0];
  for (int j = 1; j < 16; ++j) t = _mm512_add_ps(t, acc[j]);
  alignas(64) float lanes[16];  // not _mm512_reduce_add_ps: GCC 12 warns inside it (-Werror)
  _mm512_store_ps(lanes, t);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}
inline float read_sum_streams(const float* p, int64_t n) {
  if (__builtin_cpu_supports("avx512f")) return read_sum4_avx512(p, n);
  const int64_t q = n / 4;
  return read_sum(p, q) + read_sum(p + q, q) + read_sum(p + 2 * q, q) + read_sum(p + 3 * q, q);
}

// Each of `threads` threads reads its own `floats_per_thread` floats, `passes` times per
// iteration. GB/s = bytes read / time.
inline void bench_read_bandwidth(benchmark::State& st, int64_t floats_per_thread, int passes,
                                 int threads) {
  // Huge pages, as the engine's own large buffers (tk::allocate_aligned): with 4 KiB pages a
  // VM's two-level page walks cut the DRAM figure (31.8 against 41 GB/s on a Zen 5 guest).
  const size_t floats = static_cast<size_t>(floats_per_thread * threads);
  auto release = [floats](float* p) { tk::free_aligned(p, floats * sizeof(float)); };
  std::unique_ptr<float, decltype(release)> buffer(
      static_cast<float*>(tk::allocate_aligned(floats * sizeof(float))), release);
  float* data = buffer.get();
  std::fill(data, data + floats, 1.0f);
  float sink = 0;
  for (auto _ : st) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      const float* p = data + omp_get_thread_num() * floats_per_thread;
      for (int r = 0; r < passes; ++r) sink += read_sum_streams(p, floats_per_thread);
    }
    benchmark::DoNotOptimize(sink);
  }
  st.counters["GB/s"] =
      per_second(4.0 * static_cast<double>(floats_per_thread) * threads * passes, st);
}

inline void register_bandwidth_probes() {
  for (int threads : thread_counts()) {
    const std::string t = "/threads:" + std::to_string(threads);
    // dram_bytes() in all, so every pass comes from DRAM.
    benchmark::RegisterBenchmark(("membw/dram_read" + t).c_str(), bench_read_bandwidth,
                                 dram_bytes() / 4 / threads, 1, threads)
        ->UseRealTime();
    // A quarter of the L2 per thread (256 KiB if unknown), read 64 times per iteration.
    const int64_t l2 = cache_bytes(2) > 0 ? cache_bytes(2) : int64_t{1} << 20;
    benchmark::RegisterBenchmark(("membw/l2_read" + t).c_str(), bench_read_bandwidth, l2 / 4 / 4,
                                 64, threads)
        ->UseRealTime();
  }
}

inline int run_main(int argc, char** argv, void (*register_suite)()) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("tessera_isa", tk::isa_name(tk::active_isa()));
  register_suite();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
