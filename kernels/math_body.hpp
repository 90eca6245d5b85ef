// Math body: the kernels' polynomial exp / erf / erfc / tanh (with their stated errors),
// exp_nonpos (softmax's and attention's exp), gelu_erf, math_fn and vector_math, and the
// activations (act<kAct> for one vector, act_range, activation). Uses SimdBody (simd_body.hpp);
// GemmBody (epilogue activations) and RowsBody (exp_nonpos) build on it. Rules: simd_body.hpp.
#pragma once

#include "kernels/simd_body.hpp"

namespace tessera::kernels {
namespace {

template <class Arch, Isa kIsa>
struct MathBody : SimdBody<Arch, kIsa> {
  using Base = SimdBody<Arch, kIsa>;
  using Base::fmadd;
  using Base::load;
  using Base::load_partial;
  using Base::store;
  using Base::store_partial;
  using Base::W;
  using typename Base::B;

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
};

}  // namespace
}  // namespace tessera::kernels
