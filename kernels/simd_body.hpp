// The shared base of every kernel body (kernels/*_body.hpp): the vector type B and its width W,
// fmadd, the loads and stores (full and partial), reduce_max, the integer helpers (min_i64,
// max_i64, ceil_div) and the parallel grains. Uses only xsimd and kernels/{kernels.h,
// internal.hpp, parallel.hpp}.
//
// Every kernel family is a template struct over the xsimd architecture, deriving from the layer
// it builds on (SimdBody <- MathBody <- GemmBody / RowsBody <- AttentionBody) and naming the
// base members it calls with using-declarations (unqualified names are not looked up in a
// dependent base). kernels_body.hpp includes them all and fills the KernelTable.
//
// Rules for every body header. Included ONLY by kernels/isa_<isa>.cpp (through kernels_body.hpp),
// each compiled with its own -m flags (see kernels/CMakeLists.txt). Everything lives in an
// anonymous namespace, so each ISA file gets its own internal-linkage copy: no inline function
// compiled with AVX-512 flags can be picked by the linker for the AVX2 or SSE2 path (the ODR
// trap of STYLE.md; the CTest `kernels_isa_symbols` checks it with nm). For the same reason the
// bodies use no out-of-line standard-library template (no std::vector, std::string, std::array,
// std::min): only intrinsics, builtins and xsimd templates instantiated on the file's own Arch.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"
#include "kernels/parallel.hpp"

namespace tessera::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

constexpr int64_t min_i64(int64_t a, int64_t b) {
  return a < b ? a : b;
}
constexpr int64_t max_i64(int64_t a, int64_t b) {
  return a < b ? b : a;
}
constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Element-wise kernels work on chunks of this many floats per parallel_for index range
// (64 KiB per array: big enough to amortize a fork/join, small enough to balance 2..16 cores).
constexpr int64_t kElementGrain = 16384;
// Row kernels give each thread at least this many floats' worth of rows.
constexpr int64_t kRowGrainFloats = 16384;
// GEMM, packing and attention give each parallel chunk at least this much work (flops or
// floats): an OpenMP fork/join costs ~1-5 us, ~10^5 flops. Below that a kernel runs serially,
// which also keeps small calls fast when the cores are shared. Grains depend on the sizes only,
// never on the thread count.
constexpr int64_t kMinChunkWork = int64_t{1} << 17;

template <class Arch, Isa kIsa>
struct SimdBody {
  using B = xsimd::batch<float, Arch>;
  static constexpr int64_t W = static_cast<int64_t>(B::size);  // floats per vector

  // -------------------------------------------------------------------------------------------
  // Loads and stores. Every tail goes through a W-float stack buffer, so a partial vector sees
  // exactly the same arithmetic as a full one (results never depend on an element's position).
  // -------------------------------------------------------------------------------------------
  // a * b + c with one rounding. xsimd 8.1 has no FMA kernel for avx512f: its xsimd::fma is
  // a*b + c, fused only when the compiler contracts it (Release builds do, -fsanitize builds
  // did not; erfc's exact a*a - hi split needs a true FMA). So AVX-512 calls the intrinsic.
  static B fmadd(const B& a, const B& b, const B& c) {
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      return B(_mm512_fmadd_ps(a, b, c));
    } else {
      return xsimd::fma(a, b, c);
    }
  }

  static B load(const float* p) { return B::load_unaligned(p); }
  static void store(float* p, const B& v) { v.store_unaligned(p); }
  // Lanes [0, n) from p (n < W), the other lanes `fill`. Reads only p[0, n).
  static B load_partial(const float* p, int64_t n, float fill) {
    alignas(64) float buf[W];
    for (int64_t i = 0; i < W; ++i) buf[i] = i < n ? p[i] : fill;
    return B::load_aligned(buf);
  }
  // Writes only p[0, n) (n < W).
  static void store_partial(float* p, const B& v, int64_t n) {
    alignas(64) float buf[W];
    v.store_aligned(buf);
    for (int64_t i = 0; i < n; ++i) p[i] = buf[i];
  }
  // xsimd 8.1 has no reduce_max: store the lanes and loop (lane order, so deterministic).
  static float reduce_max(const B& v) {
    alignas(64) float buf[W];
    v.store_aligned(buf);
    float m = buf[0];
    for (int64_t i = 1; i < W; ++i) m = buf[i] > m ? buf[i] : m;
    return m;
  }
};

}  // namespace
}  // namespace tessera::kernels
