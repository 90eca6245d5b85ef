// machine_probe: a plain microbenchmark of what this CPU can do, written independently of
// engine/observe/sysinfo.cpp to check its figures (bench/probes/compare_sysinfo.py puts both side
// by side). Raw intrinsics in functions compiled for their ISA with target attributes (the binary
// builds with plain g++ on any x86-64 and calls each kernel only where the CPU has it),
// std::threads pinned one per CPU, wall time, the median of 7 runs of at least ~20 ms.
//
//   fp32 FMA      10 accumulators acc += v * w (vfmadd231ps), zmm (ymm without AVX-512F)
//   bf16 dot      14 accumulators of vdpbf16ps zmm (32 pairs = 64 flop each), AVX512-BF16 only
//   int8 dot      12 accumulators of vpdpbusd zmm (64 u8 x s8 = 128 ops each), AVX512-VNNI only
//   L1 / L2 read  a private buffer of half the L1d / L2 per thread, read again and again as two
//                 streams (its halves), 8 integer accumulators (vpaddq), full-width loads
//   DRAM read     a 2 GiB buffer (at most 1/4 of memory) split between the threads, each share
//                 read once per run as four streams (its quarters), first touched by its reader
//
//   machine_probe [--threads N] [--json]      (N: default all CPUs this process may run on)
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<uint64_t> g_sink{0};  // results land here so that no kernel is optimized away

void sink(uint64_t v) {
  g_sink.fetch_xor(v, std::memory_order_relaxed);
}
uint64_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- compute kernels: n iterations each ----

__attribute__((target("avx512f"))) void fma_zmm(int64_t n) {
  __m512 acc[10];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const __m512 v = _mm512_set1_ps(1e-3f), w = _mm512_set1_ps(1e-4f);
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 10
    for (int j = 0; j < 10; ++j) acc[j] = _mm512_fmadd_ps(v, w, acc[j]);
  }
  for (int j = 1; j < 10; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  alignas(64) float l[16];  // (no _mm512_reduce_*: GCC 12 warns inside them, bug 105593)
  _mm512_store_ps(l, acc[0]);
  sink(bits(l[0] + l[15]));
}

__attribute__((target("avx2,fma"))) void fma_ymm(int64_t n) {
  __m256 acc[10];
  for (auto& a : acc) a = _mm256_setzero_ps();
  const __m256 v = _mm256_set1_ps(1e-3f), w = _mm256_set1_ps(1e-4f);
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 10
    for (int j = 0; j < 10; ++j) acc[j] = _mm256_fmadd_ps(v, w, acc[j]);
  }
  for (int j = 1; j < 10; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  alignas(32) float l[8];
  _mm256_store_ps(l, acc[0]);
  sink(bits(l[0] + l[7]));
}

__attribute__((target("avx512f,avx512bf16"))) void bf16_zmm(int64_t n) {
  __m512 acc[14];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const __m512bh v = (__m512bh)_mm512_set1_epi16(0x3c00);  // bf16 2^-7
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 14
    for (int j = 0; j < 14; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], v, v);
  }
  for (int j = 1; j < 14; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  alignas(64) float l[16];  // (no _mm512_reduce_*: GCC 12 warns inside them, bug 105593)
  _mm512_store_ps(l, acc[0]);
  sink(bits(l[0] + l[15]));
}

__attribute__((target("avx512f,avx512vnni"))) void int8_zmm(int64_t n) {
  __m512i acc[12];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], u, s);
  }
  for (int j = 1; j < 12; ++j) acc[0] = _mm512_add_epi32(acc[0], acc[j]);
  alignas(64) int32_t l[16];
  _mm512_store_si512(l, acc[0]);
  sink(static_cast<uint64_t>(l[0] ^ l[15]));
}

// ---- read kernels: `bytes` (a multiple of 1 KiB) read as several streams, its parts ----

// S streams (the buffer's S parts), 128 B = 2 loads from each per step, 8 accumulators.
template <int S>
__attribute__((target("avx512f"))) void read_zmm(const char* p, int64_t bytes, int64_t passes) {
  const int64_t part = bytes / S;
  __m512i acc[8];
  for (auto& a : acc) a = _mm512_setzero_si512();
  for (int64_t r = 0; r < passes; ++r) {
    for (int64_t i = 0; i < part; i += 128) {
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        const char* src = p + s * part + i;
        acc[(2 * s) % 8] = _mm512_add_epi64(acc[(2 * s) % 8], _mm512_load_si512(src));
        acc[(2 * s + 1) % 8] = _mm512_add_epi64(acc[(2 * s + 1) % 8], _mm512_load_si512(src + 64));
      }
    }
  }
  for (int j = 1; j < 8; ++j) acc[0] = _mm512_add_epi64(acc[0], acc[j]);
  alignas(64) uint64_t l[8];
  _mm512_store_si512(l, acc[0]);
  sink(l[0] ^ l[7]);
}

__attribute__((target("avx2"))) void read_ymm(const char* p, int64_t bytes, int64_t passes) {
  const int64_t half = bytes / 2;
  __m256i acc[8];
  for (auto& a : acc) a = _mm256_setzero_si256();
  for (int64_t r = 0; r < passes; ++r) {
    const char* a = p;
    const char* b = p + half;
    for (int64_t i = 0; i < half; i += 128) {
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        acc[k] = _mm256_add_epi64(
            acc[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(a + i + 32 * k)));
        acc[4 + k] = _mm256_add_epi64(
            acc[4 + k], _mm256_load_si256(reinterpret_cast<const __m256i*>(b + i + 32 * k)));
      }
    }
  }
  for (int j = 1; j < 8; ++j) acc[0] = _mm256_add_epi64(acc[0], acc[j]);
  alignas(32) uint64_t l[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), acc[0]);
  sink(l[0] ^ l[3]);
}

// ---- threads ----

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Runs `threads` pinned threads: setup(t) once, then `runs` times (all threads released by one
// barrier) work(t); returns the median over the runs of (last end - first start) in seconds.
double median_wall(int threads, int runs, const std::function<void(int)>& setup,
                   const std::function<void(int)>& work) {
  using Clock = std::chrono::steady_clock;
  static const std::vector<int> cpus = allowed_cpus();
  std::vector<Clock::time_point> start(static_cast<size_t>(threads * runs)), end(start.size());
  std::barrier sync(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      pin(cpus[static_cast<size_t>(t) % cpus.size()]);
      setup(t);
      work(t);  // warm up
      for (int r = 0; r < runs; ++r) {
        sync.arrive_and_wait();
        start[static_cast<size_t>(r * threads + t)] = Clock::now();
        work(t);
        end[static_cast<size_t>(r * threads + t)] = Clock::now();
      }
    });
  for (auto& th : pool) th.join();
  std::vector<double> secs;
  for (int r = 0; r < runs; ++r) {
    auto b = start.begin() + r * threads, e = end.begin() + r * threads;
    secs.push_back(std::chrono::duration<double>(*std::max_element(e, e + threads) -
                                                 *std::min_element(b, b + threads))
                       .count());
  }
  std::sort(secs.begin(), secs.end());
  return secs[secs.size() / 2];
}

constexpr int kRuns = 7;
constexpr double kMinRun = 0.02;  // seconds

// Rate (work units per second, all threads together) of kernel(n) per thread, n calibrated on
// one thread so that a run lasts at least kMinRun.
double compute_rate(void (*kernel)(int64_t), double work_per_n, int threads) {
  int64_t n = 1 << 14;
  for (;;) {
    const double t = median_wall(
        1, 1, [](int) {}, [&](int) { kernel(n); });
    if (t >= kMinRun) break;
    n = static_cast<int64_t>(static_cast<double>(n) * std::max(2.0, 1.2 * kMinRun / t));
  }
  const double t = median_wall(
      threads, kRuns, [](int) {}, [&](int) { kernel(n); });
  return static_cast<double>(n) * work_per_n * threads / t;
}

char* alloc(int64_t bytes) {
  const size_t align = size_t{2} << 20;
  const size_t size = (static_cast<size_t>(bytes) + align - 1) / align * align;
  char* p = static_cast<char*>(std::aligned_alloc(align, size));
  if (p == nullptr) {
    std::fprintf(stderr, "machine_probe: cannot allocate %lld bytes\n",
                 static_cast<long long>(bytes));
    std::exit(1);
  }
  madvise(p, size, MADV_HUGEPAGE);
  return p;
}

using ReadKernel = void (*)(const char*, int64_t, int64_t);

// Read rate (B/s, all threads) of private buffers of `bytes` per thread, re-read in place.
double cache_read_rate(ReadKernel kernel, int64_t bytes, int threads) {
  std::vector<char*> buf(static_cast<size_t>(threads), nullptr);
  auto setup = [&](int t) {
    buf[static_cast<size_t>(t)] = alloc(bytes);
    std::memset(buf[static_cast<size_t>(t)], 1, static_cast<size_t>(bytes));
  };
  int64_t passes = 16;
  for (;;) {
    const double t = median_wall(1, 1, setup, [&](int) { kernel(buf[0], bytes, passes); });
    std::free(buf[0]);
    if (t >= kMinRun) break;
    passes = static_cast<int64_t>(static_cast<double>(passes) * std::max(2.0, 1.2 * kMinRun / t));
  }
  const double t = median_wall(threads, kRuns, setup,
                               [&](int i) { kernel(buf[static_cast<size_t>(i)], bytes, passes); });
  for (char* p : buf) std::free(p);
  return static_cast<double>(bytes) * static_cast<double>(passes) * threads / t;
}

double dram_read_rate(ReadKernel kernel, char* big, int64_t bytes, int threads) {
  const int64_t share = bytes / threads / 1024 * 1024;
  const double t = median_wall(
      threads, kRuns, [](int) {},
      [&](int i) { kernel(big + static_cast<int64_t>(i) * share, share, 1); });
  return static_cast<double>(share) * threads / t;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      std::string v = line.substr(line.find(':') + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(allowed_cpus().size());
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "usage: machine_probe [--threads N] [--json]\n");
      return 2;
    }
  }
  if (threads < 1) {
    std::fprintf(stderr, "machine_probe: --threads must be at least 1\n");
    return 2;
  }
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  const bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const int64_t l1_half = std::max<int64_t>(1024, (l1 > 0 ? l1 : 32768) / 2 / 1024 * 1024);
  const int64_t l2_half = std::max<int64_t>(1024, (l2 > 0 ? l2 : 524288) / 2 / 1024 * 1024);
  const int64_t phys = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  const int64_t dram_bytes = std::min<int64_t>(int64_t{2} << 30, phys / 4) / (1 << 20) * (1 << 20);

  struct Row {
    std::string key;
    double one = -1, all = -1;  // -1: not available
    const char* unit;
  };
  std::vector<Row> rows;
  auto both = [&](const std::string& key, const char* unit, const std::function<double(int)>& f,
                  bool ok) {
    Row r{key, -1, -1, unit};
    if (ok) {
      r.one = f(1) / 1e9;
      r.all = threads > 1 ? f(threads) / 1e9 : r.one;
    }
    rows.push_back(r);
  };
  // Caches: two streams; DRAM: four (more lines in flight: 2 streams read ~10 % less here).
  const ReadKernel reader = avx512 ? read_zmm<2> : avx2 ? read_ymm : nullptr;
  const ReadKernel dram_reader = avx512 ? read_zmm<4> : avx2 ? read_ymm : nullptr;
  both(
      "fp32_gflops", "GFLOP/s",
      [&](int t) {
        return avx512 ? compute_rate(fma_zmm, 10 * 32, t) : compute_rate(fma_ymm, 10 * 16, t);
      },
      avx512 || avx2);
  both(
      "bf16_gflops", "GFLOP/s", [&](int t) { return compute_rate(bf16_zmm, 14 * 64, t); }, bf16);
  both(
      "int8_gops", "GOP/s", [&](int t) { return compute_rate(int8_zmm, 12 * 128, t); }, vnni);
  both(
      "l1_read_gbs", "GB/s", [&](int t) { return cache_read_rate(reader, l1_half, t); },
      reader != nullptr);
  both(
      "l2_read_gbs", "GB/s", [&](int t) { return cache_read_rate(reader, l2_half, t); },
      reader != nullptr);
  if (reader != nullptr) {
    char* big = alloc(dram_bytes);
    const int64_t share = dram_bytes / threads / 1024 * 1024;
    // First touch by the thread (and CPU) that reads each share.
    median_wall(
        threads, 1, [](int) {},
        [&](int i) { std::memset(big + i * share, 1, static_cast<size_t>(share)); });
    both(
        "dram_read_gbs", "GB/s",
        [&](int t) { return dram_read_rate(dram_reader, big, dram_bytes, t); }, true);
    std::free(big);
  } else {
    rows.push_back({"dram_read_gbs", -1, -1, "GB/s"});
  }

  if (json) {
    std::printf(
        "{\n  \"cpu_model\": \"%s\",\n  \"threads\": %d,\n  \"l1_bytes_per_thread\": %lld,\n"
        "  \"l2_bytes_per_thread\": %lld,\n  \"dram_bytes\": %lld,\n  \"runs\": %d",
        cpu_model().c_str(), threads, static_cast<long long>(l1_half),
        static_cast<long long>(l2_half), static_cast<long long>(dram_bytes), kRuns);
    for (const Row& r : rows) {
      if (r.one < 0)
        std::printf(",\n  \"%s_1t\": null,\n  \"%s_all\": null", r.key.c_str(), r.key.c_str());
      else
        std::printf(",\n  \"%s_1t\": %.3f,\n  \"%s_all\": %.3f", r.key.c_str(), r.one,
                    r.key.c_str(), r.all);
    }
    std::printf("\n}\n");
  } else {
    std::printf("%s, %d threads (median of %d runs, wall time)\n", cpu_model().c_str(), threads,
                kRuns);
    for (const Row& r : rows) {
      if (r.one < 0)
        std::printf("%-14s not available\n", r.key.c_str());
      else
        std::printf("%-14s %9.1f %s (1 thread)  %9.1f %s (%d threads)\n", r.key.c_str(), r.one,
                    r.unit, r.all, r.unit, threads);
    }
  }
  return g_sink.load() == 42 ? 3 : 0;  // (never 42 in practice; keeps the sink alive)
}
