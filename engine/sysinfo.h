// Machine limits for the profiler's roofline: what the CPU is (ISA in use, feature flags, cores,
// caches) and what it can do, measured by short built-in probes (well under a second in all):
//   peak fp32 rate per core: a loop of 12 independent FMA chains in the vector width of the
//     active ISA (engine/sysinfo_probe_*.cpp, compiled per ISA like the kernels), best of 5;
//   memory read bandwidth: a warm 256 MiB buffer summed once per pass, best of 3, with 1 thread
//     and with all kernel threads.
// Both can be overridden (reproducible reports): the value is then taken as given.
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

  double peak_gflops_per_core = 0;  // fp32
  std::string peak_method;
  bool peak_overridden = false;
  double bandwidth_gbs_1t = 0, bandwidth_gbs_all = 0;  // DRAM read, 1e9 B/s
  std::string bandwidth_method;
  bool bandwidth_overridden = false;

  // The roofline's roofs for `threads` threads.
  double peak_gflops() const { return peak_gflops_per_core * threads; }
  double bandwidth_gbs() const { return threads <= 1 ? bandwidth_gbs_1t : bandwidth_gbs_all; }
};

struct SysInfoOptions {
  double peak_gflops_per_core = 0;  // > 0: use this instead of measuring
  double bandwidth_gbs = 0;         // > 0: use this (for 1 and all threads) instead of measuring
};

// Detects the CPU and runs the probes not overridden. Throws Error on a negative override.
SysInfo detect_sysinfo(const SysInfoOptions& opt = {});

nlohmann::json sysinfo_json(const SysInfo& s);
std::string sysinfo_text(const SysInfo& s);

namespace detail {
// Per-ISA probes (engine/sysinfo_probe_*.cpp): `iters` iterations of 12 independent vector
// FMA chains; return a value that depends on every chain (so nothing is optimized away).
// flops performed = iters * 12 * 2 * lanes (lanes 16, 8, 4; the generic probe does a separate
// multiply and add, counted as 2 flops per lane too).
float probe_fma_avx512(int64_t iters, float seed);
float probe_fma_avx2(int64_t iters, float seed);
float probe_fma_generic(int64_t iters, float seed);
}  // namespace detail

}  // namespace tessera
