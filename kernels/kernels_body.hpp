// The body of every kernel, written once as a template over the xsimd architecture.
//
// Included ONLY by kernels/isa_<isa>.cpp, each compiled with its own -m flags (see
// kernels/CMakeLists.txt). Everything here lives in an anonymous namespace, so each ISA file
// gets its own internal-linkage copy: no inline function compiled with AVX-512 flags can be
// picked by the linker for the AVX2 or SSE2 path (the ODR trap of STYLE.md; the CTest
// `kernels_isa_symbols` checks it with nm). For the same reason this file uses no out-of-line
// standard-library template (no std::vector, std::string, std::array, std::min): only
// intrinsics, builtins and xsimd templates instantiated on the file's own Arch.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cmath>
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

// Which A the blocked GEMM's packed-A scratch of this thread (thread_scratch slot 1) holds: the
// gemm call (a number from g_gemm_calls, unique per call) and the row item. The pool may hand a
// thread several items of one call in separate chunks; the tag lets it reuse the row item it
// packed for an earlier one instead of packing again.
struct PackedATag {
  uint64_t call = 0;
  int64_t row_item = -1;
};
thread_local PackedATag t_packed_a;
uint64_t g_gemm_calls = 0;  // updated with __atomic builtins (no std::atomic template here)

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
struct Body {
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

  // -------------------------------------------------------------------------------------------
  // exp, erf, erfc, tanh: polynomial approximations (coefficients fitted for this file: float
  // minimax-style fits of the stated functions, by iteratively reweighted least squares against
  // 30-digit mpmath values). Maximum errors, measured against double std:: over the whole float
  // range by TEST_CASE "vector_math" (relative, in eps = 2^-23, where the result is a normal
  // float; below that, within 2^-126 absolute). Bounds the test enforces (measured on Zen 4):
  //   exp   <= 1 eps (0.63);  denormal results correct down to exp(-103.3), then 0;
  //         x > 88.72: +inf;  exp(-inf) = 0 exactly (masked scores rely on it)
  //   erf   <= 2 eps (1.43);  odd: erf(-x) = -erf(x) exactly;  erf(+-inf) = +-1
  //   erfc  <= 3 eps (2.72);  erfc(x) = 0 for x > 10.06
  //   tanh  <= 1.5 eps (1.13);  odd;  tanh(+-inf) = +-1
  // The generic (SSE2) build has no FMA, so a^2 - hi is not exact inside erfc: there erfc is
  // within 4 + x^2 eps for x > 0 (measured 34 eps at x = 8.9; Horner steps round twice); the
  // others keep their bounds.
  // Every function maps NaN to NaN. Arguments are batches; no branches, no table look-ups.
  // -------------------------------------------------------------------------------------------
  using BI = xsimd::batch<int32_t, Arch>;

  // 2^n for integral n in [-126, 127] (as floats): the exponent field built directly.
  static B pow2i(const B& n) {
    const BI e = (xsimd::to_int(n) + BI(127)) << 23;
    return xsimd::bitwise_cast<B>(e);
  }

  // exp(hi + lo) with |lo| <= ~1e-3 |hi| or |lo| < 0.1: lo joins the reduced argument after the
  // exact Cody-Waite step, so it is not lost to hi's rounding (erfc uses it for the low half
  // of x^2). exp(x) = 2^n e^r, n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2];
  // e^r by its degree-7 Taylor polynomial (truncation r^8/8! < 5.3e-9 < 0.05 eps relative).
  // 2^n is applied as 2^n1 2^n2 (n1 = floor(n/2)) so that n in [-159, 128] never leaves the
  // exponent range: results overflow to +inf and underflow through the denormals correctly.
  static B exp_hilo(const B& hi, const B& lo) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693145751953125f;       // ln 2 with 16 significant bits (exact n*)
    constexpr float kLn2Lo = 1.42860682030941723e-6f;  // ln 2 - kLn2Hi
    const B x = xsimd::min(xsimd::max(hi, B(-110.0f)), B(89.0f));
    const B n = xsimd::nearbyint(x * B(kLog2e));
    B r = fmadd(n, B(-kLn2Hi), x);
    r = fmadd(n, B(-kLn2Lo), r) + lo;
    B p(1.0f / 5040.0f);
    p = fmadd(p, r, B(1.0f / 720.0f));
    p = fmadd(p, r, B(1.0f / 120.0f));
    p = fmadd(p, r, B(1.0f / 24.0f));
    p = fmadd(p, r, B(1.0f / 6.0f));
    p = fmadd(p, r, B(0.5f));
    p = fmadd(p, r, B(1.0f));
    p = fmadd(p, r, B(1.0f));
    const B n1 = xsimd::floor(n * B(0.5f));
    const B res = (p * pow2i(n1)) * pow2i(n - n1);
    return xsimd::select(xsimd::isnan(hi), hi, res);  // NaN in, NaN out (xsimd 8.1: != is ordered)
  }
  static B exp(const B& x) { return exp_hilo(x, B(0.0f)); }

  // exp(x) for x <= 0 (or -inf, or NaN): the softmax / attention case, where every argument is
  // a score minus a maximum. Same reduction as exp_hilo, a minimax polynomial (<= 1 eps
  // for normal results), cheaper: no overflow side, one 2^n factor, no NaN select.
  //  * AVX2 / SSE2: x is clamped to >= -88: n = -127 there, whose exponent field is 0, so 2^n = +0
  //  and
  //    exp(-inf) = 0 exactly (masked scores rely on it). Results below FLT_MIN (x < -87.34)
  //    are denormal or 0 (flushed below 2^-127: at most FLT_MIN absolute, which every caller's
  //    error bound allows). AVX-512: vscalefps applies 2^n, denormals are correct.
  //  * n = round(x / ln2) by the 1.5 * 2^23 shifter: t = x log2e + shifter holds n in its low
  //    mantissa bits, so 2^n's bits are (bits(t) + 127) << 23 (bits(shifter) << 23 wraps to 0).
  //  * NaN: xsimd::max(c, x) returns x when x is NaN (maxps returns its second operand), and
  //    NaN flows through r and the polynomial.
  static B exp_nonpos(const B& x_in) { return exp_nonpos_core<false>(x_in, x_in); }
  // exp(x) for any x by exp_nonpos's formula with x clamped to <= 89: overflows to +inf from
  // x > 88.37 on (n = 128 builds the +inf bit pattern; AVX-512's scalef is exact there), where
  // exp() is finite up to 88.72, and flushes results below 2^-127 (not on AVX-512). For
  // gelu_tanh's x / (1 + exp(-2u)), where both only move results below 1e-37. NaN in, NaN out
  // (minps returns its second operand for NaN).
  static B exp_flush(const B& x) { return exp_nonpos(xsimd::min(B(89.0f), x)); }
  // exp(hi + lo), hi <= 0, |lo| small (as exp_hilo): erfc's exp(-a^2).
  static B exp_nonpos_hilo(const B& x_in, const B& lo) { return exp_nonpos_core<true>(x_in, lo); }
  template <bool kLo>
  static B exp_nonpos_core(const B& x_in, const B& lo) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693145751953125f;
    constexpr float kLn2Lo = 1.42860682030941723e-6f;
    constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
    constexpr bool kScalef = std::is_base_of_v<xsimd::avx512f, Arch>;
    // AVX-512: 2^n applied by vscalefps (one instruction, correct denormals): the clamp at
    // -104 gives n = -150 there, and p 2^-150 rounds to 0, so exp(-inf) = 0 still.
    const B x = xsimd::max(B(kScalef ? -104.0f : -88.0f), x_in);
    const B t = fmadd(x, B(kLog2e), B(kShifter));
    const B n = t - B(kShifter);
    B r = fmadd(n, B(-kLn2Hi), x);
    r = fmadd(n, B(-kLn2Lo), r);
    if constexpr (kLo) r += lo;
    // e^r on [-ln2/2, ln2/2] by a degree-6 relative minimax fit (IRLS against mpmath): 1.9e-9,
    // 1.8e-8 (0.15 eps) with these float coefficients; one FMA less than exp_hilo's Taylor.
    B p(0.0013836566358804703f);
    p = fmadd(p, r, B(0.008375068195164204f));
    p = fmadd(p, r, B(0.04166824370622635f));
    p = fmadd(p, r, B(0.16666416823863983f));
    p = fmadd(p, r, B(0.49999991059303284f));
    p = fmadd(p, r, B(1.0f));
    p = fmadd(p, r, B(1.0f));
    if constexpr (kScalef) {
      return B(_mm512_scalef_ps(p, n));
    } else {
      const BI e = (xsimd::bitwise_cast<BI>(t) + BI(127)) << 23;
      return p * xsimd::bitwise_cast<B>(e);
    }
  }

  // erf(a) / a = P(a^2) on [0, 0.75] (fit: 7.0e-8 relative, with float coefficients).
  static B erf_small(const B& a, const B& a2) {
    B p(-0.0006749540916644037f);
    p = fmadd(p, a2, B(0.005114350002259016f));
    p = fmadd(p, a2, B(-0.026834627613425255f));
    p = fmadd(p, a2, B(0.11283376812934875f));
    p = fmadd(p, a2, B(-0.3761261999607086f));
    p = fmadd(p, a2, B(1.1283791065216064f));
    return a * p;
  }
  // erfc(a) for a >= 0.75: exp(-a^2) Q(t), t = 1 / (1 + a/2), Q of degree 10 fitted on
  // a in [0.75, 10] (3.2e-8 relative). a^2 is split exactly (hi + lo, with FMA) so that exp
  // sees the exact square.
  static B erfc_large(const B& a, const B& a2) {
    const B t = B(1.0f) / fmadd(a, B(0.5f), B(1.0f));
    B q(-0.03035745583474636f);
    q = fmadd(q, t, B(0.05810971185564995f));
    q = fmadd(q, t, B(0.09738030284643173f));
    q = fmadd(q, t, B(-0.33041173219680786f));
    q = fmadd(q, t, B(0.20862242579460144f));
    q = fmadd(q, t, B(-0.015383409336209297f));
    q = fmadd(q, t, B(0.20616984367370605f));
    q = fmadd(q, t, B(0.24094346165657043f));
    q = fmadd(q, t, B(0.28283029794692993f));
    q = fmadd(q, t, B(0.282041996717453f));
    q = fmadd(q, t, B(1.6575728523093858e-06f));
    const B lo = fmadd(a, a, -a2);         // a*a - a2, exact with a fused multiply-add
    return exp_nonpos_hilo(-a2, -lo) * q;  // exp below 2^-127 flushed: erfc < 2^-131 there
  }
  static B erfc(const B& x) {
    const B a = xsimd::abs(x);
    const B a2 = a * a;
    const B small = B(1.0f) - erf_small(a, a2);
    const B large = erfc_large(xsimd::min(a, B(11.0f)), xsimd::min(a2, B(121.0f)));
    const B pos = xsimd::select(a < B(0.75f), small, large);  // erfc(|x|)
    const B res = xsimd::select(x < B(0.0f), B(2.0f) - pos, pos);
    return xsimd::select(xsimd::isnan(x), x, res);
  }
  static B erf(const B& x) {
    const B a = xsimd::abs(x);
    const B a2 = a * a;
    const B large = B(1.0f) - erfc_large(xsimd::min(a, B(11.0f)), xsimd::min(a2, B(121.0f)));
    const B pos = xsimd::select(a < B(0.75f), erf_small(a, a2), large);  // erf(|x|)
    const B res = xsimd::select(x < B(0.0f), -pos, pos);
    return xsimd::select(xsimd::isnan(x), x, res);
  }
  // tanh(a) = a P(a^2) on [0, 0.625] (fit: 1.0e-8 relative); above, 1 - 2 / (1 + exp(2a)):
  // no cancellation there (tanh >= 0.55), and exp overflowing to +inf gives exactly 1.
  static B tanh(const B& x) {
    const B a = xsimd::abs(x);
    const B a2 = a * a;
    B p(-0.0056600309908390045f);
    p = fmadd(p, a2, B(0.02059103362262249f));
    p = fmadd(p, a2, B(-0.05372108519077301f));
    p = fmadd(p, a2, B(0.13331127166748047f));
    p = fmadd(p, a2, B(-0.3333325982093811f));
    p = fmadd(p, a2, B(1.0f));
    const B small = a * p;
    const B large = B(1.0f) - B(2.0f) / (B(1.0f) + exp(a + a));
    const B pos = xsimd::select(a < B(0.625f), small, large);
    const B res = xsimd::select(x < B(0.0f), -pos, pos);
    return xsimd::select(xsimd::isnan(x), x, res);
  }

  // GELU (erf form): x/2 * (1 + erf(x/sqrt2)) == x/2 * erfc(u), u = -x/sqrt2: the erfc form
  // keeps its relative accuracy for x << 0, where 1 + erf(.) cancels. erfc(|u|) by ONE
  // formula over the whole range, exp(-a^2) Q(t), t = 1 / (1 + a/2), a = |u| in [0, 11], Q of
  // degree 9 fitted (as above) on a in [0, 10] (t in [1/6, 1]): 3.2e-8 relative, 5.0e-8 with
  // float coefficients. No small-|u| branch, so ~40 vector ops instead of erfc()'s ~55;
  // erfc(u) for u < 0 is 2 - erfc(|u|). exp(-a^2) below 2^-127 is flushed (|GELU| < 1e-38
  // there). Measured against double: the same bounds as before (TEST_CASE "activation
  // accuracy", 64 + x^2 eps).
  static B gelu_erf(const B& x) {
    constexpr float kMinusSqrtHalf = -0.70710678118654752440f;
    const B u = x * B(kMinusSqrtHalf);
    const B a = xsimd::min(xsimd::abs(u), B(11.0f));
    const B a2 = a * a;
    const B t = B(1.0f) / fmadd(a, B(0.5f), B(1.0f));
    B q(-0.05505044758319855f);
    q = fmadd(q, t, B(0.2639017105102539f));
    q = fmadd(q, t, B(-0.4414810240268707f));
    q = fmadd(q, t, B(0.22120296955108643f));
    q = fmadd(q, t, B(0.017062608152627945f));
    q = fmadd(q, t, B(0.18126004934310913f));
    q = fmadd(q, t, B(0.24978949129581451f));
    q = fmadd(q, t, B(0.2810993492603302f));
    q = fmadd(q, t, B(0.282221257686615f));
    q = fmadd(q, t, B(-6.005566774547333e-06f));
    const B lo = fmadd(a, a, -a2);              // a*a - a2, exact with a fused multiply-add
    const B e = exp_nonpos_hilo(-a2, -lo) * q;  // erfc(|u|)
    const B erfc_u = xsimd::select(u < B(0.0f), B(2.0f) - e, e);
    return (B(0.5f) * x) * erfc_u;  // NaN x: NaN (x multiplies)
  }

  template <MathFunction kFn>
  static B math_fn(const B& x) {
    if constexpr (kFn == MathFunction::exp) return exp(x);
    if constexpr (kFn == MathFunction::erf) return erf(x);
    if constexpr (kFn == MathFunction::erfc) return erfc(x);
    if constexpr (kFn == MathFunction::tanh) return tanh(x);
    return x;
  }
  template <MathFunction kFn>
  static void math_range(int64_t n, const float* x, float* y) {
    detail::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      int64_t i = lo;
      for (; i + W <= hi; i += W) store(y + i, math_fn<kFn>(load(x + i)));
      if (i < hi) store_partial(y + i, math_fn<kFn>(load_partial(x + i, hi - i, 0.0f)), hi - i);
    });
  }
  static void vector_math(MathFunction f, int64_t n, const float* x, float* y) {
    if (n <= 0) return;
    switch (f) {
      case MathFunction::exp:
        return math_range<MathFunction::exp>(n, x, y);
      case MathFunction::erf:
        return math_range<MathFunction::erf>(n, x, y);
      case MathFunction::erfc:
        return math_range<MathFunction::erfc>(n, x, y);
      case MathFunction::tanh:
        return math_range<MathFunction::tanh>(n, x, y);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Activations
  // -------------------------------------------------------------------------------------------
  template <Activation kAct>
  static B act(const B& x) {
    if constexpr (kAct == Activation::relu) {
      return xsimd::max(x, B(0.0f));
    } else if constexpr (kAct == Activation::gelu_erf) {
      return gelu_erf(x);
    } else if constexpr (kAct == Activation::gelu_tanh) {
      // x/2 * (1 + tanh(u)) == x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): no
      // cancellation for x << 0; exp(-2u) overflowing to +inf gives the correct limit -0.
      constexpr float kTwoC = 2.0f * 0.79788456080286535588f;  // 2 sqrt(2/pi)
      constexpr float kTwoCA = kTwoC * 0.044715f;
      const B two_u = x * fmadd(x * x, B(kTwoCA), B(kTwoC));
      return x / (B(1.0f) + exp_flush(-two_u));
    } else {
      return x;
    }
  }

  template <Activation kAct>
  static void act_range(const float* x, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) store(y + i, act<kAct>(load(x + i)));
    if (i < n) store_partial(y + i, act<kAct>(load_partial(x + i, n - i, 0.0f)), n - i);
  }

  template <Activation kAct>
  static void activation_impl(int64_t n, const float* x, float* y) {
    detail::parallel_for(0, n, kElementGrain,
                         [&](int64_t lo, int64_t hi) { act_range<kAct>(x + lo, y + lo, hi - lo); });
  }

  static void activation(int64_t n, const float* x, float* y, Activation a) {
    if (n <= 0) return;
    switch (a) {
      case Activation::none:
        if (x != y) activation_impl<Activation::none>(n, x, y);
        return;
      case Activation::relu:
        return activation_impl<Activation::relu>(n, x, y);
      case Activation::gelu_erf:
        return activation_impl<Activation::gelu_erf>(n, x, y);
      case Activation::gelu_tanh:
        return activation_impl<Activation::gelu_tanh>(n, x, y);
    }
  }

  static void add(int64_t n, const float* a, const float* b, float* y) {
    if (n <= 0) return;
    detail::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      int64_t i = lo;
      for (; i + W <= hi; i += W) store(y + i, load(a + i) + load(b + i));
      if (i < hi) {
        const int64_t r = hi - i;
        store_partial(y + i, load_partial(a + i, r, 0.0f) + load_partial(b + i, r, 0.0f), r);
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // GEMM: C[M,N] = epilogue(A[M,K] · Wᵀ)
  // -------------------------------------------------------------------------------------------
  // Register tile MR x NR, NR = 2 vectors. Per k step the micro-kernel loads 2 vectors of the
  // packed panel, broadcasts MR scalars of A and issues 2*MR independent FMAs.
  //  * AVX-512 (32 zmm): MR = 8 -> 16 accumulators + 2 panel vectors + 1 broadcast = 19 regs.
  //    16 independent FMA chains cover FMA latency (4 cycles) x throughput (1-2 zmm/cycle).
  //  * AVX2 / SSE2 (16 registers): MR = 6 -> 12 accumulators + 2 + 1 = 15 regs (the classic
  //    6x16 Haswell tile); 12 chains cover 4-5 cycles x 2 FMA/cycle.
  static constexpr int64_t NR = 2 * W;
  static constexpr int64_t MR = W >= 16 ? 8 : 6;

  // Packed layout: panel p holds columns [p*NR, p*NR + NR) of C, K x NR, k-major:
  //   packed[(p*K + kk)*NR + jj] = W[p*NR + jj, kk]   (0 where p*NR + jj >= N).
  // Every panel row is NR*4 >= vector bytes from a 64-byte aligned base: aligned loads.
  static void pack_weights(const float* w, int64_t n, int64_t k, int64_t ldw, PackedWeights& out) {
    const int64_t panels = ceil_div(n, NR);
    detail::allocate_packed(out, n, k, NR, kIsa, static_cast<size_t>(panels * k * NR));
    float* dst = out.mutable_data();  // [panels, K, NR]
    const int64_t grain = max_i64(1, kMinChunkWork / (k * NR));
    detail::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* panel = dst + p * k * NR;  // [K, NR]
        const int64_t j0 = p * NR;
        const int64_t cols = min_i64(NR, n - j0);
        for (int64_t jj = 0; jj < NR; ++jj) {
          if (jj < cols) {
            const float* src = w + (j0 + jj) * ldw;  // row j0+jj of W: [K]
            for (int64_t kk = 0; kk < k; ++kk) panel[kk * NR + jj] = src[kk];
          } else {
            for (int64_t kk = 0; kk < k; ++kk) panel[kk * NR + jj] = 0.0f;
          }
        }
      }
    });
  }

  // The same layout from W stored transposed, wt [K, N] row-major (row stride ldw >= N): each
  // panel row is a contiguous run of a row of wt.
  static void pack_weights_kn(const float* wt, int64_t k, int64_t n, int64_t ldw,
                              PackedWeights& out) {
    const int64_t panels = ceil_div(n, NR);
    detail::allocate_packed(out, n, k, NR, kIsa, static_cast<size_t>(panels * k * NR));
    float* dst = out.mutable_data();  // [panels, K, NR]
    const int64_t grain = max_i64(1, kMinChunkWork / (k * NR));
    detail::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* panel = dst + p * k * NR;  // [K, NR]
        const int64_t j0 = p * NR;
        const int64_t cols = min_i64(NR, n - j0);
        for (int64_t kk = 0; kk < k; ++kk) {
          const float* src = wt + kk * ldw + j0;  // row kk of wt, columns [j0, j0 + cols)
          float* d = panel + kk * NR;
          for (int64_t jj = 0; jj < cols; ++jj) d[jj] = src[jj];
          for (int64_t jj = cols; jj < NR; ++jj) d[jj] = 0.0f;
        }
      }
    });
  }

  // Software prefetch distance of the streaming micro-kernel: 4 KiB ahead at NR = 32 (about
  // DRAM latency x one core's share of the bandwidth: ~100 ns x 27 GB/s = 2.7 KB in flight).
  static constexpr int64_t kPrefetchSteps = 4096 / (NR * 4);

  // tile[r, :] = sum_kk a[r*lda + kk] * panel[kk, :] for r < R, summed in k order.
  // tile: [MR, NR] (rows >= R untouched). R is a template parameter so the accumulators are
  // fully unrolled into registers.
  template <int R>
  static void micro_kernel(int64_t k, const float* a, int64_t lda, const float* panel,
                           float* tile) {
    B acc0[R];
    B acc1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r] = B(0.0f);
      acc1[r] = B(0.0f);
    }
    for (int64_t kk = 0; kk < k; ++kk) {
      // Prefetch the panel kPrefetchSteps k steps ahead (past its end: harmless, a prefetch
      // never faults).
      __builtin_prefetch(panel + (kk + kPrefetchSteps) * NR, 0, 0);
      if constexpr (NR * 4 > 64) __builtin_prefetch(panel + (kk + kPrefetchSteps) * NR + 16, 0, 0);
      const B b0 = B::load_aligned(panel + kk * NR);
      const B b1 = B::load_aligned(panel + kk * NR + W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const B av(a[r * lda + kk]);
        acc0[r] = fmadd(av, b0, acc0[r]);
        acc1[r] = fmadd(av, b1, acc1[r]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r].store_aligned(tile + r * NR);
      acc1[r].store_aligned(tile + r * NR + W);
    }
  }

  // micro_kernel<rows> for a run-time rows in [1, R].
  template <int R>
  static void micro_kernel_rows(int64_t rows, int64_t k, const float* a, int64_t lda,
                                const float* panel, float* tile) {
    if constexpr (R > 0) {
      if (rows == R) {
        micro_kernel<R>(k, a, lda, panel, tile);
      } else {
        micro_kernel_rows<R - 1>(rows, k, a, lda, panel, tile);
      }
    }
  }

  // C[i0 + r, j0 + j] = epilogue(tile[r, j]) for r < rows, j < cols. Never touches C outside
  // the tile; a residual aliasing C is read before the same element is written.
  template <Activation kAct>
  static void store_tile(const float* tile, int64_t rows, int64_t cols, int64_t i0, int64_t j0,
                         float* c, int64_t ldc, const Epilogue& ep) {
    for (int64_t r = 0; r < rows; ++r) {
      float* crow = c + (i0 + r) * ldc + j0;
      const float* rrow = ep.residual ? ep.residual + (i0 + r) * ep.ld_residual + j0 : nullptr;
      for (int64_t h = 0; h < cols; h += W) {
        const int64_t nv = min_i64(W, cols - h);
        B v = B::load_aligned(tile + r * NR + h);
        if (nv == W) {
          if (ep.bias) v += load(ep.bias + j0 + h);
          v = act<kAct>(v);
          if (rrow) v += load(rrow + h);
          store(crow + h, v);
        } else {
          if (ep.bias) v += load_partial(ep.bias + j0 + h, nv, 0.0f);
          v = act<kAct>(v);
          if (rrow) v += load_partial(rrow + h, nv, 0.0f);
          store_partial(crow + h, v, nv);
        }
      }
    }
  }

  // ---- Blocked path (M > kFewRows): the GotoBLAS / BLIS loop nest ----------------------------
  // The roles map onto BLIS's with A and B swapped: our vector operand is the packed weight
  // panel (BLIS's A micro-panel, streamed from L2), our broadcast operand is A (BLIS's B
  // micro-panel, resident in L1). Per call:
  //   1. C is cut into items of up to MC rows x NC columns (item = unit of OpenMP work).
  //   2. A's rows are packed into MR-row micro-panels (rows past M zero), so the MR broadcasts
  //      of one k step read 4*MR contiguous bytes: by each thread, for the row item it works
  //      on, one K block at a time just before its first use.
  //   3. Per item: for each KC block of K: for each MR row block: for each NR panel: the
  //      micro-kernel accumulates an MR x NR tile over the KC block.
  // Cache blocks, from the cache sizes the CPU reports (gemm_blocking(); see kernels.h):
  //   * KC: the A micro-panel of one K block, KC x MR x 4 B, fills a quarter of L1d (8 KiB
  //     at MR = 8 on a 32 KiB L1d: KC = 256; 48 KiB: KC = 384), so it stays in L1 while the
  //     item's panels stream past it, next to the streamed W lines and the C tile. Long
  //     enough that loading/storing the MR x NR accumulators between K blocks (2 x MR
  //     vectors) costs < 1 % of the KC x 2MR FMAs; a larger KC halves that again and, on a
  //     core that retires two 512-bit FMAs per cycle, the per-block overhead weighs double.
  //   * NC: the item's W block, KC x NC x 4 B, fills a quarter of L2 while the item's row
  //     blocks each sweep it.
  //   * MC: the item's A block and its accumulators, MC x (KC + NC) x 4 B, another quarter of
  //     L2 (half of L2 in all; the rest holds C lines, the next block's prefetches and the
  //     other streams). The whole packed W (e.g. 9 MiB for 768 x 3072) is L3-resident and
  //     read once per row item: at MC = 128, 1/64 byte per flop, ~2 GB/s at peak.
  // Unknown sizes: 32 KiB L1d, 512 KiB L2. K is cut into equal blocks of at most KC (a
  // multiple of 8: the AVX-512 A packing transposes 8 k steps at a time).
  static GemmBlocking blocking_for(const CacheSizes& caches) {
    const int64_t l1 = caches.l1d > 0 ? caches.l1d : int64_t{32} << 10;
    const int64_t l2 = caches.l2 > 0 ? caches.l2 : int64_t{512} << 10;
    const int64_t kc = max_i64(64, min_i64(1024, l1 / 4 / (MR * 4) / 8 * 8));
    const int64_t nc = NR * max_i64(1, min_i64(32, l2 / 4 / (kc * NR * 4)));
    const int64_t mc = MR * max_i64(1, min_i64(128, l2 / 4 / ((kc + nc) * 4) / MR));
    return GemmBlocking{MR, NR, kc, mc, nc};
  }
  static GemmBlocking gemm_blocking(const CacheSizes& caches) {
    return blocking_for(caches);
  }
  // Items are smaller than MC x NC when needed to give every thread several of them. Each
  // C element is accumulated by one thread, in k order, in one register chain (reloading
  // the accumulator between K blocks is exact), so the result is independent of the thread
  // count and of the blocking. The epilogue is applied to a tile right after its last K block,
  // while it is in L1.
  // M up to this many rows takes the few-row (streaming) path.
  static constexpr int64_t kFewRows = MR;

  // ap [K, MR] = rows [i0, i0 + rows) of A, k-major, rows past `rows` zero.
  static void pack_a_block(const float* a, int64_t lda, int64_t rows, int64_t k, float* ap) {
#ifdef __AVX512F__  // only the AVX-512 translation unit declares the 256-bit types
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && MR == 8) {
      // 8 k steps at a time: an 8 x 8 in-register transpose (the scalar strided copy below
      // costs ~1 cycle per element, ~7 % of the FMA work when N = 768).
      int64_t kk = 0;
      for (; kk + 8 <= k; kk += 8) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
          r[i] = i < rows ? _mm256_loadu_ps(a + i * lda + kk) : _mm256_setzero_ps();
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float* d = ap + kk * MR;  // column j (k step kk + j) at d + 8 j
        _mm256_storeu_ps(d + 0, _mm256_permute2f128_ps(s0, s4, 0x20));
        _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(s1, s5, 0x20));
        _mm256_storeu_ps(d + 16, _mm256_permute2f128_ps(s2, s6, 0x20));
        _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s3, s7, 0x20));
        _mm256_storeu_ps(d + 32, _mm256_permute2f128_ps(s0, s4, 0x31));
        _mm256_storeu_ps(d + 40, _mm256_permute2f128_ps(s1, s5, 0x31));
        _mm256_storeu_ps(d + 48, _mm256_permute2f128_ps(s2, s6, 0x31));
        _mm256_storeu_ps(d + 56, _mm256_permute2f128_ps(s3, s7, 0x31));
      }
      for (; kk < k; ++kk)
        for (int64_t r = 0; r < MR; ++r) ap[kk * MR + r] = r < rows ? a[r * lda + kk] : 0.0f;
      return;
    }
#endif
    for (int64_t r = 0; r < MR; ++r) {
      float* d = ap + r;
      if (r < rows) {
        const float* src = a + r * lda;  // [K]
        for (int64_t kk = 0; kk < k; ++kk) d[kk * MR] = src[kk];
      } else {
        for (int64_t kk = 0; kk < k; ++kk) d[kk * MR] = 0.0f;
      }
    }
  }

  // Prefetch distance of micro_kernel_packed over its weight panel: 4 KiB ahead at NR = 32, as
  // the streaming kernel's (the loads cover L3 latency on an item's first row-block sweep).
  static constexpr int64_t kPanelPrefetchSteps = 4096 / (NR * 4);

  // tile [MR, NR] = (load ? tile : 0) + sum over kc steps of ap[kk, :]ᵀ · bp[kk, :], one FMA
  // chain per accumulator. ap: [kc, MR] (L1), bp: [kc, NR] (a KC block of a weight panel).
  static void micro_kernel_packed(int64_t kc, const float* ap, const float* bp, float* tile,
                                  bool load) {
    B acc0[MR];
    B acc1[MR];
    if (load) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        acc0[r] = B::load_aligned(tile + r * NR);
        acc1[r] = B::load_aligned(tile + r * NR + W);
      }
    } else {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        acc0[r] = B(0.0f);
        acc1[r] = B(0.0f);
      }
    }
    for (int64_t kk = 0; kk < kc; ++kk) {
      // The panel's lines kPanelPrefetchSteps k steps ahead: on a row block's first sweep over
      // an item's W block they come from L3 (~50-80 ns, ~40 k steps of FMAs on a 2-FMA/cycle
      // core), later from L2. Past the block's end this prefetches the panel's next K block
      // (or harmlessly past the panel: a prefetch never faults). One line per 64 bytes.
      __builtin_prefetch(bp + (kk + kPanelPrefetchSteps) * NR, 0, 3);
      if constexpr (NR * 4 > 64)
        __builtin_prefetch(bp + (kk + kPanelPrefetchSteps) * NR + 16, 0, 3);
      const B b0 = B::load_aligned(bp + kk * NR);
      const B b1 = B::load_aligned(bp + kk * NR + W);
      const float* av = ap + kk * MR;
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const B x(av[r]);
        acc0[r] = fmadd(x, b0, acc0[r]);
        acc1[r] = fmadd(x, b1, acc1[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      acc0[r].store_aligned(tile + r * NR);
      acc1[r].store_aligned(tile + r * NR + W);
    }
  }

  // Prefetches the lines of C (and of the residual) that store_tile will touch for this tile,
  // issued before the tile's last K block: the stores' read-for-ownership misses (C is usually
  // in L3 or DRAM, written once per call) then overlap the block's FMAs instead of stalling the
  // store buffer after them (a tile's last block is ~KC x 2 x MR FMAs: ~0.6 us on one Zen core).
  static void prefetch_tile_outputs(int64_t rows, int64_t cols, int64_t i0, int64_t j0,
                                    const float* c, int64_t ldc, const Epilogue& ep) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* crow = c + (i0 + r) * ldc + j0;
      for (int64_t h = 0; h < cols; h += 16) __builtin_prefetch(crow + h, 1, 3);
      __builtin_prefetch(crow + cols - 1, 1, 3);  // an unaligned row's last line
      if (ep.residual) {
        const float* rrow = ep.residual + (i0 + r) * ep.ld_residual + j0;
        for (int64_t h = 0; h < cols; h += 16) __builtin_prefetch(rrow + h, 0, 3);
        __builtin_prefetch(rrow + cols - 1, 0, 3);
      }
    }
  }

  // Width (in panels) of the blocked path's items when `threads` share row_items x panels: the
  // widest, up to NC / NR, whose split over the threads is balanced within 1/16 (the busiest
  // thread's ceil(items / threads) items of up to that width, against the mean share). Wide
  // items matter: each A micro-panel is loaded into L1 once per K block per item and reused
  // for the item's panels; at 2 panels per item (what "about 8 items per thread" gave for
  // N = 768 on 2 threads) the micro-kernel also streams A from L2, and 2-thread GEMMs ran at
  // ~80 % of oneDNN on a Zen 5. Equal-width items balance a dynamic split as well as a static one.
  static int64_t balanced_item_panels(int64_t row_items, int64_t panels, int64_t threads,
                                      int64_t max_panels) {
    for (int64_t ip = max_panels; ip > 1; --ip) {
      const int64_t items = row_items * ceil_div(panels, ip);
      if (items < threads) continue;
      const int64_t busiest = ceil_div(items, threads) * ip;  // row-item x panel units
      if (16 * busiest * threads <= 17 * row_items * panels) return ip;
    }
    return 1;
  }

  template <Activation kAct>
  static void gemm_blocked(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                           int64_t ldc, const Epilogue& ep) {
    const int64_t n = w.n();
    const int64_t k = w.k();
    const float* packed = w.data();  // [panels, K, NR]
    const int64_t panels = ceil_div(n, NR);
    const int64_t row_blocks = ceil_div(m, MR);

    // 2. Items: row_items x col_items, each up to MC rows (whole row blocks) x NC columns (whole
    //    panels). With several threads, items narrow only as far as balance needs (see
    //    balanced_item_panels).
    const GemmBlocking bl = blocking_for(gemm_cache_sizes());
    const int64_t row_items = ceil_div(row_blocks, bl.mc / MR);
    int64_t item_panels = bl.nc / NR;
    // K blocks: ceil(K / KC) of equal length (a multiple of 8), no short tail block.
    const int64_t k_blocks = ceil_div(k, bl.kc);
    const int64_t kc_len = min_i64(bl.kc, ceil_div(ceil_div(k, k_blocks), 8) * 8);
    // Threads worth using: each should get at least 4 kMinChunkWork flops (a small GEMM stays
    // on one thread, where a fork/join would cost more than it saves).
    const int64_t threads =
        min_i64(num_threads(), max_i64(1, 2 * m * panels * NR * k / (4 * kMinChunkWork)));
    if (threads > 1) item_panels = balanced_item_panels(row_items, panels, threads, item_panels);
    const int64_t col_items = ceil_div(panels, item_panels);
    const int64_t max_item_blocks = ceil_div(row_blocks, row_items);
    const size_t acc_floats = static_cast<size_t>(max_item_blocks * item_panels * MR * NR);
    const size_t ap_floats = static_cast<size_t>(max_item_blocks * k * MR);

    // One thread: a single chunk (parallel_for then runs it on the calling thread).
    const int64_t item_grain = threads > 1 ? 1 : row_items * col_items;
    const uint64_t call = __atomic_add_fetch(&g_gemm_calls, 1, __ATOMIC_RELAXED);
    detail::parallel_for(0, row_items * col_items, item_grain, [&](int64_t t0, int64_t t1) {
      float* acc = detail::thread_scratch(acc_floats, 0);  // [item blocks, item panels, MR, NR]
      // 1. A packed by the thread that uses it, into MR-row micro-panels of its row item:
      //    ap [item blocks, K, MR] (rows past M zero), each K block just before its first use
      //    (hot in L1/L2 for the micro-kernel) and kept for the thread's next items of the same
      //    row item (t_packed_a says which it holds). No serial packing step and no barrier
      //    before the items; with several threads a row item may be packed once per thread
      //    that computes some of its columns.
      float* ap = detail::thread_scratch(ap_floats, 1);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ri = t / col_items;
        const int64_t ci = t % col_items;
        const int64_t rb0 = ri * row_blocks / row_items;  // row blocks [rb0, rb1)
        const int64_t rb1 = (ri + 1) * row_blocks / row_items;
        const int64_t p0 = ci * item_panels;  // panels [p0, p1)
        const int64_t p1 = min_i64(panels, p0 + item_panels);
        const int64_t np = p1 - p0;
        const bool pack = t_packed_a.call != call || t_packed_a.row_item != ri;
        t_packed_a = {call, ri};
        for (int64_t k0 = 0; k0 < k; k0 += kc_len) {
          const int64_t kc = min_i64(kc_len, k - k0);
          const bool last = k0 + kc == k;
          for (int64_t rb = rb0; rb < rb1; ++rb) {
            float* apb = ap + ((rb - rb0) * k + k0) * MR;  // [kc, MR]
            const int64_t i0 = rb * MR;
            if (pack) pack_a_block(a + i0 * lda + k0, lda, min_i64(MR, m - i0), kc, apb);
            for (int64_t p = p0; p < p1; ++p) {
              float* tile = acc + ((rb - rb0) * np + (p - p0)) * MR * NR;  // [MR, NR]
              const int64_t rows = min_i64(MR, m - i0);
              const int64_t cols = min_i64(NR, n - p * NR);
              if (last) prefetch_tile_outputs(rows, cols, i0, p * NR, c, ldc, ep);
              micro_kernel_packed(kc, apb, packed + (p * k + k0) * NR, tile, k0 > 0);
              if (last) store_tile<kAct>(tile, rows, cols, i0, p * NR, c, ldc, ep);
            }
          }
        }
      }
    });
  }

  // ---- Few-row path (M <= kFewRows: a decode step) -------------------------------------------
  // Bandwidth-bound: every weight byte is used M times, so the kernel streams each packed panel
  // once (whole K, A's M rows read straight from L1) and prefetches kPrefetchSteps k steps
  // ahead; the threads split the panels (the N range).
  template <Activation kAct>
  static void gemm_few_rows(int64_t m, const float* a, int64_t lda, const PackedWeights& w,
                            float* c, int64_t ldc, const Epilogue& ep) {
    const int64_t n = w.n();
    const int64_t k = w.k();
    const float* packed = w.data();  // [panels, K, NR]
    const int64_t panels = ceil_div(n, NR);
    const int64_t grain = max_i64(1, kMinChunkWork / (2 * m * NR * k));
    detail::parallel_for(0, panels, grain, [&](int64_t q0, int64_t q1) {
      alignas(64) float tile[MR * NR];  // [MR, NR]
      for (int64_t p = q0; p < q1; ++p) {
        micro_kernel_rows<MR>(m, k, a, lda, packed + p * k * NR, tile);
        store_tile<kAct>(tile, m, min_i64(NR, n - p * NR), 0, p * NR, c, ldc, ep);
      }
    });
  }

  template <Activation kAct>
  static void gemm_impl(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                        int64_t ldc, const Epilogue& ep) {
    if (m <= kFewRows) {
      gemm_few_rows<kAct>(m, a, lda, w, c, ldc, ep);
    } else {
      gemm_blocked<kAct>(m, a, lda, w, c, ldc, ep);
    }
  }

  static void gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                   int64_t ldc, const Epilogue& ep) {
    if (m <= 0) return;
    if (w.isa() != kIsa) detail::throw_packed_isa_mismatch(kIsa, w.isa());
    switch (ep.act) {
      case Activation::none:
        return gemm_impl<Activation::none>(m, a, lda, w, c, ldc, ep);
      case Activation::relu:
        return gemm_impl<Activation::relu>(m, a, lda, w, c, ldc, ep);
      case Activation::gelu_erf:
        return gemm_impl<Activation::gelu_erf>(m, a, lda, w, c, ldc, ep);
      case Activation::gelu_tanh:
        return gemm_impl<Activation::gelu_tanh>(m, a, lda, w, c, ldc, ep);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Row kernels
  // -------------------------------------------------------------------------------------------
  static int64_t row_grain(int64_t n) {
    return max_i64(1, kRowGrainFloats / max_i64(n, 1));
  }

  // max(x[0..n)); -inf for n = 0 or an all -inf row. Four independent max chains.
  static float row_max(const float* x, int64_t n) {
    B m0(-kInf), m1(-kInf), m2(-kInf), m3(-kInf);
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      m0 = xsimd::max(m0, load(x + i));
      m1 = xsimd::max(m1, load(x + i + W));
      m2 = xsimd::max(m2, load(x + i + 2 * W));
      m3 = xsimd::max(m3, load(x + i + 3 * W));
    }
    for (; i + W <= n; i += W) m0 = xsimd::max(m0, load(x + i));
    if (i < n) m0 = xsimd::max(m0, load_partial(x + i, n - i, -kInf));
    return reduce_max(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
  }

  // y[i] = exp(x[i] - m) for i < n (x may equal y), m >= max(x); returns the sum (two vector
  // partial sums over alternating vectors, then hadd: the order depends on n only). Shared by
  // softmax and the attention's online softmax.
  static float exp_shifted(const float* x, float* y, int64_t n, float m) {
    const B bm(m);
    B s0(0.0f), s1(0.0f);
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const B e0 = exp_nonpos(load(x + i) - bm);
      const B e1 = exp_nonpos(load(x + i + W) - bm);
      store(y + i, e0);
      store(y + i + W, e1);
      s0 += e0;
      s1 += e1;
    }
    if (i + W <= n) {
      const B e = exp_nonpos(load(x + i) - bm);
      store(y + i, e);
      s0 += e;
      i += W;
    }
    if (i < n) {
      const B e = exp_nonpos(load_partial(x + i, n - i, -kInf) - bm);  // padding: exp(-inf) = 0
      store_partial(y + i, e, n - i);
      s1 += e;
    }
    return xsimd::hadd(s0 + s1);
  }

  // y = softmax(x) over n >= 1 floats; x may equal y. Three sweeps over an L1-resident row:
  // max (read), exp + sum (read, write), scale (read, write); the row is read from L2/memory
  // once, the other sweeps hit L1. The cost is exp's arithmetic (~16 vector ops per vector).
  static void softmax_row(const float* x, float* y, int64_t n) {
    const float m = row_max(x, n);
    if (m == -kInf) {  // every entry -inf: defined as a zero row
      for (int64_t j = 0; j < n; ++j) y[j] = 0.0f;
      return;
    }
    const B inv(1.0f / exp_shifted(x, y, n, m));
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      store(y + i, load(y + i) * inv);
      store(y + i + W, load(y + i + W) * inv);
    }
    for (; i + W <= n; i += W) store(y + i, load(y + i) * inv);
    if (i < n) store_partial(y + i, load_partial(y + i, n - i, 0.0f) * inv, n - i);
  }

  static void softmax_rows(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y,
                           int64_t ldy) {
    if (rows <= 0 || n <= 0) return;
    detail::parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) softmax_row(x + r * ldx, y + r * ldy, n);
    });
  }

  // Widening of a float batch into two double batches (lanes [0, W/2) and [W/2, W)).
  using BD = xsimd::batch<double, Arch>;
  static void widen(const B& v, BD& lo, BD& hi) {
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      lo = BD(_mm512_cvtps_pd(_mm512_castps512_ps256(v)));
      hi = BD(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    } else if constexpr (std::is_base_of_v<xsimd::avx, Arch>) {
      lo = BD(_mm256_cvtps_pd(_mm256_castps256_ps128(v)));
      hi = BD(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    } else {
      lo = BD(_mm_cvtps_pd(v));
      hi = BD(_mm_cvtps_pd(_mm_movehl_ps(v, v)));
    }
  }
  static double reduce_sum_d(const BD& v) {
    alignas(64) double buf[BD::size];
    v.store_aligned(buf);
    double t = 0.0;
    for (size_t l = 0; l < BD::size; ++l) t += buf[l];  // lane order: deterministic
    return t;
  }

  // One row of add_layernorm_rows. Two sweeps:
  //  1. s = x + residual, stored to `sbuf` (sum_out if requested, else y), while the sums of
  //     d = s - K and d^2 are accumulated in DOUBLE (K = s[0], a shift that keeps the sums near
  //     the data's spread). Each float s is exact in double and d's rounding is ~1e-16
  //     relative, so mean = K + sum d / n and var = sum d^2 / n - (sum d / n)^2 lose at most
  //     ~n 2^-52 (1 + (mean - K)^2 / var) relative: far below float's eps for any row a float
  //     can hold (this replaces a per-vector Welford division).
  //  2. y = (s - mean) * rstd * gamma + beta, reading s back from sbuf.
  // Aliasing: x[j] and residual[j] are read before sbuf[j] is written; y[j] is written after
  // sbuf[j] is read, so y / sum_out may alias x or residual.
  static void layernorm_row(const float* x, const float* res, const float* gamma, const float* beta,
                            float eps, float* sbuf, float* y, int64_t n) {
    const float k0 = res ? x[0] + res[0] : x[0];
    const BD bk(static_cast<double>(k0));
    BD s1a(0.0), s1b(0.0), s2a(0.0), s2b(0.0);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      B s = load(x + i);
      if (res) s += load(res + i);
      store(sbuf + i, s);
      BD lo, hi;
      widen(s, lo, hi);
      lo -= bk;
      hi -= bk;
      s1a += lo;
      s1b += hi;
      s2a = xsimd::fma(lo, lo, s2a);
      s2b = xsimd::fma(hi, hi, s2b);
    }
    double sum1 = reduce_sum_d(s1a + s1b);
    double sum2 = reduce_sum_d(s2a + s2b);
    if (i < n) {
      const int64_t r = n - i;
      B s = load_partial(x + i, r, 0.0f);
      if (res) s += load_partial(res + i, r, 0.0f);
      store_partial(sbuf + i, s, r);
      alignas(64) float ls[W];
      s.store_aligned(ls);
      for (int64_t l = 0; l < r; ++l) {
        const double d = static_cast<double>(ls[l]) - static_cast<double>(k0);
        sum1 += d;
        sum2 += d * d;
      }
    }
    const double inv_n = 1.0 / static_cast<double>(n);
    const double dmean = sum1 * inv_n;
    const double tot_mean = static_cast<double>(k0) + dmean;
    const double var_raw = sum2 * inv_n - dmean * dmean;
    const double var = var_raw > 0.0 ? var_raw : 0.0;  // biased, as PyTorch
    const B bmean(static_cast<float>(tot_mean));
    const B brstd(static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps))));
    for (i = 0; i + W <= n; i += W) {
      B v = (load(sbuf + i) - bmean) * brstd;
      if (gamma) v *= load(gamma + i);
      if (beta) v += load(beta + i);
      store(y + i, v);
    }
    if (i < n) {
      const int64_t r = n - i;
      B v = (load_partial(sbuf + i, r, 0.0f) - bmean) * brstd;
      if (gamma) v *= load_partial(gamma + i, r, 0.0f);
      if (beta) v += load_partial(beta + i, r, 0.0f);
      store_partial(y + i, v, r);
    }
  }

  static void add_layernorm_rows(int64_t rows, int64_t n, const float* x, int64_t ldx,
                                 const float* residual, int64_t ldr, const float* gamma,
                                 const float* beta, float eps, float* y, int64_t ldy,
                                 float* sum_out, int64_t ld_sum) {
    if (rows <= 0 || n <= 0) return;
    detail::parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* yr = y + r * ldy;
        float* sbuf = sum_out ? sum_out + r * ld_sum : yr;
        layernorm_row(x + r * ldx, residual ? residual + r * ldr : nullptr, gamma, beta, eps, sbuf,
                      yr, n);
      }
    });
  }

  static void embedding(int64_t rows, const int64_t* ids, const float* table, int64_t dim,
                        float scale, const int64_t* positions, const float* pos_table, float* out,
                        int64_t ldo) {
    if (rows <= 0 || dim <= 0) return;
    const B bscale(scale);
    detail::parallel_for(0, rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* e = table + ids[r] * dim;                                  // [dim]
        const float* p = pos_table ? pos_table + positions[r] * dim : nullptr;  // [dim]
        float* o = out + r * ldo;                                               // [dim]
        int64_t i = 0;
        for (; i + W <= dim; i += W) {
          B v = load(e + i) * bscale;
          if (p) v += load(p + i);
          store(o + i, v);
        }
        if (i < dim) {
          const int64_t rem = dim - i;
          B v = load_partial(e + i, rem, 0.0f) * bscale;
          if (p) v += load_partial(p + i, rem, 0.0f);
          store_partial(o + i, v, rem);
        }
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // Attention, flash style: per (b, h, block of queries), tiles of keys with a running max and
  // sum (online softmax); Q·Kᵀ and P·V run as register-tiled products.
  // -------------------------------------------------------------------------------------------
  // A task is kQueryBlock queries of one (b, h), processed as sub-blocks of MR query rows. For
  // each tile of kKeyTile = NR keys (the GEMM micro-kernel's register tile: MR x NR):
  //   1. the tile of K is copied transposed, Kt [D, NR] (keys past the tile's end zero), and
  //      the tile of V copied, Vt [NR, dp2] (dp2 = D rounded up to NR). Rows of K/V in a fused
  //      QKV buffer or a KV cache are 3-12 KiB apart; the copies are contiguous, L1-resident
  //      (AVX-512, D = 64: 8 + 8 KiB) and shared by the kQueryBlock queries (copy cost: 1/(2
  //      kQueryBlock) of the flops);
  //   2. scores S [MR, NR] = (scale q) · Kt: MR broadcasts x 2 vectors per head-dim step, the
  //      GEMM register tile;
  //   3. masks applied to S in the tile (causal, key padding, bool, additive);
  //   4. online softmax per row over the NR scores (2 vectors): new max, correction
  //      exp(old max - new max), P = exp(S - max), running sum;
  //   5. acc [MR, dp2] = acc * corr + P · Vt, NR columns of the head at a time (the same
  //      register tile, K = keys of the tile).
  // Workspace per thread: (2 kQueryBlock + NR) dp2 + D NR + MR NR floats, independent of S.
  static constexpr int64_t kKeyTile = NR;
  static constexpr int64_t kQueryBlock = NR;
  // Keys per online-softmax step of the transposed path (attention_block_t).
  static constexpr int64_t kKeyBlock = 4 * MR;
  // Query blocks with more than this many queries take the transposed path.
  static constexpr int64_t kFewQueries = NR / 4;
  static_assert(kKeyBlock >= NR && kKeyBlock >= MR && kKeyBlock * NR >= 32,
                "the attention paths share the scratch layout");

  // c[r*ldc + 0:NR] = (row_scale ? c * row_scale[r] : 0) + sum_{kk < kd} a[r*lda + kk] b[kk*ldb
  // + 0:NR] for r < R. c 64-byte aligned, ldc a multiple of W; b any alignment.
  template <int R>
  static void tile_product(int64_t kd, const float* a, int64_t lda, int64_t ka, const float* b,
                           int64_t ldb, float* c, int64_t ldc, const float* row_scale) {
    B acc0[R];
    B acc1[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (row_scale) {
        const B sc(row_scale[r]);
        acc0[r] = B::load_aligned(c + r * ldc) * sc;
        acc1[r] = B::load_aligned(c + r * ldc + W) * sc;
      } else {
        acc0[r] = B(0.0f);
        acc1[r] = B(0.0f);
      }
    }
    for (int64_t kk = 0; kk < kd; ++kk) {
      const B b0 = load(b + kk * ldb);  // unaligned loads: b may be V's rows read in place
      const B b1 = load(b + kk * ldb + W);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const B x(a[r * lda + kk * ka]);
        acc0[r] = fmadd(x, b0, acc0[r]);
        acc1[r] = fmadd(x, b1, acc1[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      acc0[r].store_aligned(c + r * ldc);
      acc1[r].store_aligned(c + r * ldc + W);
    }
  }
  // tile_product<rows> for a run-time rows in [1, R].
  template <int R>
  static void tile_product_rows(int64_t rows, int64_t kd, const float* a, int64_t lda, int64_t ka,
                                const float* b, int64_t ldb, float* c, int64_t ldc,
                                const float* row_scale) {
    if constexpr (R > 0) {
      if (rows == R) {
        tile_product<R>(kd, a, lda, ka, b, ldb, c, ldc, row_scale);
      } else {
        tile_product_rows<R - 1>(rows, kd, a, lda, ka, b, ldb, c, ldc, row_scale);
      }
    }
  }

  struct AttnScratch {
    float* qs;   // [kQueryBlock, dp2]  scale * q
    float* acc;  // [kQueryBlock, dp2]  running sum of p * v
    float* kt;   // [D, NR]             key tile, transposed
    float* vt;   // [NR, dp2]           value tile
    float* sc;   // [MR, NR]            scores, then probabilities, of one sub-block
  };

  static void attention_block(const AttentionArgs& g, int64_t b, int64_t h, int64_t t0, int64_t nq,
                              int64_t dp2, const AttnScratch& w) {
    const int64_t d = g.head_dim;
    const float* kb = g.k + b * g.k_sb + h * g.k_sh;  // key s at kb + s*k_ss: [S, D]
    const float* vb = g.v + b * g.v_sb + h * g.v_sh;  // [S, D]
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    const int64_t mask_bh = (b * g.heads + h) * g.m_sbh;
    float run_max[kQueryBlock];
    float run_sum[kQueryBlock];
    float corr[kQueryBlock];
    for (int64_t qi = 0; qi < nq; ++qi) {
      const float* q = g.q + b * g.q_sb + (t0 + qi) * g.q_st + h * g.q_sh;  // [D]
      float* qrow = w.qs + qi * dp2;
      for (int64_t j = 0; j < d; ++j) qrow[j] = g.scale * q[j];
      float* arow = w.acc + qi * dp2;
      for (int64_t j = 0; j < dp2; ++j) arow[j] = 0.0f;
      run_max[qi] = -kInf;
      run_sum[qi] = 0.0f;
    }
    // Keys past the last query's causal limit are never visited.
    int64_t key_end = g.kv_len;
    if (g.causal) key_end = min_i64(key_end, t0 + nq + g.causal_offset);
    const bool masked = kp || g.mask_bool || g.mask_add;
    for (int64_t s0 = first_unpadded(kp, key_end); s0 < key_end; s0 += NR) {
      const int64_t nk = min_i64(NR, key_end - s0);
      // 1. Kt [D, NR] (keys >= nk zero), Vt [nk, dp2] (columns >= D zero).
      for (int64_t j = 0; j < nk; ++j) {
        const float* kr = kb + (s0 + j) * g.k_ss;  // [D]
        for (int64_t x = 0; x < d; ++x) w.kt[x * NR + j] = kr[x];
        const float* vr = vb + (s0 + j) * g.v_ss;  // [D]
        float* vt = w.vt + j * dp2;
        for (int64_t x = 0; x < d; ++x) vt[x] = vr[x];
        for (int64_t x = d; x < dp2; ++x) vt[x] = 0.0f;
      }
      for (int64_t x = 0; x < d; ++x)
        for (int64_t j = nk; j < NR; ++j) w.kt[x * NR + j] = 0.0f;
      for (int64_t r0 = 0; r0 < nq; r0 += MR) {
        const int64_t rows = min_i64(MR, nq - r0);
        const int64_t t_first = t0 + r0;
        // Whole sub-block in the causal past of this tile? Then the tile is skipped.
        if (g.causal && s0 > t_first + rows - 1 + g.causal_offset) continue;
        // 2. S [rows, NR].
        tile_product_rows<MR>(rows, d, w.qs + r0 * dp2, dp2, 1, w.kt, NR, w.sc, NR, nullptr);
        // 3. Masks: keys past the tile, the causal future, padding, bool and additive masks.
        const bool partial = nk < NR || (g.causal && s0 + NR - 1 > t_first + g.causal_offset);
        if (partial || masked) {
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t t = t_first + r;
            float* srow = w.sc + r * NR;
            const int64_t vis = g.causal ? min_i64(nk, t + g.causal_offset + 1 - s0) : nk;
            for (int64_t j = max_i64(vis, 0); j < NR; ++j) srow[j] = -kInf;
            if (masked) {
              const int64_t mrow = mask_bh + t * g.m_st + s0;
              for (int64_t j = 0; j < vis; ++j) {
                if ((kp && kp[s0 + j]) || (g.mask_bool && g.mask_bool[mrow + j])) {
                  srow[j] = -kInf;
                } else if (g.mask_add) {
                  srow[j] += g.mask_add[mrow + j];
                }
              }
            }
          }
        }
        // 4. Online softmax, row by row over the NR = 2W scores.
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t qi = r0 + r;
          float* srow = w.sc + r * NR;
          const B s_lo = B::load_aligned(srow);
          const B s_hi = B::load_aligned(srow + W);
          const float tile_max = reduce_max(xsimd::max(s_lo, s_hi));
          const float new_max = tile_max > run_max[qi] ? tile_max : run_max[qi];
          // Nothing allowed yet: shift by 0, so P = exp(-inf) = 0 and no -inf - -inf = NaN.
          const float shift = new_max == -kInf ? 0.0f : new_max;
          const B bshift(shift);
          const B p_lo = exp_nonpos(s_lo - bshift);
          const B p_hi = exp_nonpos(s_hi - bshift);
          p_lo.store_aligned(srow);
          p_hi.store_aligned(srow + W);
          corr[qi] = exp_nonpos(B(run_max[qi] - shift)).get(0);  // 0 on the first allowed tile
          run_sum[qi] = run_sum[qi] * corr[qi] + xsimd::hadd(p_lo + p_hi);
          run_max[qi] = new_max;
        }
        // 5. acc = acc * corr + P · Vt, NR head columns at a time.
        for (int64_t c0 = 0; c0 < dp2; c0 += NR) {
          tile_product_rows<MR>(rows, nk, w.sc, NR, 1, w.vt + c0, dp2, w.acc + r0 * dp2 + c0, dp2,
                                corr + r0);
        }
      }
    }
    for (int64_t qi = 0; qi < nq; ++qi) {
      float* o = g.out + b * g.o_sb + (t0 + qi) * g.o_st + h * g.o_sh;  // [D]
      const float* a = w.acc + qi * dp2;
      // A query with no allowed key has run_sum == 0: a zero row, not 0/0.
      const B inv(run_sum[qi] > 0.0f ? 1.0f / run_sum[qi] : 0.0f);
      int64_t j = 0;
      for (; j + W <= d; j += W) store(o + j, B::load_aligned(a + j) * inv);
      if (j < d) store_partial(o + j, B::load_aligned(a + j) * inv, d - j);
    }
  }

  // Output accumulator vectors kept in registers while a tile's values are summed (4 vectors:
  // 4 accumulators + 1 broadcast + 1-4 loads, well within 16 registers).
  static constexpr int kAccVectors = 4;

  // Lane i of the result = hadd(rows[i]), i < W: W horizontal sums in ~W shuffles and adds.
  static B transpose_sum(const B* rows) {
#if XSIMD_VERSION_MAJOR == 8 && XSIMD_VERSION_MINOR == 1
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      // xsimd 8.1's AVX-512 haddp puts hadd(rows[p(i)]) in lane i, with p swapping lanes
      // 2<->4, 3<->5, 10<->12, 11<->13 (a shuffle-order bug, caught by the kernel tests).
      // p is an involution: feeding rows[p(i)] puts every sum in its lane.
      constexpr int kPerm[16] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
      B fixed[16];
      for (int i = 0; i < 16; ++i) fixed[i] = rows[kPerm[i]];
      return xsimd::haddp(fixed);
    }
#endif
    return xsimd::haddp(rows);
  }

  // sc[j] = qs . k_j for the nk keys k_j = kb + j*k_ss; qs is 64-byte aligned and zero-padded
  // to a multiple of W. W keys at a time: one accumulator per key, then one transposed sum
  // turns the W accumulators into W scores (no per-key horizontal sum).
  static void tile_scores(const float* qs, const float* kb, int64_t k_ss, int64_t nk, int64_t d,
                          float* sc) {
    const int64_t d_full = d / W * W;
    for (int64_t j0 = 0; j0 < nk; j0 += W) {
      const int64_t g = min_i64(W, nk - j0);
      B accs[W];
      int64_t i = 0;
      // Four keys at a time: four independent FMA chains hide the FMA latency.
      for (; i + 4 <= g; i += 4) {
        const float* k0 = kb + (j0 + i) * k_ss;  // [D] each
        const float* k1 = k0 + k_ss;
        const float* k2 = k1 + k_ss;
        const float* k3 = k2 + k_ss;
        B a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
        int64_t x = 0;
        for (; x < d_full; x += W) {
          const B qv = B::load_aligned(qs + x);
          a0 = fmadd(qv, load(k0 + x), a0);
          a1 = fmadd(qv, load(k1 + x), a1);
          a2 = fmadd(qv, load(k2 + x), a2);
          a3 = fmadd(qv, load(k3 + x), a3);
        }
        if (x < d) {
          const B qv = B::load_aligned(qs + x);
          a0 = fmadd(qv, load_partial(k0 + x, d - x, 0.0f), a0);
          a1 = fmadd(qv, load_partial(k1 + x, d - x, 0.0f), a1);
          a2 = fmadd(qv, load_partial(k2 + x, d - x, 0.0f), a2);
          a3 = fmadd(qv, load_partial(k3 + x, d - x, 0.0f), a3);
        }
        accs[i] = a0;
        accs[i + 1] = a1;
        accs[i + 2] = a2;
        accs[i + 3] = a3;
      }
      for (; i < W; ++i) {
        B acc(0.0f);
        if (i < g) {
          const float* kr = kb + (j0 + i) * k_ss;  // [D]
          int64_t x = 0;
          for (; x < d_full; x += W) acc = fmadd(B::load_aligned(qs + x), load(kr + x), acc);
          if (x < d) {
            acc = fmadd(B::load_aligned(qs + x), load_partial(kr + x, d - x, 0.0f), acc);
          }
        }
        accs[i] = acc;
      }
      const B scores = transpose_sum(accs);
      if (g == W) {
        store(sc + j0, scores);
      } else {
        store_partial(sc + j0, scores, g);
      }
    }
  }

  // acc[c0, c0 + NV*W) = acc * corr + sum_j p[j] v_j[c0, ...) over the nk keys v_j = vb + j*v_ss,
  // with the NV accumulators in registers. Columns >= d are never read from V (their
  // accumulator lanes stay 0).
  template <int NV>
  static void tile_values_chunk(float* acc, float corr, const float* p, int64_t nk, const float* vb,
                                int64_t v_ss, int64_t c0, int64_t d) {
    B a[NV];
    const B bc(corr);
#pragma GCC unroll 4
    for (int r = 0; r < NV; ++r) a[r] = B::load_aligned(acc + c0 + r * W) * bc;
    const bool full = c0 + NV * W <= d;
    for (int64_t j = 0; j < nk; ++j) {
      if (p[j] == 0.0f) continue;  // masked (or underflowed) key
      const B pj(p[j]);
      const float* vr = vb + j * v_ss + c0;  // [D - c0]
      if (full) {
#pragma GCC unroll 4
        for (int r = 0; r < NV; ++r) a[r] = fmadd(pj, load(vr + r * W), a[r]);
      } else {
#pragma GCC unroll 4
        for (int r = 0; r < NV; ++r) {
          const int64_t col = c0 + r * W;
          if (col + W <= d) {
            a[r] = fmadd(pj, load(vr + r * W), a[r]);
          } else if (col < d) {
            a[r] = fmadd(pj, load_partial(vr + r * W, d - col, 0.0f), a[r]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < NV; ++r) a[r].store_aligned(acc + c0 + r * W);
  }

  // acc[0, dp) = acc * corr + sum_j p[j] v_j[0, d), dp = d rounded up to W.
  static void tile_values(float* acc, float corr, const float* p, int64_t nk, const float* vb,
                          int64_t v_ss, int64_t d, int64_t dp) {
    for (int64_t c0 = 0; c0 < dp; c0 += kAccVectors * W) {
      switch (min_i64(kAccVectors, (dp - c0) / W)) {
        case 1:
          tile_values_chunk<1>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
        case 2:
          tile_values_chunk<2>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
        case 3:
          tile_values_chunk<3>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
        default:
          tile_values_chunk<kAccVectors>(acc, corr, p, nk, vb, v_ss, c0, d);
          break;
      }
    }
  }

  // The first key in [0, end) that is not padded (end if none): leading padded keys (left
  // padding) contribute nothing -- their scores are all -inf, so the running max, sum and
  // accumulators would stay as they are -- and the paths start after them.
  static int64_t first_unpadded(const uint8_t* kp, int64_t end) {
    int64_t s = 0;
    if (kp)
      while (s < end && kp[s] != 0) ++s;
    return s;
  }

  // Keys [0, end) with the padded keys at the end dropped (right padding costs nothing).
  static int64_t trim_padded(const uint8_t* kp, int64_t end) {
    while (end > 0 && kp[end - 1] != 0) --end;
    return end;
  }

  // The direct path, for a single query (a decode step): scores are dot products of q with
  // K's rows read in place, W keys at a time with one transposed horizontal sum; values summed
  // straight from V's rows. No copy of K or V: a decode step reads each byte of its head's
  // cache once.
  static constexpr int64_t kDirectKeyTile = 32;
  static void attention_one_query(const AttentionArgs& g, int64_t b, int64_t h, int64_t t,
                                  int64_t dp2, const AttnScratch& w) {
    const int64_t d = g.head_dim;
    const float* kb = g.k + b * g.k_sb + h * g.k_sh;  // key s at kb + s*k_ss: [S, D]
    const float* vb = g.v + b * g.v_sb + h * g.v_sh;  // [S, D]
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    const int64_t mask_bh = (b * g.heads + h) * g.m_sbh;
    const float* q = g.q + b * g.q_sb + t * g.q_st + h * g.q_sh;  // [D]
    float* qs = w.qs;                                             // [dp2]: scale * q, zero-padded
    float* acc = w.acc;                                           // [dp2]
    float* sc = w.sc;                                             // [kDirectKeyTile]
    for (int64_t j = 0; j < dp2; ++j) qs[j] = j < d ? g.scale * q[j] : 0.0f;
    for (int64_t j = 0; j < dp2; ++j) acc[j] = 0.0f;
    float run_max = -kInf, run_sum = 0.0f;
    int64_t key_end = g.kv_len;
    if (g.causal) key_end = min_i64(key_end, t + 1 + g.causal_offset);
    if (kp) key_end = trim_padded(kp, key_end);
    for (int64_t s0 = first_unpadded(kp, key_end); s0 < key_end; s0 += kDirectKeyTile) {
      const int64_t nk = min_i64(kDirectKeyTile, key_end - s0);
      tile_scores(qs, kb + s0 * g.k_ss, g.k_ss, nk, d, sc);
      if (kp || g.mask_bool || g.mask_add) {
        const int64_t mrow = mask_bh + t * g.m_st + s0;
        for (int64_t j = 0; j < nk; ++j) {
          if ((kp && kp[s0 + j]) || (g.mask_bool && g.mask_bool[mrow + j])) {
            sc[j] = -kInf;
          } else if (g.mask_add) {
            sc[j] += g.mask_add[mrow + j];
          }
        }
      }
      const float tile_max = row_max(sc, nk);
      if (tile_max == -kInf) continue;  // nothing allowed in this tile
      const float new_max = tile_max > run_max ? tile_max : run_max;
      const float corr = exp_nonpos(B(run_max - new_max)).get(0);  // 0 on the first allowed tile
      run_sum = run_sum * corr + exp_shifted(sc, sc, nk, new_max);
      run_max = new_max;
      tile_values(acc, corr, sc, nk, vb + s0 * g.v_ss, g.v_ss, d, ceil_div(d, W) * W);
    }
    float* o = g.out + b * g.o_sb + t * g.o_st + h * g.o_sh;  // [D]
    const B inv(run_sum > 0.0f ? 1.0f / run_sum : 0.0f);      // no allowed key: a zero row
    int64_t j = 0;
    for (; j + W <= d; j += W) store(o + j, B::load_aligned(acc + j) * inv);
    if (j < d) store_partial(o + j, B::load_aligned(acc + j) * inv, d - j);
  }

  // The transposed path, for query blocks of more than kFewQueries (up to NR) queries: the
  // queries are the VECTOR dimension. Per task, Qt [D, NR] = scale * qᵀ (once). Per block of
  // kKeyBlock keys:
  //   St [keys, NR] = K · Qt: the register tile with MR keys broadcast straight from K's rows
  //     (no copy of K) against 2 vectors of queries;
  //   masks; per query (a vector lane) the block's max, correction and sum over the keys: all
  //     vector operations, no horizontal reduction;
  //   acc [NR, dp2] = acc * corr + P · Vt, the register tile with MR queries broadcast from
  //     Pt (k stride NR) against Vt, a contiguous copy of the block's values [keys, dp2].
  static void attention_block_t(const AttentionArgs& g, int64_t b, int64_t h, int64_t t0,
                                int64_t nq, int64_t dp2, const AttnScratch& w) {
    const int64_t d = g.head_dim;
    const float* kb = g.k + b * g.k_sb + h * g.k_sh;  // key s at kb + s*k_ss: [S, D]
    const float* vb = g.v + b * g.v_sb + h * g.v_sh;  // [S, D]
    const uint8_t* kp = g.key_padding ? g.key_padding + b * g.kp_sb : nullptr;  // [S]
    const int64_t mask_bh = (b * g.heads + h) * g.m_sbh;
    float* qt = w.qs;  // [D, NR]
    float* st = w.sc;  // [kKeyBlock, NR]
    for (int64_t x = 0; x < d; ++x)
      for (int64_t q = 0; q < NR; ++q)
        qt[x * NR + q] =
            q < nq ? g.scale * g.q[b * g.q_sb + (t0 + q) * g.q_st + h * g.q_sh + x] : 0.0f;
    for (int64_t i = 0; i < nq * dp2; ++i) w.acc[i] = 0.0f;
    B m_lo(-kInf), m_hi(-kInf);  // running max per query
    B l_lo(0.0f), l_hi(0.0f);    // running sum per query
    alignas(64) float corr[NR];
    int64_t key_end = g.kv_len;
    if (g.causal) key_end = min_i64(key_end, t0 + nq + g.causal_offset);
    if (kp) key_end = trim_padded(kp, key_end);
    for (int64_t s0 = first_unpadded(kp, key_end); s0 < key_end; s0 += kKeyBlock) {
      const int64_t nk = min_i64(kKeyBlock, key_end - s0);
      for (int64_t j0 = 0; j0 < nk; j0 += MR) {
        tile_product_rows<MR>(min_i64(MR, nk - j0), d, kb + (s0 + j0) * g.k_ss, g.k_ss, 1, qt, NR,
                              st + j0 * NR, NR, nullptr);
      }
      // Masks. Causal: key s allowed for query t iff s <= t + offset; only blocks reaching past
      // the first query's limit need the check.
      // A padded key masks its whole row of St (two vector stores).
      const bool causal_part = g.causal && s0 + nk - 1 > t0 + g.causal_offset;
      const bool per_element = g.mask_bool || g.mask_add;
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t s = s0 + j;
        float* srow = st + j * NR;
        if (kp && kp[s]) {
          B(-kInf).store_aligned(srow);
          B(-kInf).store_aligned(srow + W);
          continue;
        }
        if (!causal_part && !per_element) continue;
        for (int64_t q = 0; q < nq; ++q) {
          const int64_t t = t0 + q;
          if (g.causal && s > t + g.causal_offset) {
            srow[q] = -kInf;
          } else if (per_element) {
            const int64_t mi = mask_bh + t * g.m_st + s;
            if (g.mask_bool && g.mask_bool[mi]) {
              srow[q] = -kInf;
            } else if (g.mask_add) {
              srow[q] += g.mask_add[mi];
            }
          }
        }
      }
      B c_lo = m_lo, c_hi = m_hi;
      for (int64_t j = 0; j < nk; ++j) {
        c_lo = xsimd::max(c_lo, B::load_aligned(st + j * NR));
        c_hi = xsimd::max(c_hi, B::load_aligned(st + j * NR + W));
      }
      // Nothing allowed yet for a query: shift by 0, so P = exp(-inf) = 0, never -inf - -inf.
      const B sh_lo = xsimd::select(c_lo == B(-kInf), B(0.0f), c_lo);
      const B sh_hi = xsimd::select(c_hi == B(-kInf), B(0.0f), c_hi);
      const B corr_lo = exp_nonpos(m_lo - sh_lo);  // 0 on a query's first allowed block
      const B corr_hi = exp_nonpos(m_hi - sh_hi);
      corr_lo.store_aligned(corr);
      corr_hi.store_aligned(corr + W);
      m_lo = c_lo;
      m_hi = c_hi;
      B sum_lo(0.0f), sum_hi(0.0f);
      for (int64_t j = 0; j < nk; ++j) {
        const B p_lo = exp_nonpos(B::load_aligned(st + j * NR) - sh_lo);
        const B p_hi = exp_nonpos(B::load_aligned(st + j * NR + W) - sh_hi);
        p_lo.store_aligned(st + j * NR);
        p_hi.store_aligned(st + j * NR + W);
        sum_lo += p_lo;
        sum_hi += p_hi;
      }
      l_lo = fmadd(l_lo, corr_lo, sum_lo);
      l_hi = fmadd(l_hi, corr_hi, sum_hi);
      // The block's values [nk, dp2]: V's rows in place when D is a multiple of NR (every NR
      // columns lie inside the head), else a zero-padded copy Vt.
      const float* vsrc = vb + s0 * g.v_ss;
      int64_t ldv = g.v_ss;
      if (d != dp2) {
        for (int64_t j = 0; j < nk; ++j) {
          const float* vr = vb + (s0 + j) * g.v_ss;  // [D]
          float* vt = w.vt + j * dp2;
          for (int64_t x = 0; x < d; ++x) vt[x] = vr[x];
          for (int64_t x = d; x < dp2; ++x) vt[x] = 0.0f;
        }
        vsrc = w.vt;
        ldv = dp2;
      }
      for (int64_t q0 = 0; q0 < nq; q0 += MR) {
        for (int64_t c0 = 0; c0 < dp2; c0 += NR) {
          tile_product_rows<MR>(min_i64(MR, nq - q0), nk, st + q0, 1, NR, vsrc + c0, ldv,
                                w.acc + q0 * dp2 + c0, dp2, corr + q0);
        }
      }
    }
    alignas(64) float sums[NR];
    l_lo.store_aligned(sums);
    l_hi.store_aligned(sums + W);
    for (int64_t q = 0; q < nq; ++q) {
      float* o = g.out + b * g.o_sb + (t0 + q) * g.o_st + h * g.o_sh;  // [D]
      const float* a = w.acc + q * dp2;
      // A query with no allowed key has a zero sum: a zero row, not 0/0.
      const B inv(sums[q] > 0.0f ? 1.0f / sums[q] : 0.0f);
      int64_t j = 0;
      for (; j + W <= d; j += W) store(o + j, B::load_aligned(a + j) * inv);
      if (j < d) store_partial(o + j, B::load_aligned(a + j) * inv, d - j);
    }
  }

  static void attention(const AttentionArgs& g) {
    if (g.batch <= 0 || g.heads <= 0 || g.q_len <= 0 || g.head_dim <= 0) return;
    const int64_t dp2 = ceil_div(g.head_dim, NR) * NR;
    const int64_t qblocks = ceil_div(g.q_len, kQueryBlock);
    const int64_t tasks = g.batch * g.heads * qblocks;  // (b, h, query block)
    const size_t scratch_floats =
        static_cast<size_t>(2 * NR * dp2 + kKeyBlock * dp2 + kKeyBlock * NR + g.head_dim * NR);
    // ~4 D flops per (query, key) pair; causal masking only makes tasks cheaper.
    const int64_t task_work = 4 * g.head_dim * min_i64(kQueryBlock, g.q_len) * max_i64(g.kv_len, 1);
    detail::parallel_for(0, tasks, max_i64(1, kMinChunkWork / task_work),
                         [&](int64_t lo, int64_t hi) {
                           float* base = detail::thread_scratch(scratch_floats);
                           AttnScratch w;
                           w.qs = base;              // [NR, dp2] (qs) or [D, NR] (qt; D <= dp2)
                           w.acc = w.qs + NR * dp2;  // [NR, dp2]
                           w.vt = w.acc + NR * dp2;  // [kKeyBlock >= NR, dp2]
                           w.sc = w.vt + kKeyBlock * dp2;  // [kKeyBlock >= MR, NR]
                           w.kt = w.sc + kKeyBlock * NR;   // [D, NR]
                           for (int64_t task = lo; task < hi; ++task) {
                             const int64_t qb = task % qblocks;
                             const int64_t bh = task / qblocks;
                             const int64_t t0 = qb * kQueryBlock;
                             const int64_t nq = min_i64(kQueryBlock, g.q_len - t0);
                             if (nq > kFewQueries) {
                               attention_block_t(g, bh / g.heads, bh % g.heads, t0, nq, dp2, w);
                             } else if (nq == 1) {
                               attention_one_query(g, bh / g.heads, bh % g.heads, t0, dp2, w);
                             } else {
                               attention_block(g, bh / g.heads, bh % g.heads, t0, nq, dp2, w);
                             }
                           }
                         });
  }
};

template <class Arch, Isa kIsa>
constexpr KernelTable make_kernel_table() {
  using K = Body<Arch, kIsa>;
  return KernelTable{kIsa,
                     K::NR,
                     &K::pack_weights,
                     &K::gemm,
                     &K::softmax_rows,
                     &K::add_layernorm_rows,
                     &K::activation,
                     &K::add,
                     &K::embedding,
                     &K::attention,
                     &K::pack_weights_kn,
                     &K::vector_math,
                     &K::gemm_blocking};
}

}  // namespace
}  // namespace tessera::kernels
