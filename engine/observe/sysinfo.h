// Machine limits for the profiler's roofline: what the CPU is (ISA in use, feature flags, cores,
// caches) and what it can do, measured by short built-in probes (0.5-2.5 s in all, most of it
// the first touch of the DRAM probe's buffer; engine/observe/sysinfo_probe_*.cpp, each compiled
// with its ISA's flags alone and called only when the CPU has that ISA):
//   peak fp32 rate per core: 12 independent FMA chains in the vector width of the active ISA;
//   peak bf16 / int8 dot-product rate per core: 16 independent vdpbf16ps (AVX512-BF16) /
//     vpdpbusd (AVX512-VNNI) chains, 0 where the CPU lacks the instruction;
//   L1 / L2 read bandwidth: a private buffer of half the L1d / L2 per thread, read as 2 streams
//     with full-width loads into 16 independent accumulators, 1 thread and all kernel threads;
//   DRAM read bandwidth: the same read loop (4 streams per thread) over a buffer far larger
//     than the last-level cache (max(1 GiB, 2 x L3), at most a quarter of physical memory),
//     1 thread and all kernel threads.
// One-thread figures are timed with the thread's CPU time, best of many short runs, so that a
// busy machine does not push them far below the truth (tests use them as upper bounds);
// all-thread figures with wall time, best of several runs.
// The fp32 peak and the DRAM bandwidth can be overridden (reproducible reports): the value is
// then taken as given.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace tessera {

struct SysInfo {
  std::string cpu_model;  // /proc/cpuinfo "model name"
  std::string isa;        // kernels::active_isa()
  bool fma = false, avx2 = false, avx512f = false, avx512_bf16 = false, avx512_vnni = false;
  int cores = 0;                                      // logical CPUs online
  int threads = 0;                                    // kernels::num_threads()
  int64_t l1d_bytes = 0, l2_bytes = 0, l3_bytes = 0;  // 0 = unknown
  // The active ISA's GEMM register tile and the cache blocks derived from the sizes above.
  int64_t gemm_mr = 0, gemm_nr = 0, gemm_kc = 0, gemm_mc = 0, gemm_nc = 0;

  double peak_gflops_per_core = 0;  // fp32
  std::string peak_method;
  bool peak_overridden = false;
  double peak_bf16_gflops_per_core = 0;  // vdpbf16ps; 0 = not available on this CPU
  std::string peak_bf16_method;
  double peak_int8_gops_per_core = 0;  // vpdpbusd (u8 x s8); 0 = not available on this CPU
  std::string peak_int8_method;
  double bandwidth_gbs_1t = 0, bandwidth_gbs_all = 0;  // DRAM read, 1e9 B/s
  std::string bandwidth_method;
  bool bandwidth_overridden = false;
  // Cache-resident read bandwidth, 1e9 B/s summed over the threads (private buffers).
  double l1_read_gbs_1t = 0, l1_read_gbs_all = 0, l2_read_gbs_1t = 0, l2_read_gbs_all = 0;
  std::string cache_bandwidth_method;
  double probe_seconds = 0;       // wall time spent in the probes
  bool bandwidth_cached = false;  // DRAM figures read from the cache (reuse_cached_dram)

  // The roofline's roofs for `threads` threads.
  double peak_gflops() const { return peak_gflops_per_core * threads; }
  double bandwidth_gbs() const { return threads <= 1 ? bandwidth_gbs_1t : bandwidth_gbs_all; }
};

struct SysInfoOptions {
  double peak_gflops_per_core = 0;  // > 0: use this instead of measuring
  double bandwidth_gbs = 0;         // > 0: use this (for 1 and all threads) instead of measuring
  // Take the DRAM figures from the cache file of an earlier measurement on this machine (same
  // CPU model, cores, threads, L3, memory size and ISA) when there is one. Most of the DRAM
  // probe's time is the first touch of its >= 1 GiB buffer (~1.5 s on a VM whose host backs
  // memory lazily); `tessera profile` reuses, `tessera sysinfo` always measures. Every
  // measurement goes to the cache, which keeps the highest figures seen per key (load from
  // other processes only lowers them; delete the file to start afresh):
  // $TESSERA_CACHE_DIR/dram-bandwidth.json, else $XDG_CACHE_HOME/tessera/, else ~/.cache/tessera/
  // (failures to read or write are ignored).
  bool reuse_cached_dram = false;
};

// Detects the CPU and runs the probes not overridden. Throws Error on a negative override.
SysInfo detect_sysinfo(const SysInfoOptions& opt = {});

nlohmann::json sysinfo_json(const SysInfo& s);
std::string sysinfo_text(const SysInfo& s);

namespace detail {
// Per-ISA probes (engine/observe/sysinfo_probe_*.cpp): `iters` iterations of 12 independent vector
// FMA chains; return a value that depends on every chain (so nothing is optimized away).
// flops performed = iters * 12 * 2 * lanes (lanes 16, 8, 4; the generic probe does a separate
// multiply and add, counted as 2 flops per lane too).
float probe_fma_avx512(int64_t iters, float seed);
float probe_fma_avx2(int64_t iters, float seed);
float probe_fma_generic(int64_t iters, float seed);
// `iters` iterations of 16 independent zmm dot-product chains: vdpbf16ps (64 flop each;
// -mavx512bf16) and vpdpbusd (128 ops each; -mavx512vnni). Call only when the CPU has them.
float probe_bf16_avx512(int64_t iters, float seed);
int32_t probe_int8_avx512(int64_t iters, int32_t seed);
// `passes` reads of p[0, n), n a multiple of 256 floats, as `streams` (2 or 4) streams, the
// buffer's parts read side by side, with full-width loads into 16 independent accumulators;
// returns their sum. DRAM wants 4 (more lines in flight); cache-resident reads 2 (on Zen 5, 4
// streams read L2 ~10 % slower than 1 or 2: 195 against 213 GB/s).
float probe_read_avx512(const float* p, int64_t n, int64_t passes, int streams);
float probe_read_avx2(const float* p, int64_t n, int64_t passes, int streams);
float probe_read_generic(const float* p, int64_t n, int64_t passes, int streams);
}  // namespace detail

}  // namespace tessera
