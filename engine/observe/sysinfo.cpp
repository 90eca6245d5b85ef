#include "engine/observe/sysinfo.h"

#include <cpuid.h>
#include <omp.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "engine/io/error.h"
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

void detect_caches(SysInfo& s) {
  // The sizes the kernels block for (sysfs, else sysconf): one detection for both.
  const kernels::CacheSizes c = kernels::detected_cache_sizes();
  s.l1d_bytes = c.l1d;
  s.l2_bytes = c.l2;
  s.l3_bytes = c.l3;
  const kernels::GemmBlocking b = kernels::gemm_blocking(kernels::active_isa());
  s.gemm_mr = b.mr;
  s.gemm_nr = b.nr;
  s.gemm_kc = b.kc;
  s.gemm_mc = b.mc;
  s.gemm_nc = b.nc;
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

// CPU time of the calling thread: what a one-thread probe is timed with, so that the time the
// thread spends descheduled on a busy machine does not count.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best rate (work units per second) of `runs` runs of run(n) on the calling thread, timed with
// its CPU time; n is first calibrated so that one run takes about `target_s` (short runs, many
// of them: on a busy machine some land between other processes' slices, and the warm-up lets
// the clock ramp). run(n) performs n * work_per_n units of work.
template <class Run>
double best_rate_1t(Run&& run, double work_per_n, int64_t n0, double target_s, int runs) {
  run(n0);  // warm up
  int64_t n = n0;
  for (;;) {
    const double t0 = thread_cpu_seconds();
    run(n);
    const double t = thread_cpu_seconds() - t0;
    if (t > target_s / 4 || n > (int64_t{1} << 40)) {
      n = std::max<int64_t>(
          1, static_cast<int64_t>(static_cast<double>(n) * target_s / std::max(t, 1e-9)));
      break;
    }
    n *= 4;
  }
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    const double t0 = thread_cpu_seconds();
    run(n);
    const double t = thread_cpu_seconds() - t0;
    best = std::max(best, static_cast<double>(n) * work_per_n / std::max(t, 1e-9));
  }
  return best;
}

using ReadProbe = float (*)(const float*, int64_t, int64_t, int);

// Streams per thread of the read probes: DRAM wants several (more lines in flight from memory);
// cache-resident reads go faster with fewer (L2 on Zen 5: 213 GB/s with 2, 195 with 4).
constexpr int kCacheStreams = 2, kDramStreams = 4;

ReadProbe read_probe(kernels::Isa isa) {
  if (isa == kernels::Isa::avx512) return detail::probe_read_avx512;
  if (isa == kernels::Isa::avx2) return detail::probe_read_avx2;
  return detail::probe_read_generic;
}

volatile float g_sink = 0;  // every probe's result lands here (nothing optimized away)

// Peak rates of one core: fp32 FMA with the active ISA's vector width, and the AVX-512 bf16 /
// int8 dot products where the CPU has them. Each: best of 15 runs of ~3 ms of CPU time.
void measure_peaks(SysInfo& s, bool fp32) {
  constexpr int kRuns = 15;
  constexpr double kRunS = 0.003;
  const std::string how = " on 1 thread, best of 15 x ~3 ms of thread CPU time";
  if (fp32) {
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
    s.peak_gflops_per_core = best_rate_1t([&](int64_t n) { g_sink = g_sink + probe(n, 1.0f); },
                                          12.0 * 2 * lanes, 20000, kRunS, kRuns) /
                             1e9;
    s.peak_method = std::string("measured: 12 independent ") + what + " chains" + how;
  }
  if (s.avx512_bf16) {
    s.peak_bf16_gflops_per_core =
        best_rate_1t([&](int64_t n) { g_sink = g_sink + detail::probe_bf16_avx512(n, 1.0f); },
                     16.0 * 64, 20000, kRunS, kRuns) /
        1e9;
    s.peak_bf16_method =
        "measured: 16 independent AVX512-BF16 vdpbf16ps (zmm, 64 flop) chains" + how;
  } else {
    s.peak_bf16_method = "not available (no AVX512-BF16)";
  }
  if (s.avx512_vnni) {
    s.peak_int8_gops_per_core =
        best_rate_1t(
            [&](int64_t n) {
              g_sink = g_sink + static_cast<float>(detail::probe_int8_avx512(n, 1));
            },
            16.0 * 128, 20000, kRunS, kRuns) /
        1e9;
    s.peak_int8_method =
        "measured: 16 independent AVX512-VNNI vpdpbusd (zmm, 64 u8 x s8 = 128 ops) chains" + how;
  } else {
    s.peak_int8_method = "not available (no AVX512-VNNI)";
  }
}

// A buffer of `bytes` (a multiple of 1 KiB) aligned to 2 MiB, on transparent huge pages where
// the kernel allows (fewer TLB misses, faster first touch), not yet touched.
struct Buffer {
  float* p = nullptr;
  int64_t n = 0;  // floats
  explicit Buffer(int64_t bytes) : n(bytes / 4) {
    constexpr size_t kAlign = size_t{2} << 20;
    const size_t size = (static_cast<size_t>(bytes) + kAlign - 1) / kAlign * kAlign;
    p = static_cast<float*>(std::aligned_alloc(kAlign, size));
    if (p == nullptr) throw Error("sysinfo: cannot allocate " + std::to_string(bytes) + " bytes");
    madvise(p, size, MADV_HUGEPAGE);  // a hint; failure is fine
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void fill(int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) p[i] = 1.0f;
  }
};

// Read bandwidth (1e9 B/s) of `threads` threads each reading its own private buffer of `bytes`
// `passes` times per run: best of `runs`, wall time from the barrier that starts every thread to
// the one that ends the last.
double read_gbs_all(ReadProbe probe, int threads, int64_t bytes, int64_t passes, int runs) {
  double best = 0;
#pragma omp parallel num_threads(threads)
  {
    Buffer b(bytes);  // first touch by the thread that reads it
    b.fill(0, b.n);
    g_sink = g_sink + probe(b.p, b.n, passes, kCacheStreams);  // warm up
    for (int r = 0; r < runs; ++r) {
      Clock::time_point t0;
#pragma omp barrier
#pragma omp master
      t0 = Clock::now();
      const float v = probe(b.p, b.n, passes, kCacheStreams);
#pragma omp barrier
#pragma omp master
      {
        g_sink = g_sink + v;
        best = std::max(best, static_cast<double>(bytes) * static_cast<double>(passes) * threads /
                                  seconds_since(t0) / 1e9);
      }
    }
  }
  return best;
}

// Half of a cache level, in whole KiB (the probe reads 4 streams of 256 B per step).
int64_t half_cache(int64_t bytes, int64_t fallback) {
  const int64_t b = bytes > 0 ? bytes : fallback;
  return std::max<int64_t>(1024, b / 2 / 1024 * 1024);
}

void measure_cache_bandwidth(SysInfo& s) {
  const ReadProbe probe = read_probe(kernels::active_isa());
  const int all = std::max(1, s.threads);
  const int64_t l1 = half_cache(s.l1d_bytes, 32 << 10), l2 = half_cache(s.l2_bytes, 512 << 10);
  auto one_thread = [&](int64_t bytes) {
    Buffer b(bytes);
    b.fill(0, b.n);
    return best_rate_1t([&](int64_t n) { g_sink = g_sink + probe(b.p, b.n, n, kCacheStreams); },
                        static_cast<double>(bytes), 16, 0.002, 15) /
           1e9;
  };
  s.l1_read_gbs_1t = one_thread(l1);
  s.l2_read_gbs_1t = one_thread(l2);
  // Passes per run for ~2 ms at the one-thread rate.
  auto passes = [](int64_t bytes, double gbs) {
    return std::max<int64_t>(1, static_cast<int64_t>(0.002 * gbs * 1e9 / bytes));
  };
  s.l1_read_gbs_all =
      all > 1 ? read_gbs_all(probe, all, l1, passes(l1, s.l1_read_gbs_1t), 15) : s.l1_read_gbs_1t;
  s.l2_read_gbs_all =
      all > 1 ? read_gbs_all(probe, all, l2, passes(l2, s.l2_read_gbs_1t), 15) : s.l2_read_gbs_1t;
  s.cache_bandwidth_method =
      "measured: a private buffer per thread of half the L1d (" + std::to_string(l1 >> 10) +
      " KiB) / L2 (" + std::to_string(l2 >> 10) +
      " KiB), 2 streams, full-width loads into 16 accumulators; 1 thread: best of 15 "
      "x ~2 ms of thread CPU time; " +
      std::to_string(all) + " threads: best of 15 x ~2 ms wall";
}

void measure_dram_bandwidth(SysInfo& s) {
  const int all = std::max(1, s.threads);
  // Far larger than the last-level cache: max(1 GiB, 2 x L3), at most a quarter of memory.
  const int64_t phys = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  int64_t bytes = std::max<int64_t>(int64_t{1} << 30, 2 * s.l3_bytes);
  if (phys > 0) bytes = std::min(bytes, phys / 4);
  const int64_t unit = int64_t{1024} * all;  // every thread's share a multiple of 1 KiB
  bytes = std::max(unit, bytes / unit * unit);
  Buffer b(bytes);
  const int64_t share = b.n / all;  // floats per thread
  // First touch in parallel, each thread the share it reads below.
#pragma omp parallel num_threads(all)
  {
    const int64_t t = omp_get_thread_num();
    b.fill(t * share, (t + 1) * share);
  }
  const ReadProbe probe = read_probe(kernels::active_isa());
  constexpr int kRuns = 3;
  // One thread: the whole buffer, best of 3 passes (thread CPU time), after one warm pass.
  g_sink = g_sink + probe(b.p, b.n, 1, kDramStreams);
  double best1 = 0;
  for (int r = 0; r < kRuns; ++r) {
    const double t0 = thread_cpu_seconds();
    g_sink = g_sink + probe(b.p, b.n, 1, kDramStreams);
    best1 = std::max(best1, static_cast<double>(bytes) / (thread_cpu_seconds() - t0) / 1e9);
  }
  s.bandwidth_gbs_1t = best1;
  double best = best1;
  if (all > 1) {
    best = 0;
#pragma omp parallel num_threads(all)
    {
      const float* mine = b.p + omp_get_thread_num() * share;
      g_sink = g_sink + probe(mine, share, 1, kDramStreams);  // warm up
      for (int r = 0; r < kRuns; ++r) {
        Clock::time_point t0;
#pragma omp barrier
#pragma omp master
        t0 = Clock::now();
        const float v = probe(mine, share, 1, kDramStreams);
#pragma omp barrier
#pragma omp master
        {
          g_sink = g_sink + v;
          best = std::max(best, static_cast<double>(bytes) / seconds_since(t0) / 1e9);
        }
      }
    }
  }
  s.bandwidth_gbs_all = best;
  s.bandwidth_method =
      "measured: read of a " + std::to_string(bytes >> 20) +
      " MiB buffer (max(1 GiB, 2 x L3), at most 1/4 of memory), 4 streams per thread, "
      "full-width loads, 16 accumulators; 1 thread: best of 3 (thread CPU time)" +
      (all > 1 ? "; " + std::to_string(all) + " threads: best of 3 (wall)" : "");
}

// The DRAM figures' cache (SysInfoOptions::reuse_cached_dram): one JSON object, one entry per
// machine key.
std::string dram_cache_path() {
  const char* dir = std::getenv("TESSERA_CACHE_DIR");
  if (dir != nullptr && *dir != '\0') return std::string(dir) + "/dram-bandwidth.json";
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && *xdg != '\0') return std::string(xdg) + "/tessera/dram-bandwidth.json";
  const char* home = std::getenv("HOME");
  if (home != nullptr && *home != '\0')
    return std::string(home) + "/.cache/tessera/dram-bandwidth.json";
  return "";
}

std::string dram_cache_key(const SysInfo& s) {
  const int64_t phys = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  return s.cpu_model + " | " + std::to_string(s.cores) + " cores | " + std::to_string(s.threads) +
         " threads | L3 " + std::to_string(s.l3_bytes) + " | mem " + std::to_string(phys) + " | " +
         s.isa;
}

nlohmann::json read_dram_cache(const std::string& path) {
  std::ifstream f(path);
  if (!f) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

bool load_dram_cache(SysInfo& s) {
  const std::string path = dram_cache_path();
  if (path.empty()) return false;
  const nlohmann::json j = read_dram_cache(path);
  const auto it = j.find(dram_cache_key(s));
  if (it == j.end() || !it->is_object()) return false;
  const double one = it->value("bandwidth_gbs_1t", 0.0), all = it->value("bandwidth_gbs_all", 0.0);
  if (!(one > 0) || !(all > 0)) return false;
  s.bandwidth_gbs_1t = one;
  s.bandwidth_gbs_all = all;
  s.bandwidth_method =
      "cached (" + path + ", " + it->value("measured_at", std::string("?")) +
      "; `tessera sysinfo` measures afresh): " + it->value("bandwidth_method", std::string());
  s.bandwidth_cached = true;
  return true;
}

void save_dram_cache(const SysInfo& s) {
  const std::string path = dram_cache_path();
  if (path.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  nlohmann::json j = read_dram_cache(path);
  char when[32] = "?";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (gmtime_r(&now, &tm) != nullptr) std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  // Keep the higher of the cached and the new figure: another process's load only lowers a
  // measured bandwidth, so the highest seen on this machine key is the least disturbed.
  const std::string key = dram_cache_key(s);
  double one = s.bandwidth_gbs_1t, all = s.bandwidth_gbs_all;
  if (const auto it = j.find(key); it != j.end() && it->is_object()) {
    one = std::max(one, it->value("bandwidth_gbs_1t", 0.0));
    all = std::max(all, it->value("bandwidth_gbs_all", 0.0));
  }
  j[key] = {{"bandwidth_gbs_1t", one},
            {"bandwidth_gbs_all", all},
            {"bandwidth_method", s.bandwidth_method + "; highest of the measurements since the "
                                                      "cache file was made"},
            {"measured_at", when}};
  // Write aside and rename: a concurrent reader sees the old file or the new one.
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp);
    if (!f) return;
    f << j.dump(2) << '\n';
    if (!f) {
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp, ec);
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
  const auto t_start = Clock::now();
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
  }
  measure_peaks(s, !s.peak_overridden);
  measure_cache_bandwidth(s);
  if (opt.bandwidth_gbs > 0) {
    s.bandwidth_gbs_1t = s.bandwidth_gbs_all = opt.bandwidth_gbs;
    s.bandwidth_method = "given (--bandwidth-gbs)";
    s.bandwidth_overridden = true;
  } else if (!(opt.reuse_cached_dram && load_dram_cache(s))) {
    measure_dram_bandwidth(s);
    save_dram_cache(s);
  }
  s.probe_seconds = seconds_since(t_start);
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
      {"gemm_blocking",
       {{"mr", s.gemm_mr},
        {"nr", s.gemm_nr},
        {"kc", s.gemm_kc},
        {"mc", s.gemm_mc},
        {"nc", s.gemm_nc}}},
      {"peak_gflops_per_core", s.peak_gflops_per_core},
      {"peak_gflops", s.peak_gflops()},
      {"peak_method", s.peak_method},
      {"bandwidth_gbs_1t", s.bandwidth_gbs_1t},
      {"bandwidth_gbs_all", s.bandwidth_gbs_all},
      {"bandwidth_gbs", s.bandwidth_gbs()},
      {"bandwidth_method", s.bandwidth_method},
      {"bandwidth_cached", s.bandwidth_cached},
      {"peak_bf16_gflops_per_core", s.peak_bf16_gflops_per_core},  // 0: not available
      {"peak_bf16_gflops", s.peak_bf16_gflops_per_core * s.threads},
      {"peak_bf16_method", s.peak_bf16_method},
      {"peak_int8_gops_per_core", s.peak_int8_gops_per_core},  // 0: not available
      {"peak_int8_gops", s.peak_int8_gops_per_core * s.threads},
      {"peak_int8_method", s.peak_int8_method},
      {"l1_read_gbs_1t", s.l1_read_gbs_1t},
      {"l1_read_gbs_all", s.l1_read_gbs_all},
      {"l2_read_gbs_1t", s.l2_read_gbs_1t},
      {"l2_read_gbs_all", s.l2_read_gbs_all},
      {"cache_bandwidth_method", s.cache_bandwidth_method},
      {"probe_seconds", s.probe_seconds},
  };
}

std::string sysinfo_text(const SysInfo& s) {
  std::ostringstream o;
  auto yn = [](bool b) { return b ? "yes" : "no"; };
  auto rate = [&](double per_core, const char* unit) {
    if (per_core <= 0) return std::string("not available");
    return fmt(per_core, 1) + " " + unit + " per core, " + fmt(per_core * s.threads, 1) + " " +
           unit + " for " + std::to_string(s.threads) + " threads";
  };
  o << "cpu:        " << s.cpu_model << "\n"
    << "isa:        " << s.isa << " (kernels in use)\n"
    << "flags:      FMA " << yn(s.fma) << ", AVX2 " << yn(s.avx2) << ", AVX-512F " << yn(s.avx512f)
    << ", AVX512-BF16 " << yn(s.avx512_bf16) << ", AVX512-VNNI " << yn(s.avx512_vnni) << "\n"
    << "cores:      " << s.cores << " (kernel threads: " << s.threads << ")\n"
    << "caches:     L1d " << kib(s.l1d_bytes) << ", L2 " << kib(s.l2_bytes) << ", L3 "
    << kib(s.l3_bytes) << "\n"
    << "gemm tile:  MR " << s.gemm_mr << " x NR " << s.gemm_nr << ", blocks KC " << s.gemm_kc
    << ", MC " << s.gemm_mc << ", NC " << s.gemm_nc << " (from the caches above)\n"
    << "peak fp32:  " << fmt(s.peak_gflops_per_core, 1) << " GFLOP/s per core, "
    << fmt(s.peak_gflops(), 1) << " GFLOP/s for " << s.threads << " threads\n"
    << "            (" << s.peak_method << ")\n"
    << "peak bf16:  " << rate(s.peak_bf16_gflops_per_core, "GFLOP/s") << "\n"
    << "            (" << s.peak_bf16_method << ")\n"
    << "peak int8:  " << rate(s.peak_int8_gops_per_core, "GOP/s") << "\n"
    << "            (" << s.peak_int8_method << ")\n"
    << "L1 read:    " << fmt(s.l1_read_gbs_1t, 1) << " GB/s (1 thread), "
    << fmt(s.l1_read_gbs_all, 1) << " GB/s (" << s.threads << " threads)\n"
    << "L2 read:    " << fmt(s.l2_read_gbs_1t, 1) << " GB/s (1 thread), "
    << fmt(s.l2_read_gbs_all, 1) << " GB/s (" << s.threads << " threads)\n"
    << "            (" << s.cache_bandwidth_method << ")\n"
    << "DRAM read:  " << fmt(s.bandwidth_gbs_1t, 1) << " GB/s (1 thread), "
    << fmt(s.bandwidth_gbs_all, 1) << " GB/s (" << s.threads << " threads)\n"
    << "            (" << s.bandwidth_method << ")\n"
    << "roofline:   min(" << fmt(s.peak_gflops(), 1) << " GFLOP/s, intensity x "
    << fmt(s.bandwidth_gbs(), 1) << " GB/s); ridge at "
    << fmt(s.peak_gflops() / std::max(s.bandwidth_gbs(), 1e-9), 2) << " flop/byte\n"
    << "probes:     " << fmt(s.probe_seconds, 2) << " s\n";
  return o.str();
}

}  // namespace tessera
