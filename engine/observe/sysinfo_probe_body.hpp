// The body of sysinfo's peak-FMA and read-bandwidth probes, written once over a vector type.
//
// Included ONLY by sysinfo_probe_<isa>.cpp, each compiled with its own -m flags, after it has
// defined `struct V` (the ISA's float vector: `using T`, `kLanes`, `set1`, `zero`, `fma`, `add`,
// `loadu`, `store`). Everything here has internal linkage (anonymous namespace), and it uses no
// standard header: nothing inline is shared between the ISA files (STYLE.md's ODR trap).
#pragma once

#include <cstdint>

namespace tessera::detail {
namespace {

// The sum of every lane of every accumulator (the probes return it so no chain is dead code).
template <int N>
float sum_lanes(const typename V::T (&acc)[N]) {
  typename V::T t = acc[0];
#pragma GCC unroll 16
  for (int j = 1; j < N; ++j) t = V::add(t, acc[j]);
  alignas(64) float lanes[V::kLanes];
  V::store(lanes, t);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// 12 independent FMA chains (12 x lanes fp32 FMAs per iteration): enough to cover latency x
// throughput (4 cycles x 2 per cycle = 8 in flight on the cores we know) with registers to spare.
float fma_chains(int64_t iters, float seed) {
  const typename V::T a = V::set1(0.999999f), b = V::set1(1e-7f);
  typename V::T c[12];
#pragma GCC unroll 12
  for (int j = 0; j < 12; ++j) c[j] = V::set1(seed + static_cast<float>(j));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) c[j] = V::fma(c[j], a, b);
  }
  return sum_lanes(c);
}

// S streams (the buffer's S parts, side by side), 16 / S full-width loads from each per step,
// one per accumulator: 16 independent add chains (2 loads per cycle x 3-4 cycles of latency
// needs 8 at least).
template <int S>
float read_streams(const float* p, int64_t n, int64_t passes) {
  constexpr int kLoads = 16 / S;
  const int64_t q = n / S;
  typename V::T acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) acc[j] = V::zero();
  for (int64_t r = 0; r < passes; ++r) {
    for (int64_t i = 0; i < q; i += V::kLanes * kLoads) {
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
#pragma GCC unroll 16
        for (int k = 0; k < kLoads; ++k)
          acc[s * kLoads + k] =
              V::add(acc[s * kLoads + k], V::loadu(p + s * q + i + V::kLanes * k));
      }
    }
  }
  return sum_lanes(acc);
}

float read_any(const float* p, int64_t n, int64_t passes, int streams) {
  return streams >= 4 ? read_streams<4>(p, n, passes) : read_streams<2>(p, n, passes);
}

}  // namespace
}  // namespace tessera::detail
