#include "engine/sysinfo.h"

#include <cpuid.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "kernels/kernels.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return "unknown";
}

// "32K" / "1024K" / "32M" -> bytes.
int64_t parse_size(const std::string& s) {
  if (s.empty()) return 0;
  int64_t v = 0;
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
  if (i < s.size() && (s[i] == 'K' || s[i] == 'k')) v <<= 10;
  if (i < s.size() && (s[i] == 'M' || s[i] == 'm')) v <<= 20;
  return v;
}

std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

void detect_caches(SysInfo& s) {
  // sysfs first: in VMs sysconf may derive sizes from cpuid leaves the hypervisor filled in
  // oddly (this KVM guest: sysconf says L3 320 MiB, sysfs 32 MiB).
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
    const int64_t size = parse_size(read_line(dir + "size"));
    if (level.empty() || size == 0) continue;
    if (level == "1" && type == "Data") s.l1d_bytes = size;
    if (level == "2") s.l2_bytes = size;
    if (level == "3") s.l3_bytes = size;
  }
  if (s.l1d_bytes == 0) s.l1d_bytes = std::max<long>(0, sysconf(_SC_LEVEL1_DCACHE_SIZE));
  if (s.l2_bytes == 0) s.l2_bytes = std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
  if (s.l3_bytes == 0) s.l3_bytes = std::max<long>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
}

void detect_flags(SysInfo& s) {
  __builtin_cpu_init();
  // __builtin_cpu_supports checks that the OS saves the registers too (XCR0).
  s.fma = __builtin_cpu_supports("fma");
  s.avx2 = __builtin_cpu_supports("avx2");
  s.avx512f = __builtin_cpu_supports("avx512f");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (s.avx512f && __get_cpuid_count(7, 0, &a, &b, &c, &d)) s.avx512_vnni = (c >> 11) & 1;
  if (s.avx512f && __get_cpuid_count(7, 1, &a, &b, &c, &d)) s.avx512_bf16 = (a >> 5) & 1;
}

// Peak fp32 rate of one core with the active ISA's vector width: best of 15 runs of ~4 ms
// (short runs, many of them: on a busy machine some land between other processes' slices).
void measure_peak(SysInfo& s) {
  const kernels::Isa isa = kernels::active_isa();
  float (*probe)(int64_t, float) = detail::probe_fma_generic;
  int lanes = 4;
  const char* what = "SSE2 mul+add (xmm)";
  if (isa == kernels::Isa::avx512) {
    probe = detail::probe_fma_avx512;
    lanes = 16;
    what = "AVX-512 vfmadd (zmm)";
  } else if (isa == kernels::Isa::avx2) {
    probe = detail::probe_fma_avx2;
    lanes = 8;
    what = "AVX2 vfmadd (ymm)";
  }
  volatile float sink = probe(20000, 1.0f);  // warm up (clock ramp)
  // Calibrate to ~20 ms per run.
  int64_t iters = 100000;
  for (;;) {
    const auto t0 = Clock::now();
    sink = sink + probe(iters, 1.0f);
    const double t = seconds_since(t0);
    if (t > 0.005 || iters > (int64_t{1} << 34)) {
      iters = std::max<int64_t>(iters, static_cast<int64_t>(iters * 0.004 / std::max(t, 1e-9)));
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int r = 0; r < 15; ++r) {
    const auto t0 = Clock::now();
    sink = sink + probe(iters, 1.0f + static_cast<float>(r));
    const double t = seconds_since(t0);
    best = std::max(best, static_cast<double>(iters) * 12 * 2 * lanes / t / 1e9);
  }
  (void)sink;
  s.peak_gflops_per_core = best;
  s.peak_method =
      std::string("measured: 12 independent ") + what + " chains on 1 thread, best of 15 x ~4 ms";
}

// Sums `n` 64-bit words with `threads` threads (static schedule); returns the sum.
uint64_t sum_words(const uint64_t* p, int64_t n, int threads) {
  uint64_t total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
  for (int64_t i = 0; i < n; ++i) total += p[i];
  return total;
}

void measure_bandwidth(SysInfo& s) {
  constexpr int64_t kBytes = int64_t{256} << 20;
  constexpr int64_t kWords = kBytes / 8;
  std::unique_ptr<uint64_t[]> buf(new uint64_t[kWords]);
  const int all = std::max(1, s.threads);
  // First touch by the threads that will read it; also makes the buffer resident.
#pragma omp parallel for num_threads(all) schedule(static)
  for (int64_t i = 0; i < kWords; ++i) buf[i] = static_cast<uint64_t>(i);
  volatile uint64_t sink = 0;
  auto best_of_3 = [&](int threads) {
    sink = sink + sum_words(buf.get(), kWords, threads);  // warm (threads spun up)
    double best = 0;
    for (int r = 0; r < 3; ++r) {
      const auto t0 = Clock::now();
      sink = sink + sum_words(buf.get(), kWords, threads);
      best = std::max(best, static_cast<double>(kBytes) / seconds_since(t0) / 1e9);
    }
    return best;
  };
  s.bandwidth_gbs_1t = best_of_3(1);
  s.bandwidth_gbs_all = all > 1 ? best_of_3(all) : s.bandwidth_gbs_1t;
  (void)sink;
  s.bandwidth_method = "measured: sum of a warm 256 MiB buffer (64-bit words), best of 3, " +
                       (all > 1 ? "1 and " + std::to_string(all) + " threads" : "1 thread");
}

std::string fmt(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

std::string kib(int64_t b) {
  if (b <= 0) return "unknown";
  if (b >= (int64_t{1} << 20) && b % (int64_t{1} << 20) == 0)
    return std::to_string(b >> 20) + " MiB";
  return std::to_string(b >> 10) + " KiB";
}

}  // namespace

SysInfo detect_sysinfo(const SysInfoOptions& opt) {
  if (opt.peak_gflops_per_core < 0) throw Error("--peak-gflops must be positive");
  if (opt.bandwidth_gbs < 0) throw Error("--bandwidth-gbs must be positive");
  SysInfo s;
  s.cpu_model = cpu_model_name();
  s.isa = kernels::isa_name(kernels::active_isa());
  detect_flags(s);
  s.cores = static_cast<int>(std::thread::hardware_concurrency());
  if (s.cores <= 0) s.cores = static_cast<int>(std::max<long>(1, sysconf(_SC_NPROCESSORS_ONLN)));
  s.threads = kernels::num_threads();
  detect_caches(s);
  if (opt.peak_gflops_per_core > 0) {
    s.peak_gflops_per_core = opt.peak_gflops_per_core;
    s.peak_method = "given (--peak-gflops)";
    s.peak_overridden = true;
  } else {
    measure_peak(s);
  }
  if (opt.bandwidth_gbs > 0) {
    s.bandwidth_gbs_1t = s.bandwidth_gbs_all = opt.bandwidth_gbs;
    s.bandwidth_method = "given (--bandwidth-gbs)";
    s.bandwidth_overridden = true;
  } else {
    measure_bandwidth(s);
  }
  return s;
}

nlohmann::json sysinfo_json(const SysInfo& s) {
  return {
      {"cpu_model", s.cpu_model},
      {"isa", s.isa},
      {"flags",
       {{"fma", s.fma},
        {"avx2", s.avx2},
        {"avx512f", s.avx512f},
        {"avx512_bf16", s.avx512_bf16},
        {"avx512_vnni", s.avx512_vnni}}},
      {"cores", s.cores},
      {"threads", s.threads},
      {"cache_bytes", {{"l1d", s.l1d_bytes}, {"l2", s.l2_bytes}, {"l3", s.l3_bytes}}},
      {"peak_gflops_per_core", s.peak_gflops_per_core},
      {"peak_gflops", s.peak_gflops()},
      {"peak_method", s.peak_method},
      {"bandwidth_gbs_1t", s.bandwidth_gbs_1t},
      {"bandwidth_gbs_all", s.bandwidth_gbs_all},
      {"bandwidth_gbs", s.bandwidth_gbs()},
      {"bandwidth_method", s.bandwidth_method},
  };
}

std::string sysinfo_text(const SysInfo& s) {
  std::ostringstream o;
  auto yn = [](bool b) { return b ? "yes" : "no"; };
  o << "cpu:        " << s.cpu_model << "\n"
    << "isa:        " << s.isa << " (kernels in use)\n"
    << "flags:      FMA " << yn(s.fma) << ", AVX2 " << yn(s.avx2) << ", AVX-512F " << yn(s.avx512f)
    << ", AVX512-BF16 " << yn(s.avx512_bf16) << ", AVX512-VNNI " << yn(s.avx512_vnni) << "\n"
    << "cores:      " << s.cores << " (kernel threads: " << s.threads << ")\n"
    << "caches:     L1d " << kib(s.l1d_bytes) << ", L2 " << kib(s.l2_bytes) << ", L3 "
    << kib(s.l3_bytes) << "\n"
    << "peak fp32:  " << fmt(s.peak_gflops_per_core, 1) << " GFLOP/s per core, "
    << fmt(s.peak_gflops(), 1) << " GFLOP/s for " << s.threads << " threads\n"
    << "            (" << s.peak_method << ")\n"
    << "bandwidth:  " << fmt(s.bandwidth_gbs_1t, 1) << " GB/s (1 thread), "
    << fmt(s.bandwidth_gbs_all, 1) << " GB/s (" << s.threads << " threads), DRAM read\n"
    << "            (" << s.bandwidth_method << ")\n"
    << "roofline:   min(" << fmt(s.peak_gflops(), 1) << " GFLOP/s, intensity x "
    << fmt(s.bandwidth_gbs(), 1) << " GB/s); ridge at "
    << fmt(s.peak_gflops() / std::max(s.bandwidth_gbs(), 1e-9), 2) << " flop/byte\n";
  return o.str();
}

}  // namespace tessera
