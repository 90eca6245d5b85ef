// Tests of kernels/: every kernel of every ISA this CPU can run (called directly through
// kernel_table(isa)), and the free functions, against plain scalar references that accumulate in
// double. Tolerances are derived from the maths of each kernel (see each reference); every
// failure reports the worst element and the max error.
//
// Inputs are misaligned (offset by one float from a 64-byte boundary), outputs are poisoned with
// NaN first, and the padding around every output is checked to be untouched.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"
#include "kernels/parallel.hpp"

namespace tk = tessera::kernels;
using tk::Activation;
using tk::Isa;

namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();  // 2^-23, one ulp at 1.0
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
// xsimd's float exp/erfc flush results below FLT_MIN to zero (no denormals): absolute slack.
constexpr double kDenormSlack = 16.0 * FLT_MIN;

// doctest streams a const char* as a pointer: names go through std::string.
std::string isa_str(Isa isa) {
  return tk::isa_name(isa);
}

std::string act_name(Activation a) {
  switch (a) {
    case Activation::none:
      return "none";
    case Activation::relu:
      return "relu";
    case Activation::gelu_erf:
      return "gelu_erf";
    case Activation::gelu_tanh:
      return "gelu_tanh";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Buffers and data
// ---------------------------------------------------------------------------------------------
// n floats starting one float past a 64-byte boundary (so never 8-, 16-, 32- or 64-byte
// aligned), filled with NaN, followed by kGuard NaN guard floats.
class Buf {
 public:
  static constexpr size_t kGuard = 40;
  explicit Buf(size_t n) : n_(n), storage_(n + kGuard + 32, kNaN) {
    const auto addr = reinterpret_cast<uintptr_t>(storage_.data());
    offset_ = ((64 - addr % 64) % 64) / sizeof(float) + 1;
  }
  float* data() { return storage_.data() + offset_; }
  const float* data() const { return storage_.data() + offset_; }
  size_t size() const { return n_; }
  float& operator[](size_t i) { return data()[i]; }
  float operator[](size_t i) const { return data()[i]; }
  bool guard_intact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (!std::isnan(data()[n_ + i])) return false;
    }
    return true;
  }

 private:
  size_t n_;
  std::vector<float> storage_;
  size_t offset_;
};

struct Rng {
  std::mt19937_64 gen{12345};
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  double unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(gen); }
  int64_t below(int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(gen); }
  void fill(Buf& b, float lo, float hi) {
    for (size_t i = 0; i < b.size(); ++i) b[i] = uniform(lo, hi);
  }
};

// Counts elements outside [row*ld + n, (row+1)*ld) (the padding of a strided matrix) and the
// guard that are no longer NaN: a kernel wrote outside its output.
int64_t touched_padding(const Buf& b, int64_t rows, int64_t n, int64_t ld) {
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = n; j < ld && r * ld + j < static_cast<int64_t>(b.size()); ++j) {
      if (!std::isnan(b[static_cast<size_t>(r * ld + j)])) ++bad;
    }
  }
  return bad + (b.guard_intact() ? 0 : 1);
}

// ---------------------------------------------------------------------------------------------
// Error bookkeeping: max error, worst element (largest err/tol), count of failures.
// ---------------------------------------------------------------------------------------------
struct ErrStats {
  int64_t count = 0;
  int64_t failures = 0;
  double max_err = 0.0;
  double worst_ratio = -1.0;
  int64_t worst_index = -1;
  double worst_got = 0.0, worst_want = 0.0, worst_tol = 0.0;

  void add(int64_t index, double got, double want, double tol) {
    double err = 0.0;
    if (std::isnan(got) || std::isnan(want)) {
      err = (std::isnan(got) && std::isnan(want)) ? 0.0 : std::numeric_limits<double>::infinity();
    } else if (got != want) {  // equal infinities are exact
      err = std::fabs(got - want);
    }
    ++count;
    max_err = std::max(max_err, err);
    const double ratio =
        err == 0.0 ? 0.0 : (tol > 0.0 ? err / tol : std::numeric_limits<double>::infinity());
    if (ratio > 1.0) ++failures;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst_index = index;
      worst_got = got;
      worst_want = want;
      worst_tol = tol;
    }
  }
  bool ok() const { return failures == 0; }
};

std::ostream& operator<<(std::ostream& os, const ErrStats& e) {
  return os << e.failures << " of " << e.count << " elements out of tolerance; max err "
            << e.max_err << "; worst (err/tol " << e.worst_ratio << ") at index " << e.worst_index
            << ": got " << e.worst_got << ", want " << e.worst_want << ", tol " << e.worst_tol;
}

// ---------------------------------------------------------------------------------------------
// References (double)
// ---------------------------------------------------------------------------------------------
double ref_act(Activation a, double x) {
  switch (a) {
    case Activation::none:
      return x;
    case Activation::relu:
      return x > 0.0 ? x : 0.0;
    case Activation::gelu_erf:
      return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case Activation::gelu_tanh: {
      // x/2 (1 + tanh(u)) == x / (1 + exp(-2u)): the same function; this form does not cancel
      // for x << 0 (the tanh form loses every digit there, even in double). The identity is
      // checked against std::tanh in TEST_CASE "activation accuracy".
      const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
      return x / (1.0 + std::exp(-2.0 * u));
    }
  }
  return x;
}

// Relative error allowed for the float activation of a float input x, in units of kEps:
//  * gelu_erf = x/2 erfc(-x/sqrt2): rounding -x/sqrt2 perturbs erfc's argument u by u*eps/2,
//    i.e. erfc's value by 2u * u*eps/2 = x^2/2 eps (relative); the kernels' erfc itself is
//    within 3 eps (3 + x^2 eps without FMA; TEST_CASE "vector_math"), plus 2 roundings.
//  * gelu_tanh = x / (1 + exp(-2u)): 2u is formed with ~3 roundings (abs error 3|2u| eps),
//    which exp turns into a relative error; exp ~2 eps, then 1+e and the division.
double act_rel_tol(Activation a, double x) {
  switch (a) {
    case Activation::gelu_erf:
      return 64.0 + x * x;
    case Activation::gelu_tanh: {
      const double two_u = 2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
      return 8.0 + 4.0 * std::fabs(two_u);
    }
    default:
      return 0.0;
  }
}
// Largest |d act / dx|: propagates an absolute error of the pre-activation value.
constexpr double kActLipschitz = 1.2;  // gelu' peaks at 1.129 (x ~ 2.4); relu and none: 1

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------
struct GemmCase {
  int64_t m, k, n;
  Activation act = Activation::none;
  bool bias = false;
  bool residual = false;
  bool alias = false;  // residual == C (same pointer and stride)
  int64_t pad = 0;     // extra floats per row in lda, ldw, ldc and ld_residual
};

std::ostream& operator<<(std::ostream& os, const GemmCase& g) {
  return os << "M=" << g.m << " K=" << g.k << " N=" << g.n << " act=" << act_name(g.act)
            << " bias=" << g.bias << " residual=" << g.residual << " alias=" << g.alias
            << " pad=" << g.pad;
}

struct GemmData {
  GemmCase g;
  int64_t lda, ldw, ldc;
  Buf a, w, bias, res, c;
  GemmData(const GemmCase& gc, Rng& rng)
      : g(gc),
        lda(gc.k + gc.pad),
        ldw(gc.k + gc.pad),
        ldc(gc.n + gc.pad),
        a(static_cast<size_t>(gc.m * (gc.k + gc.pad))),
        w(static_cast<size_t>(gc.n * (gc.k + gc.pad))),
        bias(static_cast<size_t>(gc.n)),
        res(static_cast<size_t>(gc.m * (gc.n + gc.pad))),
        c(static_cast<size_t>(gc.m * (gc.n + gc.pad))) {
    // Unit-variance-ish pre-activations: a in [-1, 1], w in [-2, 2] / sqrt(K).
    const float ws = 2.0f / std::sqrt(static_cast<float>(gc.k));
    for (int64_t i = 0; i < gc.m; ++i)
      for (int64_t kk = 0; kk < gc.k; ++kk) a[i * lda + kk] = rng.uniform(-1.0f, 1.0f);
    for (int64_t j = 0; j < gc.n; ++j)
      for (int64_t kk = 0; kk < gc.k; ++kk) w[j * ldw + kk] = rng.uniform(-ws, ws);
    rng.fill(bias, -1.0f, 1.0f);
    for (int64_t i = 0; i < gc.m; ++i)
      for (int64_t j = 0; j < gc.n; ++j) res[i * ldc + j] = rng.uniform(-2.0f, 2.0f);
    reset_c();
  }
  // C poisoned with NaN; in the alias case its valid part holds the residual.
  void reset_c() {
    for (size_t i = 0; i < c.size(); ++i) c[i] = kNaN;
    if (g.alias) {
      for (int64_t i = 0; i < g.m; ++i)
        for (int64_t j = 0; j < g.n; ++j) c[i * ldc + j] = res[i * ldc + j];
    }
  }
  tk::Epilogue epilogue() {
    tk::Epilogue ep;
    ep.act = g.act;
    if (g.bias) ep.bias = bias.data();
    if (g.alias) {
      ep.residual = c.data();
      ep.ld_residual = ldc;
    } else if (g.residual) {
      ep.residual = res.data();
      ep.ld_residual = ldc;
    }
    return ep;
  }
  // Checks C against the double reference:
  //   |err| <= L (K+2) eps (sum_k |a w| + |bias|) + act_rel_tol eps |act(v)| + eps |out|
  // (K+2: one rounding per FMA -- two per step without FMA on SSE2, covered by the factor of
  // two between eps and the unit roundoff -- plus the bias add; L: act's Lipschitz bound).
  ErrStats check() const {
    ErrStats e;
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) {
        double dot = 0.0;
        double mag = 0.0;
        for (int64_t kk = 0; kk < g.k; ++kk) {
          const double p = static_cast<double>(a[i * lda + kk]) * w[j * ldw + kk];
          dot += p;
          mag += std::fabs(p);
        }
        const double b = g.bias ? bias[j] : 0.0;
        const double v = dot + b;
        const double act = ref_act(g.act, v);
        const double r = (g.alias || g.residual) ? res[i * ldc + j] : 0.0;
        const double want = act + r;
        const double tol = kActLipschitz * (g.k + 2) * kEps * (mag + std::fabs(b)) +
                           act_rel_tol(g.act, v) * kEps * std::fabs(act) + kEps * std::fabs(want) +
                           kDenormSlack;
        e.add(i * ldc + j, c[i * ldc + j], want, tol);
      }
    }
    return e;
  }
};

void run_gemm_case(const tk::KernelTable& kt, const GemmCase& g, Rng& rng) {
  GemmData d(g, rng);
  tk::PackedWeights pw;
  kt.pack_weights(d.w.data(), g.n, g.k, d.ldw, pw);
  const tk::Epilogue ep = d.epilogue();
  // The free gemm: the weights' ISA (kt's) with the tessera backend, or oneDNN's matmul under
  // TESSERA_GEMM=onednn (CTest kernels_onednn runs this whole suite that way).
  tk::gemm(g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, ep);
  const ErrStats e = d.check();
  CHECK_MESSAGE(e.ok(), isa_str(kt.isa) << " gemm " << g << ": " << e);
  const int64_t bad = touched_padding(d.c, g.m, g.n, d.ldc);
  CHECK_MESSAGE(bad == 0, isa_str(kt.isa)
                              << " gemm " << g << ": wrote " << bad << " floats outside C");
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------
enum class Layout {
  separate,  // q [B, T, H*D], k/v [B, S, H*D], out [B, T, H*D + 3]
  fused,     // one [B, T, 3E] buffer (needs S == T): q = +0, k = +E, v = +2E
  cache,     // q [B, H, T, D], k/v [B, H, S + 5, D] (a KV cache with room), out [B, T, H, D]
};
enum class MaskKind { none, broadcast, per_head };

struct AttnCase {
  int64_t batch, heads, q_len, kv_len, head_dim;
  bool causal = false;
  int64_t offset = 0;
  bool key_padding = false;
  MaskKind mask_bool = MaskKind::none;
  MaskKind mask_add = MaskKind::none;  // must equal mask_bool's kind when both are used
  Layout layout = Layout::separate;
  float scale = 0.0f;           // 0: 1/sqrt(head_dim)
  bool mask_whole_row = false;  // one (b, h, t) row fully masked by mask_bool
  bool pad_last_batch = false;  // every key of the last batch padded: zero rows
  bool pad_left = false;        // the first 3/4 of the keys padded (whole key blocks skipped)
};

std::ostream& operator<<(std::ostream& os, const AttnCase& c) {
  return os << "B=" << c.batch << " H=" << c.heads << " T=" << c.q_len << " S=" << c.kv_len
            << " D=" << c.head_dim << " causal=" << c.causal << " offset=" << c.offset
            << " kp=" << c.key_padding << " mask_bool=" << static_cast<int>(c.mask_bool)
            << " mask_add=" << static_cast<int>(c.mask_add)
            << " layout=" << static_cast<int>(c.layout);
}

struct AttnData {
  AttnCase c;
  tk::AttentionArgs args;
  Buf q, k, v, out, kp, mb, ma;
  int64_t out_rows = 0, out_n = 0, out_ld = 0;  // out as a strided matrix, for padding checks

  static size_t mask_size(const AttnCase& c) {
    const MaskKind kind = c.mask_bool != MaskKind::none ? c.mask_bool : c.mask_add;
    if (kind == MaskKind::none) return 0;
    const size_t per = static_cast<size_t>(c.q_len * (c.kv_len + 1));
    return kind == MaskKind::broadcast ? per : per * static_cast<size_t>(c.batch * c.heads);
  }
  static size_t q_size(const AttnCase& c) {
    const int64_t e = c.heads * c.head_dim;
    return static_cast<size_t>(c.layout == Layout::fused ? c.batch * c.q_len * 3 * e
                                                         : c.batch * c.q_len * e);
  }
  static size_t kv_size(const AttnCase& c) {
    const int64_t e = c.heads * c.head_dim;
    switch (c.layout) {
      case Layout::separate:
        return static_cast<size_t>(c.batch * c.kv_len * e);
      case Layout::fused:
        return 0;
      case Layout::cache:
        return static_cast<size_t>(c.batch * (c.kv_len + 5) * e);
    }
    return 0;
  }

  AttnData(const AttnCase& ac, Rng& rng)
      : c(ac),
        q(q_size(ac)),
        k(kv_size(ac)),
        v(kv_size(ac)),
        out(static_cast<size_t>(ac.batch * ac.q_len * (ac.heads * ac.head_dim + 3))),
        kp(static_cast<size_t>(ac.batch * (ac.kv_len + 2))),
        mb(mask_size(ac)),
        ma(mask_size(ac)) {
    const int64_t B = c.batch, H = c.heads, T = c.q_len, S = c.kv_len, D = c.head_dim;
    const int64_t E = H * D;
    rng.fill(q, -2.0f, 2.0f);
    rng.fill(k, -2.0f, 2.0f);
    rng.fill(v, -1.0f, 1.0f);
    tk::AttentionArgs& g = args;
    g.batch = B;
    g.heads = H;
    g.q_len = T;
    g.kv_len = S;
    g.head_dim = D;
    g.scale = c.scale != 0.0f ? c.scale : 1.0f / std::sqrt(static_cast<float>(D));
    g.causal = c.causal;
    g.causal_offset = c.offset;
    switch (c.layout) {
      case Layout::separate:
        g.q = q.data(), g.q_sb = T * E, g.q_st = E, g.q_sh = D;
        g.k = k.data(), g.k_sb = S * E, g.k_ss = E, g.k_sh = D;
        g.v = v.data(), g.v_sb = S * E, g.v_ss = E, g.v_sh = D;
        break;
      case Layout::fused:
        REQUIRE(S == T);
        g.q = q.data(), g.q_sb = T * 3 * E, g.q_st = 3 * E, g.q_sh = D;
        g.k = q.data() + E, g.k_sb = g.q_sb, g.k_ss = g.q_st, g.k_sh = D;
        g.v = q.data() + 2 * E, g.v_sb = g.q_sb, g.v_ss = g.q_st, g.v_sh = D;
        break;
      case Layout::cache:
        g.q = q.data(), g.q_sb = H * T * D, g.q_st = D, g.q_sh = T * D;
        g.k = k.data(), g.k_sb = H * (S + 5) * D, g.k_ss = D, g.k_sh = (S + 5) * D;
        g.v = v.data(), g.v_sb = g.k_sb, g.v_ss = D, g.v_sh = g.k_sh;
        break;
    }
    out_ld = E + 3;
    out_rows = B * T;
    out_n = E;
    g.out = out.data(), g.o_sb = T * out_ld, g.o_st = out_ld, g.o_sh = D;
    // Masks (stored as float buffers for the bool one: converted below).
    if (c.key_padding) {
      g.kp_sb = S + 2;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S + 2; ++s) {
          const bool pad =
              (c.pad_last_batch && b == B - 1) || (c.pad_left && 4 * s < 3 * S) || rng.unit() < 0.2;
          kp_bytes.push_back(pad ? 1 : 0);
        }
      g.key_padding = kp_bytes.data();
    }
    const MaskKind kind = c.mask_bool != MaskKind::none ? c.mask_bool : c.mask_add;
    if (kind != MaskKind::none) {
      g.m_st = S + 1;
      g.m_sbh = kind == MaskKind::per_head ? T * (S + 1) : 0;
    }
    if (c.mask_bool != MaskKind::none) {
      mb_bytes.resize(mb.size());
      for (auto& x : mb_bytes) x = rng.unit() < 0.25 ? 1 : 0;
      if (c.mask_whole_row) {  // row t = T/2 of the last (b, h) (or of every head if broadcast)
        const int64_t bh = kind == MaskKind::per_head ? B * H - 1 : 0;
        for (int64_t s = 0; s < S; ++s)
          mb_bytes[static_cast<size_t>(bh * g.m_sbh + T / 2 * g.m_st + s)] = 1;
      }
      g.mask_bool = mb_bytes.data();
    }
    if (c.mask_add != MaskKind::none) {
      for (size_t i = 0; i < ma.size(); ++i)
        ma[i] = rng.unit() < 0.15 ? -kInf : rng.uniform(-2.0f, 2.0f);
      g.mask_add = ma.data();
    }
  }

  // Double reference, materializing the scores of each (b, h, t). Tolerance per output element:
  //   each score s_j = scale q.k_j (+ mask) has |err| <= d_j = (D+2) eps scale sum|q k_j| + 2 eps
  //   |s_j|; softmax weights then have relative error <= 2 max_j d_j (+ exp's few eps); the
  //   weighted sum of V (plus the online rescalings, one per tile) adds <= (S+16) eps relative to
  //   sum_j p_j |v_j|, which bounds |out|.
  // A row with no allowed key must be exactly 0.
  ErrStats check() const {
    const tk::AttentionArgs& g = args;
    const int64_t B = c.batch, H = c.heads, T = c.q_len, S = c.kv_len, D = c.head_dim;
    ErrStats e;
    std::vector<double> score(static_cast<size_t>(S)), delta(static_cast<size_t>(S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const float* qr = g.q + b * g.q_sb + t * g.q_st + h * g.q_sh;
          const int64_t mrow = (b * H + h) * g.m_sbh + t * g.m_st;
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t s = 0; s < S; ++s) {
            bool allowed = true;
            if (g.causal && s > t + g.causal_offset) allowed = false;
            if (g.key_padding && g.key_padding[b * g.kp_sb + s]) allowed = false;
            if (g.mask_bool && g.mask_bool[mrow + s]) allowed = false;
            double sc = -std::numeric_limits<double>::infinity();
            double mag = 0.0;
            if (allowed) {
              const float* kr = g.k + b * g.k_sb + s * g.k_ss + h * g.k_sh;
              double dot = 0.0;
              for (int64_t d = 0; d < D; ++d) {
                dot += static_cast<double>(qr[d]) * kr[d];
                mag += std::fabs(static_cast<double>(qr[d]) * kr[d]);
              }
              sc = g.scale * dot;
              if (g.mask_add) sc += g.mask_add[mrow + s];
            }
            score[static_cast<size_t>(s)] = sc;
            delta[static_cast<size_t>(s)] =
                std::isinf(sc) ? 0.0 : (D + 2) * kEps * g.scale * mag + 2 * kEps * std::fabs(sc);
            m = std::max(m, sc);
          }
          const float* o = g.out + b * g.o_sb + t * g.o_st + h * g.o_sh;
          const int64_t base = o - g.out;
          if (m == -std::numeric_limits<double>::infinity()) {
            for (int64_t d = 0; d < D; ++d) e.add(base + d, o[d], 0.0, 0.0);
            continue;
          }
          double sum = 0.0, max_delta = 0.0;
          for (int64_t s = 0; s < S; ++s) {
            sum += std::exp(score[static_cast<size_t>(s)] - m);
            max_delta = std::max(max_delta, delta[static_cast<size_t>(s)]);
          }
          for (int64_t d = 0; d < D; ++d) {
            double want = 0.0, mag = 0.0;
            for (int64_t s = 0; s < S; ++s) {
              const double p = std::exp(score[static_cast<size_t>(s)] - m) / sum;
              const double vv = g.v[b * g.v_sb + s * g.v_ss + h * g.v_sh + d];
              want += p * vv;
              mag += p * std::fabs(vv);
            }
            const double tol = (2.0 * max_delta + (S + 16) * kEps) * mag + 1e-30;
            e.add(base + d, o[d], want, tol);
          }
        }
    return e;
  }

  std::vector<uint8_t> kp_bytes, mb_bytes;
};

void run_attention_case(const tk::KernelTable& kt, const AttnCase& c, Rng& rng) {
  AttnData d(c, rng);
  kt.attention(d.args);
  const ErrStats e = d.check();
  CHECK_MESSAGE(e.ok(), isa_str(kt.isa) << " attention " << c << ": " << e);
  const int64_t bad = touched_padding(d.out, d.out_rows, d.out_n, d.out_ld);
  CHECK_MESSAGE(bad == 0, isa_str(kt.isa)
                              << " attention " << c << ": wrote " << bad << " floats outside out");
}

std::vector<AttnCase> attention_cases() {
  using L = Layout;
  using MK = MaskKind;
  std::vector<AttnCase> cases;
  auto add = [&](AttnCase c) { cases.push_back(c); };
  // Prefill, fused QKV, causal, several key tiles plus a tail.
  add({.batch = 1,
       .heads = 2,
       .q_len = 130,
       .kv_len = 130,
       .head_dim = 64,
       .causal = true,
       .layout = L::fused});
  // Decode step from a KV cache: one query, causal offset S-1, key padding.
  add({.batch = 2,
       .heads = 3,
       .q_len = 1,
       .kv_len = 200,
       .head_dim = 17,
       .causal = true,
       .offset = 199,
       .key_padding = true,
       .layout = L::cache});
  // Chunked prefill: 5 queries at the end of 130 keys; additive per-head mask with -inf.
  add({.batch = 1,
       .heads = 5,
       .q_len = 5,
       .kv_len = 130,
       .head_dim = 3,
       .causal = true,
       .offset = 125,
       .mask_add = MK::per_head});
  // Broadcast bool mask + key padding, the last batch fully padded (zero rows).
  add({.batch = 2,
       .heads = 4,
       .q_len = 33,
       .kv_len = 65,
       .head_dim = 8,
       .key_padding = true,
       .mask_bool = MK::broadcast,
       .pad_last_batch = true});
  // Broadcast additive mask, head_dim 1.
  add({.batch = 1, .heads = 1, .q_len = 7, .kv_len = 64, .head_dim = 1, .mask_add = MK::broadcast});
  // Negative causal offset: the first 3 queries see no key (zero rows).
  add({.batch = 1,
       .heads = 1,
       .q_len = 10,
       .kv_len = 10,
       .head_dim = 64,
       .causal = true,
       .offset = -3,
       .layout = L::fused});
  // Per-(b,h) bool + additive masks together, one row fully masked, custom scale.
  add({.batch = 2,
       .heads = 2,
       .q_len = 20,
       .kv_len = 150,
       .head_dim = 17,
       .mask_bool = MK::per_head,
       .mask_add = MK::per_head,
       .scale = 0.5f,
       .mask_whole_row = true});
  // Broadcast bool mask with a fully masked row.
  add({.batch = 1,
       .heads = 3,
       .q_len = 6,
       .kv_len = 70,
       .head_dim = 8,
       .mask_bool = MK::broadcast,
       .mask_whole_row = true});
  // Single key.
  add({.batch = 1, .heads = 3, .q_len = 1, .kv_len = 1, .head_dim = 64});
  // No mask at all, cache layout.
  add({.batch = 1, .heads = 2, .q_len = 9, .kv_len = 129, .head_dim = 8, .layout = L::cache});
  // Long decode with every mask kind but bool.
  add({.batch = 1,
       .heads = 1,
       .q_len = 4,
       .kv_len = 300,
       .head_dim = 3,
       .causal = true,
       .offset = 296,
       .key_padding = true,
       .mask_add = MK::broadcast});
  // No keys at all: zero rows.
  add({.batch = 1, .heads = 2, .q_len = 3, .kv_len = 0, .head_dim = 8, .key_padding = true});
  // Left padding: the first 3/4 of the keys padded, so whole key blocks are skipped (every
  // path: one query, few queries, transposed; D = 64 reads V in place, D = 17 copies it).
  for (int64_t q_len : {1, 5, 40, 130})
    for (int64_t hd : {17, 64}) {
      add({.batch = 2,
           .heads = 2,
           .q_len = q_len,
           .kv_len = 300,
           .head_dim = hd,
           .key_padding = true,
           .layout = L::cache,
           .pad_left = true});
    }
  // Large scores (scale 4, q, k in [-2, 2]): the running max must be right.
  add({.batch = 1, .heads = 2, .q_len = 3, .kv_len = 190, .head_dim = 17, .scale = 4.0f});
  // Odd sizes: head_dim {1, 3, 17, 65} x sequence {1, 3, 17, 127, 129}, self-attention (T = S),
  // alternating causal / key padding / additive mask, both the few-query and the transposed path.
  {
    int v = 0;
    for (int64_t hd : {1, 3, 17, 65})
      for (int64_t seq : {1, 3, 17, 127, 129}) {
        AttnCase c{.batch = 1, .heads = 2, .q_len = seq, .kv_len = seq, .head_dim = hd};
        c.causal = v % 2 == 0;
        c.key_padding = v % 3 == 1;
        c.mask_add = v % 4 == 3 ? MK::per_head : MK::none;
        c.layout = v % 3 == 2 ? L::cache : L::separate;
        ++v;
        add(c);
      }
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Row-kernel references
// ---------------------------------------------------------------------------------------------
// softmax: y_j = exp(x_j - m) / sum_i exp(x_i - m). Float errors: exp ~2 eps; its argument
// x_j - m is rounded (relative eps), i.e. a relative error eps |x_j - m| in exp; the sum adds
// ~n eps and its terms' argument errors contribute at most max_t t e^-t = 1/e eps each.
//   |err_j| <= eps y_j (4n + 8 + 2 |x_j - m|) + FLT_MIN (flush of exp below FLT_MIN).
ErrStats check_softmax(const Buf& x_in, const Buf& y, int64_t rows, int64_t n, int64_t ldx,
                       int64_t ldy) {
  ErrStats e;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = x_in.data() + r * ldx;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(x[j]));
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(x[j] - m);
    for (int64_t j = 0; j < n; ++j) {
      const double want = std::isinf(m) ? 0.0 : std::exp(x[j] - m) / sum;
      const double tol =
          std::isinf(m) ? 0.0 : kEps * want * (4.0 * n + 8.0 + 2.0 * std::fabs(x[j] - m)) + FLT_MIN;
      e.add(r * ldy + j, y[static_cast<size_t>(r * ldy + j)], want, tol);
    }
  }
  return e;
}

}  // namespace

// =============================================================================================
// ISA selection and dispatch
// =============================================================================================
TEST_CASE("isa: supported list, tables, names") {
  const std::vector<Isa> isas = tk::supported_isas();
  REQUIRE(!isas.empty());
  CHECK(isas.back() == Isa::generic);  // best first, the baseline last
  CHECK(tk::isa_supported(Isa::generic));
  for (Isa isa : isas) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    CHECK(kt.isa == isa);
    CHECK(kt.gemm_panel_width > 0);
    CHECK((kt.pack_weights != nullptr));
    CHECK((kt.attention != nullptr));
  }
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (!tk::isa_supported(isa)) CHECK_THROWS_AS(tk::kernel_table(isa), std::runtime_error);
  }
  CHECK(std::string(tk::isa_name(Isa::avx2)) == "avx2");
  CHECK(tk::detail::isa_from_string("generic") == Isa::generic);
  CHECK_THROWS_AS(tk::detail::isa_from_string("avx1024"), std::runtime_error);
  CHECK_THROWS_AS(tk::detail::isa_from_string(""), std::runtime_error);
  if (!tk::isa_supported(Isa::avx512)) {
    CHECK_THROWS_AS(tk::detail::isa_from_string("avx512"), std::runtime_error);
  }
  const int before = tk::num_threads();
  CHECK(before >= 1);
  CHECK_THROWS_AS(tk::set_num_threads(0), std::invalid_argument);
  tk::set_num_threads(1);
  CHECK(tk::num_threads() == 1);
  tk::set_num_threads(before);
}

// =============================================================================================
// GEMM
// =============================================================================================
TEST_CASE("gemm: every N to 2*NR+1, every M to 17, K in {1, 3, 17, 127, 768}") {
  Rng rng;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::gelu_erf,
                             Activation::gelu_tanh};
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    const int64_t nr = kt.gemm_panel_width;
    int variant = 0;
    auto next = [&](int64_t m, int64_t k, int64_t n) {
      GemmCase g{m, k, n};
      const int v = variant++;
      g.act = acts[v % 4];
      g.bias = (v / 2) % 2 == 0;
      g.residual = (v / 3) % 2 == 0;
      g.alias = g.residual && (v / 5) % 2 == 1;
      g.pad = (v % 3 == 0) ? 0 : (v % 3 == 1 ? 1 : 13);
      return g;
    };
    // N sweep: every panel tail.
    for (int64_t n = 1; n <= 2 * nr + 1; ++n)
      for (int64_t m : {1, 7, 17})
        for (int64_t k : {1, 17, 127}) run_gemm_case(kt, next(m, k, n), rng);
    // M sweep: every row tail of MR = 6 or 8.
    for (int64_t m = 1; m <= 17; ++m)
      for (int64_t k : {3, 768})
        for (int64_t n : {int64_t{1}, int64_t{17}, nr + 1, int64_t{127}})
          run_gemm_case(kt, next(m, k, n), rng);
    // Larger odd shapes.
    run_gemm_case(kt, next(17, 768, 1000), rng);
    run_gemm_case(kt, next(3, 127, 1000), rng);
    run_gemm_case(kt, next(33, 17, 1000), rng);
    // Blocked path: several MC row items (with a tail), K blocks with a tail, NC tails.
    run_gemm_case(kt, next(300, 600, 530), rng);
  }
}

TEST_CASE("gemm: cache blocks from the cache sizes; any blocking gives the same bits") {
  using tk::CacheSizes;
  CHECK_THROWS_AS(tk::set_gemm_cache_sizes(CacheSizes{-1, 0, 0}), std::invalid_argument);
  const CacheSizes detected = tk::detected_cache_sizes();
  CHECK(detected.l1d >= 0);
  CHECK(tk::gemm_cache_sizes().l1d == detected.l1d);
  const CacheSizes machines[] = {{32 << 10, 1 << 20, 32 << 20},  // Zen 4
                                 {48 << 10, 1 << 20, 32 << 20},  // Zen 5
                                 {32 << 10, 256 << 10, 0},       // older cores
                                 {0, 0, 0},                      // unknown: 32 KiB / 512 KiB
                                 {4 << 10, 64 << 10, 0}};        // tiny: every clamp
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (const CacheSizes& c : machines) {
      const tk::GemmBlocking b = kt.gemm_blocking(c);
      const int64_t l1 = c.l1d > 0 ? c.l1d : 32 << 10, l2 = c.l2 > 0 ? c.l2 : 512 << 10;
      INFO(isa_str(isa) << " L1d " << c.l1d << " L2 " << c.l2 << ": KC " << b.kc << " MC " << b.mc
                        << " NC " << b.nc);
      CHECK(b.nr == kt.gemm_panel_width);
      CHECK(b.kc % 8 == 0);
      CHECK(b.mc % b.mr == 0);
      CHECK(b.nc % b.nr == 0);
      if (c.l1d >= (16 << 10)) {  // the clamps (KC >= 64, one panel, one row block) aside
        CHECK(b.kc * b.mr * 4 <= l1 / 4);
        CHECK(b.kc * b.nc * 4 <= l2 / 4);
        CHECK(b.mc * (b.kc + b.nc) * 4 <= l2 / 4);
      }
    }
    if (isa == Isa::avx512) {  // the worked examples of kernels.h
      const tk::GemmBlocking z4 = kt.gemm_blocking(machines[0]);
      CHECK((z4.kc == 256 && z4.mc == 128 && z4.nc == 256));
      const tk::GemmBlocking z5 = kt.gemm_blocking(machines[1]);
      CHECK((z5.kc == 384 && z5.mc == 120 && z5.nc == 160));
    }
  }
  // The same GEMMs blocked for each machine, on 1 and 2 threads: every result passes the
  // reference and all are bit-identical (the blocking moves work, never the k order of a sum).
  Rng rng;
  const GemmCase shapes[] = {{300, 600, 530, Activation::relu, true, true, false, 3},
                             {130, 1000, 200, Activation::gelu_tanh, true, false, false, 1},
                             {17, 129, 1000, Activation::none, false, true, true, 0}};
  const int threads_before = tk::num_threads();
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (const GemmCase& g : shapes) {
      GemmData d(g, rng);
      tk::PackedWeights pw;
      kt.pack_weights(d.w.data(), g.n, g.k, d.ldw, pw);
      std::vector<float> first;
      for (const CacheSizes& c : machines) {
        for (int threads : {1, 2}) {
          tk::set_gemm_cache_sizes(c);  // {0, 0, 0}: this machine's detected sizes
          tk::set_num_threads(threads);
          d.reset_c();
          kt.gemm(g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
          const ErrStats e = d.check();
          CHECK_MESSAGE(e.ok(), isa_str(isa) << " gemm " << g << " L1d " << c.l1d << ": " << e);
          std::vector<float> got(d.c.data(), d.c.data() + d.c.size());
          if (first.empty()) {
            first = got;
          } else {
            CHECK_MESSAGE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0,
                          isa_str(isa) << " gemm " << g << ": blocked for L1d " << c.l1d << ", L2 "
                                       << c.l2 << " on " << threads << " threads differs");
          }
        }
      }
    }
  }
  tk::set_gemm_cache_sizes(CacheSizes{});
  tk::set_num_threads(threads_before);
  CHECK(tk::gemm_cache_sizes().l2 == detected.l2);
}

TEST_CASE("gemm: every epilogue combination, residual aliasing C") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (Activation act :
         {Activation::none, Activation::relu, Activation::gelu_erf, Activation::gelu_tanh})
      for (int bias = 0; bias < 2; ++bias)
        for (int res = 0; res < 3; ++res) {  // none, separate, aliasing C
          GemmCase g{13, 127, 2 * kt.gemm_panel_width + 5, act, bias == 1, res == 1, res == 2, 3};
          run_gemm_case(kt, g, rng);
        }
  }
}

TEST_CASE("gemm: packing, M = 0, ISA mismatch, free function") {
  Rng rng;
  GemmData d({5, 17, 37, Activation::gelu_tanh, true, true, false, 2}, rng);
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    tk::PackedWeights pw = tk::pack_weights(d.w.data(), 37, 17, d.ldw, isa);
    CHECK(pw.n() == 37);
    CHECK(pw.k() == 17);
    CHECK(pw.isa() == isa);
    CHECK(pw.panel_width() == kt.gemm_panel_width);
    CHECK(!pw.empty());
    CHECK(reinterpret_cast<uintptr_t>(pw.data()) % 64 == 0);
    const int64_t panels = (37 + pw.panel_width() - 1) / pw.panel_width();
    CHECK(pw.bytes() == static_cast<size_t>(panels * pw.panel_width() * 17) * sizeof(float));
    // M = 0 does nothing.
    d.reset_c();
    kt.gemm(0, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
    CHECK(touched_padding(d.c, 5, 0, d.ldc) == 0);
    // The free gemm dispatches on the weights' ISA, whatever the active one.
    tk::gemm(5, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
    const ErrStats e = d.check();
    CHECK_MESSAGE(e.ok(), isa_str(isa) << " free gemm: " << e);
    for (Isa other : tk::supported_isas()) {
      if (other == isa) continue;
      CHECK_THROWS_AS(
          tk::kernel_table(other).gemm(5, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue()),
          std::invalid_argument);
    }
  }
  tk::PackedWeights empty;
  CHECK(empty.empty());
  CHECK_THROWS_AS(tk::gemm(1, d.a.data(), d.lda, empty, d.c.data(), d.ldc), std::invalid_argument);
  CHECK_THROWS_AS(tk::pack_weights(d.w.data(), 37, 17, 16, Isa::generic), std::invalid_argument);
}

TEST_CASE("pack_weights_kn equals pack_weights of the transpose; packed_rows gathers W's rows") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    const int64_t nr = kt.gemm_panel_width;
    for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{17}, nr - 1, nr, nr + 1, int64_t{127}})
      for (int64_t k : {1, 3, 17, 127})
        for (int64_t pad : {0, 5}) {
          const int64_t ldw = k + pad;  // W [n, k]
          const int64_t ldt = n + pad;  // Wt [k, n]
          std::vector<float> w(static_cast<size_t>(n * ldw), kNaN);
          std::vector<float> wt(static_cast<size_t>(k * ldt), kNaN);
          for (int64_t j = 0; j < n; ++j)
            for (int64_t kk = 0; kk < k; ++kk) {
              const float v = rng.uniform(-1.0f, 1.0f);
              w[static_cast<size_t>(j * ldw + kk)] = v;
              wt[static_cast<size_t>(kk * ldt + j)] = v;
            }
          const tk::PackedWeights a = tk::pack_weights(w.data(), n, k, ldw, isa);
          const tk::PackedWeights b = tk::pack_weights_kn(wt.data(), k, n, ldt, isa);
          CHECK(b.n() == n);
          CHECK(b.k() == k);
          CHECK(b.isa() == isa);
          CHECK(b.panel_width() == a.panel_width());
          REQUIRE(a.bytes() == b.bytes());
          CHECK_MESSAGE(std::memcmp(a.data(), b.data(), a.bytes()) == 0,
                        isa_str(isa) << " pack_weights_kn n=" << n << " k=" << k << " pad=" << pad);
          // packed_rows: every row, in a scrambled order with repeats, into a padded output.
          std::vector<int64_t> rows;
          for (int64_t j = n - 1; j >= 0; --j) rows.push_back(j);
          rows.push_back(0);
          rows.push_back(n - 1);
          const int64_t ldo = k + 2;
          std::vector<float> out(rows.size() * static_cast<size_t>(ldo), kNaN);
          tk::packed_rows(b, rows.data(), static_cast<int64_t>(rows.size()), out.data(), ldo);
          int64_t wrong = 0, touched = 0;
          for (size_t r = 0; r < rows.size(); ++r) {
            for (int64_t kk = 0; kk < k; ++kk)
              wrong += out[r * ldo + kk] != w[static_cast<size_t>(rows[r] * ldw + kk)];
            for (int64_t kk = k; kk < ldo; ++kk) touched += !std::isnan(out[r * ldo + kk]);
          }
          CHECK_MESSAGE(wrong == 0, isa_str(isa) << " packed_rows n=" << n << " k=" << k);
          CHECK(touched == 0);
        }
    // Bad input.
    std::vector<float> w(12, 1.0f);
    const tk::PackedWeights p = tk::pack_weights(w.data(), 3, 4, 4, isa);
    std::vector<float> out(8);
    const int64_t bad_hi[] = {3};
    const int64_t bad_lo[] = {-1};
    CHECK_THROWS_AS(tk::packed_rows(p, bad_hi, 1, out.data(), 4), std::invalid_argument);
    CHECK_THROWS_AS(tk::packed_rows(p, bad_lo, 1, out.data(), 4), std::invalid_argument);
    const int64_t ok[] = {2};
    CHECK_THROWS_AS(tk::packed_rows(p, ok, 1, out.data(), 3), std::invalid_argument);
    CHECK_THROWS_AS(tk::pack_weights_kn(w.data(), 4, 3, 2, isa), std::invalid_argument);
    CHECK_THROWS_AS(tk::packed_rows(tk::PackedWeights(), ok, 1, out.data(), 4),
                    std::invalid_argument);
  }
}

TEST_CASE("gemm backend: TESSERA_GEMM is honoured; both backends pass the same cases") {
  const char* env = std::getenv("TESSERA_GEMM");
  const tk::GemmBackend initial = tk::gemm_backend();
  if (env != nullptr && std::string(env) == "onednn") {
    CHECK(initial == tk::GemmBackend::onednn);
  } else {
    CHECK(initial == tk::GemmBackend::tessera);
  }
  CHECK(std::string(tk::gemm_backend_name(tk::GemmBackend::onednn)) == "onednn");
  std::vector<tk::GemmBackend> backends = {tk::GemmBackend::tessera};
  if (tk::onednn_available()) {
    backends.push_back(tk::GemmBackend::onednn);
  } else {
    CHECK_THROWS_AS(tk::set_gemm_backend(tk::GemmBackend::onednn), std::runtime_error);
  }
  Rng rng;
  for (tk::GemmBackend be : backends) {
    tk::set_gemm_backend(be);
    CHECK(tk::gemm_backend() == be);
    for (Isa isa : tk::supported_isas()) {
      const tk::KernelTable& kt = tk::kernel_table(isa);
      // Every epilogue (residual separate and aliasing C), few-row and blocked shapes; the same
      // weights used twice (oneDNN's reordered copy is cached in them).
      for (int64_t m : {1, 5, 40})
        for (int variant = 0; variant < 8; ++variant) {
          GemmCase g{m, 130, 70};
          g.act = static_cast<Activation>(variant % 4);
          g.bias = variant % 2 == 1;
          g.residual = variant >= 4;
          g.alias = variant >= 6;
          g.pad = variant % 3;
          run_gemm_case(kt, g, rng);
        }
    }
  }
  tk::set_gemm_backend(initial);
}

// =============================================================================================
// Attention
// =============================================================================================
TEST_CASE("attention: masks, layouts, head_dim {1,3,8,17,64,65}, S {1,3,17,127,129}, key tiles") {
  for (Isa isa : tk::supported_isas()) {
    Rng rng;
    for (const AttnCase& c : attention_cases()) run_attention_case(tk::kernel_table(isa), c, rng);
  }
}

// =============================================================================================
// Thread-count independence
// =============================================================================================
TEST_CASE("threads: gemm and attention are bit-identical for 1, 2 and 3 threads") {
  const int before = tk::num_threads();
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    const GemmCase shapes[] = {{1, 768, 768, Activation::gelu_erf, true},
                               {37, 127, 1000, Activation::none, true, true},
                               {130, 256, 200, Activation::gelu_tanh, false, true, true, 1},
                               {300, 600, 530, Activation::relu, true, true, false, 3}};
    for (const GemmCase& g : shapes) {
      GemmData d(g, rng);
      tk::PackedWeights pw;
      kt.pack_weights(d.w.data(), g.n, g.k, d.ldw, pw);
      std::vector<float> first;
      for (int threads : {1, 2, 3}) {
        tk::set_num_threads(threads);
        d.reset_c();
        tk::gemm(g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
        std::vector<float> got(d.c.data(), d.c.data() + d.c.size());
        if (first.empty()) {
          first = got;
        } else {
          CHECK_MESSAGE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0,
                        isa_str(isa) << " gemm " << g << ": differs at " << threads << " threads");
        }
      }
    }
    AttnCase ac{.batch = 2,
                .heads = 3,
                .q_len = 70,
                .kv_len = 70,
                .head_dim = 17,
                .causal = true,
                .key_padding = true,
                .mask_add = MaskKind::per_head};
    AttnData d(ac, rng);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      tk::set_num_threads(threads);
      kt.attention(d.args);
      std::vector<float> got(d.out.data(), d.out.data() + d.out.size());
      if (first.empty()) {
        first = got;
      } else {
        CHECK_MESSAGE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0,
                      isa_str(isa) << " attention differs at " << threads << " threads");
      }
    }
  }
  tk::set_num_threads(before);
}

TEST_CASE("threads: parallel_for runs every index once, nested calls serially, callers at once") {
  const int before = tk::num_threads();
  for (int threads : {1, 2, 3, 5}) {
    tk::set_num_threads(threads);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{17}, int64_t{127}, int64_t{1000}})
      for (int64_t grain : {int64_t{1}, int64_t{3}, int64_t{64}}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n) + 2);
        const bool parallel = threads > 1 && n > grain;
        tk::detail::parallel_for(1, n + 1, grain, [&](int64_t lo, int64_t hi) {
          CHECK(lo < hi);
          CHECK(hi - lo <= std::max<int64_t>(grain, n));
          for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)]++;
          // A loop nested in a parallel one runs on this thread, in one call.
          std::atomic<int64_t> inner{0};
          tk::detail::parallel_for(0, 100, 1, [&](int64_t a, int64_t b) {
            if (parallel) CHECK((a == 0 && b == 100));
            inner += b - a;
          });
          CHECK(inner == 100);
        });
        int wrong = 0;
        for (int64_t i = 0; i < n + 2; ++i)
          wrong += hits[static_cast<size_t>(i)] != (i >= 1 && i <= n);
        CHECK_MESSAGE(wrong == 0, "threads " << threads << " n " << n << " grain " << grain);
      }
  }
  // Two application threads running kernels at once (the pool serves one job, the other runs on
  // its own thread): each result bit-identical to the same call alone.
  tk::set_num_threads(2);
  Rng rng;
  const GemmCase g{300, 600, 530, Activation::relu, true, true, false, 3};
  GemmData d0(g, rng), d1(g, rng);
  const tk::PackedWeights pw0 = tk::pack_weights(d0.w.data(), g.n, g.k, d0.ldw);
  const tk::PackedWeights pw1 = tk::pack_weights(d1.w.data(), g.n, g.k, d1.ldw);
  d0.reset_c();
  d1.reset_c();
  tk::gemm(g.m, d0.a.data(), d0.lda, pw0, d0.c.data(), d0.ldc, d0.epilogue());
  tk::gemm(g.m, d1.a.data(), d1.lda, pw1, d1.c.data(), d1.ldc, d1.epilogue());
  const std::vector<float> want0(d0.c.data(), d0.c.data() + d0.c.size());
  const std::vector<float> want1(d1.c.data(), d1.c.data() + d1.c.size());
  for (int round = 0; round < 20; ++round) {
    d0.reset_c();
    d1.reset_c();
    std::thread other(
        [&] { tk::gemm(g.m, d1.a.data(), d1.lda, pw1, d1.c.data(), d1.ldc, d1.epilogue()); });
    tk::gemm(g.m, d0.a.data(), d0.lda, pw0, d0.c.data(), d0.ldc, d0.epilogue());
    other.join();
    REQUIRE(std::memcmp(want0.data(), d0.c.data(), want0.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(want1.data(), d1.c.data(), want1.size() * sizeof(float)) == 0);
  }
  tk::set_num_threads(before);
}

// =============================================================================================
// Row kernels
// =============================================================================================
TEST_CASE("threads: after a stalled worker the pool backs off to the caller, then threads return") {
  const char* env = std::getenv("TESSERA_POOL_BACKOFF");
  if (env != nullptr && std::strcmp(env, "0") == 0) return;  // back-off turned off
  const int before = tk::num_threads();
  tk::set_num_threads(2);
  const std::thread::id caller = std::this_thread::get_id();
  auto spin = [](std::chrono::microseconds us) {
    const auto until = std::chrono::steady_clock::now() + us;
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  // Earlier tests may have left the pool backing off: wait out the longest back-off.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  // A job whose chunks take 5 ms when a worker runs them (a worker descheduled while it holds a
  // chunk) and 20 us on the caller: the caller waits far longer than its own chunks took.
  bool stalled = false;
  for (int attempt = 0; attempt < 50 && !stalled; ++attempt) {
    std::atomic<int> by_worker{0};
    tk::detail::parallel_for(0, 32, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller) {
        by_worker++;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      } else {
        spin(std::chrono::microseconds(20));
      }
    });
    stalled = by_worker > 0;
    if (!stalled) std::this_thread::sleep_for(std::chrono::milliseconds(600));
  }
  REQUIRE_MESSAGE(stalled, "no worker ever took a chunk in 50 jobs");
  // Right after: the back-off (10 ms) runs the next job on the caller alone, in one call.
  std::atomic<int> calls{0}, off_caller{0};
  std::vector<int> hits(64, 0);
  tk::detail::parallel_for(0, 64, 1, [&](int64_t lo, int64_t hi) {
    calls++;
    if (std::this_thread::get_id() != caller) off_caller++;
    for (int64_t i = lo; i < hi; ++i) hits[static_cast<size_t>(i)]++;
  });
  CHECK(off_caller == 0);
  CHECK(calls == 1);
  CHECK(std::count(hits.begin(), hits.end(), 1) == 64);
  // After the longest back-off, jobs whose chunks take the same time on any thread use the
  // workers again.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  bool worker_back = false;
  for (int job = 0; job < 400 && !worker_back; ++job) {
    std::atomic<int> by_worker{0};
    tk::detail::parallel_for(0, 16, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller) by_worker++;
      spin(std::chrono::microseconds(50));
    });
    worker_back = by_worker > 0;
  }
  CHECK_MESSAGE(worker_back, "the workers took no chunk in 400 jobs after the back-off");
  tk::set_num_threads(before);
}

TEST_CASE("softmax_rows: every n to 65, strides, in place, -inf rows") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    for (int64_t n = 1; n <= 65; ++n) {
      for (int64_t rows : {0, 1, 3}) {
        const int64_t ld = n + (n % 3);
        Buf x(static_cast<size_t>(std::max<int64_t>(rows, 1) * ld));
        Buf y(x.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) x[r * ld + j] = rng.uniform(-30.0f, 30.0f);
        if (rows == 3) {
          for (int64_t j = 0; j < n; ++j) x[1 * ld + j] = -kInf;  // all -inf: zeros
          x[2 * ld + n / 2] = -kInf;                              // one -inf: weight 0
        }
        kt.softmax_rows(rows, n, x.data(), ld, y.data(), ld);
        ErrStats e = check_softmax(x, y, rows, n, ld, ld);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax n=" << n << " rows=" << rows << ": " << e);
        CHECK(touched_padding(y, std::max<int64_t>(rows, 1), rows ? n : 0, ld) == 0);
        // In place.
        Buf z(x.size());
        for (size_t i = 0; i < x.size(); ++i) z[i] = x[i];
        kt.softmax_rows(rows, n, z.data(), ld, z.data(), ld);
        e = check_softmax(x, z, rows, n, ld, ld);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax in place n=" << n << ": " << e);
      }
    }
  }
}

TEST_CASE("softmax_rows: exp accuracy over [-20, 20] and extremes") {
  // Max error found (AMD Zen 4, the kernels' exp; printed by this test): relative error of the
  // probabilities 2.06e-6 = 17 eps (avx512, avx2), 17 eps (generic) on the two dense 4001-wide
  // rows, well inside the derived bound (4n + 8 + 2|x - m|) eps; exp alone is within 1 eps of
  // std::exp (TEST_CASE "vector_math"), with correct denormals down to exp(-103.3).
  Rng rng;
  const int64_t n = 4001;
  Buf x(static_cast<size_t>(3 * n));
  for (int64_t j = 0; j < n; ++j) x[j] = -20.0f + 40.0f * static_cast<float>(j) / (n - 1);
  // Row 1: pairs compared against the max only: exponent differences up to 87.
  for (int64_t j = 0; j < n; ++j) x[n + j] = -87.0f * static_cast<float>(j) / (n - 1);
  const float extremes[] = {88.0f, -88.0f, 1e4f, -1e4f, 0.0f, -kInf, 87.5f, -103.0f};
  for (int64_t j = 0; j < n; ++j) x[2 * n + j] = extremes[j % 8];
  for (Isa isa : tk::supported_isas()) {
    Buf y(x.size());
    tk::kernel_table(isa).softmax_rows(3, n, x.data(), n, y.data(), n);
    const ErrStats e = check_softmax(x, y, 3, n, n, n);
    CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax wide range: " << e);
    double max_rel = 0.0;  // relative error where the result is a normal float
    for (int64_t r = 0; r < 2; ++r) {
      double m = -1e300, sum = 0.0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(x[r * n + j]));
      for (int64_t j = 0; j < n; ++j) sum += std::exp(x[r * n + j] - m);
      for (int64_t j = 0; j < n; ++j) {
        const double want = std::exp(x[r * n + j] - m) / sum;
        if (want > 1e-30) max_rel = std::max(max_rel, std::fabs(y[r * n + j] - want) / want);
      }
    }
    MESSAGE(isa_str(isa) << " softmax: max relative error " << max_rel << " (" << max_rel / kEps
                         << " eps)");
  }
}

TEST_CASE("softmax_rows: two-entry rows [0, x] probe the softmax exp over x in [-110, 0]") {
  // y1 = e / (1 + e), e = exp(x), m = 0 so x - m is exact: the float result has the kernel's
  // exp error (exp_nonpos: measured <= 1 eps) plus three roundings (1 + e, 1 / sum, e * inv).
  // Bound: 8 eps relative, plus FLT_MIN absolute (results below FLT_MIN may be flushed);
  // exp(-inf) must give exactly 0 and y0 = 1 / (1 + e) within 3 eps. Measured (Zen 4): 1.45 eps
  // (avx512, avx2), 1.58 eps (generic) where y1 is a normal float.
  const int64_t rows = 110001;
  Buf x(static_cast<size_t>(2 * rows));
  for (int64_t r = 0; r < rows; ++r) {
    x[2 * r] = 0.0f;
    x[2 * r + 1] = r + 1 == rows ? -kInf : -110.0f * static_cast<float>(r) / (rows - 2);
  }
  for (Isa isa : tk::supported_isas()) {
    Buf y(x.size());
    tk::kernel_table(isa).softmax_rows(rows, 2, x.data(), 2, y.data(), 2);
    ErrStats e;
    double worst = 0.0, worst_x = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      const double xv = x[2 * r + 1];
      const double ev = std::exp(xv);
      const double want1 = ev / (1.0 + ev), want0 = 1.0 / (1.0 + ev);
      e.add(2 * r, y[2 * r], want0, 3.0 * kEps * want0);
      e.add(2 * r + 1, y[2 * r + 1], want1, 8.0 * kEps * want1 + FLT_MIN);
      if (want1 >= FLT_MIN) {
        const double rel = std::fabs(y[2 * r + 1] - want1) / want1;
        if (rel > worst) worst = rel, worst_x = xv;
      }
    }
    CHECK(y[2 * (rows - 1) + 1] == 0.0f);  // exp(-inf) = 0 exactly
    CHECK_MESSAGE(e.ok(), isa_str(isa) << " softmax [0, x]: " << e);
    MESSAGE(isa_str(isa) << " softmax [0, x]: max relative error " << worst / kEps
                         << " eps at x = " << worst_x);
  }
}

TEST_CASE("add_layernorm_rows: every n to 65 and 768/3072, residual, gamma/beta, aliasing") {
  Rng rng;
  // |err| of y_j, from the float computation of s = x + r, mean (lane-wise Welford: about
  // n/4 + 4 roundings of max|s|), s - mean, rstd (Welford M2 + sqrt + division):
  //   e_c = eps (|s_j| + |s_j - mean|) + (n/4 + 4) eps max|s|      (centered value)
  //   e_r = (n + 8) eps + 2 e_c,max / sigma                         (relative, rstd)
  //   tol = |g| rstd e_c + |g (s_j - mean) rstd| e_r + 2 eps |y_j|
  auto check = [](const std::vector<double>& s_row, const float* g, const float* b, float eps,
                  const float* y, int64_t n, ErrStats& e, int64_t base) {
    double mean = 0.0, var = 0.0, smax = 0.0;
    for (double s : s_row) mean += s, smax = std::max(smax, std::fabs(s));
    mean /= static_cast<double>(n);
    for (double s : s_row) var += (s - mean) * (s - mean);
    var /= static_cast<double>(n);
    const double sigma = std::sqrt(var + eps);
    const double rstd = 1.0 / sigma;
    double ec_max = 0.0;
    for (double s : s_row) {
      ec_max = std::max(
          ec_max, kEps * (std::fabs(s) + std::fabs(s - mean)) + (n / 4.0 + 4.0) * kEps * smax);
    }
    const double er = (n + 8.0) * kEps + 2.0 * ec_max / sigma;
    for (int64_t j = 0; j < n; ++j) {
      const double s = s_row[static_cast<size_t>(j)];
      const double gj = g ? g[j] : 1.0;
      const double want = (s - mean) * rstd * gj + (b ? b[j] : 0.0);
      const double ec = kEps * (std::fabs(s) + std::fabs(s - mean)) + (n / 4.0 + 4.0) * kEps * smax;
      const double tol = std::fabs(gj) * rstd * ec + std::fabs(gj * (s - mean) * rstd) * er +
                         2.0 * kEps * std::fabs(want) + 1e-30;
      e.add(base + j, y[j], want, tol);
    }
  };
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 65; ++n) sizes.push_back(n);
  sizes.push_back(768);
  sizes.push_back(3072);
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    int variant = 0;
    for (int64_t n : sizes) {
      for (int mode = 0; mode < 6; ++mode) {
        // mode 0: plain (no residual, no gamma/beta)   1: residual + gamma/beta + sum_out
        //      2: y == x            3: y == residual    4: sum_out == x   5: sum_out == residual
        const int v = variant++;
        const int64_t rows = 1 + v % 3;
        const int64_t ld = n + (v % 4);
        const float offset = (v % 5 == 0) ? 100.0f : 0.0f;  // mean >> sigma rows
        const float eps = 1e-5f;
        Buf x(static_cast<size_t>(rows * ld)), res(x.size()), y(x.size()), sum(x.size());
        Buf gamma(static_cast<size_t>(n)), beta(static_cast<size_t>(n));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            x[r * ld + j] = offset + rng.uniform(-1.0f, 1.0f);
            res[r * ld + j] = rng.uniform(-1.0f, 1.0f);
          }
        rng.fill(gamma, 0.5f, 1.5f);
        rng.fill(beta, -0.5f, 0.5f);
        const bool use_res = mode != 0;
        const bool affine = mode != 0;
        const bool want_sum = mode == 1 || mode == 4 || mode == 5;
        // Expected s, from the inputs before the call.
        std::vector<std::vector<double>> s_rows(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            // s is one float add, as in the kernel.
            const float s = use_res ? x[r * ld + j] + res[r * ld + j] : x[r * ld + j];
            s_rows[static_cast<size_t>(r)].push_back(s);
          }
        float* yp = mode == 2 ? x.data() : (mode == 3 ? res.data() : y.data());
        float* sp =
            !want_sum ? nullptr : (mode == 4 ? x.data() : (mode == 5 ? res.data() : sum.data()));
        kt.add_layernorm_rows(rows, n, x.data(), ld, use_res ? res.data() : nullptr, ld,
                              affine ? gamma.data() : nullptr, affine ? beta.data() : nullptr, eps,
                              yp, ld, sp, ld);
        ErrStats e;
        for (int64_t r = 0; r < rows; ++r)
          check(s_rows[static_cast<size_t>(r)], affine ? gamma.data() : nullptr,
                affine ? beta.data() : nullptr, eps, yp + r * ld, n, e, r * ld);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " layernorm n=" << n << " mode=" << mode
                                           << " rows=" << rows << ": " << e);
        if (sp != nullptr) {
          ErrStats es;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < n; ++j)
              es.add(r * ld + j, sp[r * ld + j],
                     s_rows[static_cast<size_t>(r)][static_cast<size_t>(j)], 0.0);
          CHECK_MESSAGE(es.ok(), isa_str(isa) << " layernorm sum_out n=" << n << " mode=" << mode
                                              << ": " << es);
        }
        if (mode == 0 || mode == 1) CHECK(touched_padding(y, rows, n, ld) == 0);
        if (mode == 1) CHECK(touched_padding(sum, rows, n, ld) == 0);
      }
    }
  }
}

TEST_CASE("activation and add: every n to 65 and 1000, in place") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    std::vector<int64_t> sizes;
    for (int64_t n = 0; n <= 65; ++n) sizes.push_back(n);
    sizes.push_back(1000);
    sizes.push_back(40000);  // several parallel chunks
    for (int64_t n : sizes) {
      Buf x(static_cast<size_t>(n)), y(static_cast<size_t>(n)), b(static_cast<size_t>(n));
      rng.fill(x, -6.0f, 6.0f);
      rng.fill(b, -6.0f, 6.0f);
      for (Activation act :
           {Activation::none, Activation::relu, Activation::gelu_erf, Activation::gelu_tanh}) {
        for (int in_place = 0; in_place < 2; ++in_place) {
          Buf out(static_cast<size_t>(n));
          if (in_place)
            for (int64_t i = 0; i < n; ++i) out[i] = x[i];
          kt.activation(n, in_place ? out.data() : x.data(), out.data(), act);
          ErrStats e;
          for (int64_t i = 0; i < n; ++i) {
            const double want = ref_act(act, x[i]);
            e.add(i, out[i], want, act_rel_tol(act, x[i]) * kEps * std::fabs(want) + kDenormSlack);
          }
          CHECK_MESSAGE(e.ok(), isa_str(isa) << " activation " << act_name(act) << " n=" << n
                                             << " in_place=" << in_place << ": " << e);
          CHECK(out.guard_intact());
        }
      }
      // add: one float rounding of an exact sum: must equal float(x) + float(b) exactly.
      for (int mode = 0; mode < 3; ++mode) {  // separate, y == a, y == b
        Buf out(static_cast<size_t>(n));
        const float* a = x.data();
        const float* bb = b.data();
        if (mode == 1) {
          for (int64_t i = 0; i < n; ++i) out[i] = x[i];
          a = out.data();
        } else if (mode == 2) {
          for (int64_t i = 0; i < n; ++i) out[i] = b[i];
          bb = out.data();
        }
        kt.add(n, a, bb, out.data());
        ErrStats e;
        for (int64_t i = 0; i < n; ++i) e.add(i, out[i], x[i] + b[i], 0.0);
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " add n=" << n << " mode=" << mode << ": " << e);
        CHECK(out.guard_intact());
      }
    }
  }
}

TEST_CASE("activation accuracy over [-20, 20] and extremes vs std::") {
  // Max errors found (AMD Zen 4, the kernels' own exp/erfc; printed by this test), as relative
  // errors in units of eps = 2^-23 against double std::erfc / std::exp, where |result| > 16
  // FLT_MIN:
  //   gelu_erf:  96 eps (avx512, avx2), 125 eps (generic) at x ~ -12.9, erfc's far tail
  //              (result ~1e-37; the conditioning alone is x^2/2 = 83 eps); 15 eps for x >= -5
  //   gelu_tanh: 105 eps at x ~ -9.8 (result ~1e-30; the exponent 2u is ~ -70 and its rounding
  //              is amplified |2u| times); 15-17 eps for x >= -5
  //   relu: exact. Extremes (+-88, +-1e4, +-FLT_MAX, +-1e-30, +-0, +-FLT_MIN) pass the same
  //   bound (tiny results within the 16 FLT_MIN slack).
  const int64_t dense = 400001;
  std::vector<float> xs;
  for (int64_t i = 0; i < dense; ++i)
    xs.push_back(-20.0f + 40.0f * static_cast<float>(i) / (dense - 1));
  for (float e : {88.0f, -88.0f, 1e4f, -1e4f, FLT_MAX, -FLT_MAX, 1e-30f, -1e-30f, 0.0f, -0.0f,
                  FLT_MIN, -FLT_MIN}) {
    xs.push_back(e);
  }
  // The reference's logistic form of gelu_tanh equals the tanh form (checks the identity used
  // by ref_act). The tanh form's own error is ~eps_double |x| / 2 absolute (1 + tanh cancels).
  for (double x = -5.0; x <= 20.0; x += 0.01) {
    const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
    const double tanh_form = 0.5 * x * (1.0 + std::tanh(u));
    const double logistic_form = ref_act(Activation::gelu_tanh, x);
    REQUIRE(std::fabs(tanh_form - logistic_form) <=
            1e-15 * std::fabs(x) + 1e-14 * std::fabs(logistic_form));
  }
  Buf x(xs.size()), y(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) x[i] = xs[i];
  for (Isa isa : tk::supported_isas()) {
    for (Activation act : {Activation::relu, Activation::gelu_erf, Activation::gelu_tanh}) {
      tk::kernel_table(isa).activation(static_cast<int64_t>(xs.size()), x.data(), y.data(), act);
      ErrStats e;
      double max_rel = 0.0, worst_x = 0.0;  // over every x with a normal result
      double max_rel_core = 0.0;            // over x >= -5 (|result| >= ~1e-6)
      for (size_t i = 0; i < xs.size(); ++i) {
        const double want = ref_act(act, xs[i]);
        e.add(static_cast<int64_t>(i), y[i], want,
              act_rel_tol(act, xs[i]) * kEps * std::fabs(want) + kDenormSlack);
        if (std::fabs(want) > kDenormSlack && std::isfinite(want)) {
          const double rel = std::fabs(y[i] - want) / std::fabs(want);
          if (rel > max_rel) max_rel = rel, worst_x = xs[i];
          if (xs[i] >= -5.0f) max_rel_core = std::max(max_rel_core, rel);
        }
      }
      CHECK_MESSAGE(e.ok(), isa_str(isa) << " " << act_name(act) << " wide range: " << e);
      MESSAGE(isa_str(isa) << " " << act_name(act) << ": max relative error " << max_rel / kEps
                           << " eps at x = " << worst_x << "; " << max_rel_core / kEps
                           << " eps for x >= -5");
    }
  }
}

TEST_CASE("vector_math: exp, erf, erfc, tanh vs std:: over the whole float range") {
  // Inputs: every 4099th float bit pattern (~1M values spread over every binade, both signs),
  // a dense linear sweep of each function's interesting range, and the specials.
  std::vector<float> xs;
  for (uint64_t bits = 0; bits <= 0xffffffffull; bits += 4099) {
    float f;
    const uint32_t b = static_cast<uint32_t>(bits);
    std::memcpy(&f, &b, sizeof f);
    xs.push_back(f);
  }
  for (int64_t i = 0; i <= 400000; ++i)
    xs.push_back(-110.0f + 200.0f * static_cast<float>(i) / 400000);
  for (int64_t i = 0; i <= 200000; ++i)
    xs.push_back(-12.0f + 24.0f * static_cast<float>(i) / 200000);
  for (float e : {0.0f,     -0.0f,     kInf,      -kInf,      FLT_MAX,    -FLT_MAX,   FLT_MIN,
                  -FLT_MIN, 88.72283f, 88.72284f, -87.33654f, -103.2789f, -103.9720f, 0.75f,
                  -0.75f,   0.625f,    -0.625f,   10.0f,      10.1f,      11.0f,      -11.0f}) {
    xs.push_back(e);
  }
  xs.push_back(kNaN);
  xs.push_back(-kNaN);
  struct Fn {
    tk::MathFunction f;
    const char* name;
    double (*ref)(double);
    // Allowed relative error in eps for input x: the bound stated in kernels_body.hpp (with
    // FMA; `no_fma` for the generic SSE2 build, where a*a - hi is not exact in erfc).
    double (*tol)(double x, bool no_fma);
  };
  // Measured (Zen 4, printed below): exp 0.63 eps (0.85 generic), erf 1.43, erfc 2.72 (34 at
  // x = 8.9 on generic: 0.43 x^2; bound 4 + x^2 there), tanh 1.13.
  const Fn fns[] = {
      {tk::MathFunction::exp, "exp", [](double x) { return std::exp(x); },
       [](double, bool) { return 1.0; }},
      {tk::MathFunction::erf, "erf", [](double x) { return std::erf(x); },
       [](double, bool) { return 2.0; }},
      {tk::MathFunction::erfc, "erfc", [](double x) { return std::erfc(x); },
       [](double x, bool no_fma) { return no_fma && x > 0.0 ? 4.0 + x * x : 3.0; }},
      {tk::MathFunction::tanh, "tanh", [](double x) { return std::tanh(x); },
       [](double, bool) { return 1.5; }},
  };
  Buf x(xs.size()), y(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) x[i] = xs[i];
  for (Isa isa : tk::supported_isas()) {
    const bool no_fma = isa == Isa::generic;
    for (const Fn& fn : fns) {
      tk::kernel_table(isa).vector_math(fn.f, static_cast<int64_t>(xs.size()), x.data(), y.data());
      int64_t failures = 0;
      double first_bad = 0.0;             // the first input out of bounds
      double worst = 0.0, worst_x = 0.0;  // relative error in eps where the result is normal
      for (size_t i = 0; i < xs.size(); ++i) {
        const double xi = xs[i];
        const double got = y[i];
        if (std::isnan(xi)) {
          failures += !std::isnan(got);
          continue;
        }
        const double want = fn.ref(xi);
        if (std::isinf(want) || std::fabs(want) > FLT_MAX) {
          failures += !(std::isinf(got) && (got > 0) == (want > 0));
          continue;
        }
        const double err = std::fabs(got - want);
        if (std::fabs(want) >= FLT_MIN) {
          const double rel = err / std::fabs(want) / kEps;
          if (rel > worst) worst = rel, worst_x = xi;
          if (!(rel <= fn.tol(xi, no_fma)) && failures++ == 0) first_bad = xi;
        } else {
          // Denormal or zero result: absolute.
          if (!(err <= FLT_MIN) && failures++ == 0) first_bad = xi;
        }
      }
      const std::string name = fn.name;
      CHECK_MESSAGE(failures == 0, isa_str(isa)
                                       << " " << name << ": " << failures
                                       << " values out of bounds, first at x = " << first_bad
                                       << "; worst " << worst << " eps at x = " << worst_x);
      MESSAGE(isa_str(isa) << " " << name << ": max relative error " << worst
                           << " eps at x = " << worst_x);
    }
    // Exact values the kernels rely on: exp(-inf) = 0 (masked scores), exp(0) = 1, odd symmetry.
    const float special[] = {-kInf, 0.0f, 1.5f, -1.5f};
    float out[4];
    tk::kernel_table(isa).vector_math(tk::MathFunction::exp, 2, special, out);
    CHECK(out[0] == 0.0f);
    CHECK(out[1] == 1.0f);
    for (tk::MathFunction f : {tk::MathFunction::erf, tk::MathFunction::tanh}) {
      tk::kernel_table(isa).vector_math(f, 4, special, out);
      CHECK(out[2] == -out[3]);
    }
  }
}

TEST_CASE("embedding and sinusoidal_positions") {
  Rng rng;
  const int64_t vocab = 11, max_pos = 9;
  for (Isa isa : tk::supported_isas()) {
    const tk::KernelTable& kt = tk::kernel_table(isa);
    std::vector<int64_t> dims;
    for (int64_t d = 1; d <= 65; ++d) dims.push_back(d);
    dims.push_back(1000);
    for (int64_t dim : dims) {
      const int64_t rows = 1 + dim % 4;
      const int64_t ldo = dim + dim % 3;
      Buf table(static_cast<size_t>(vocab * dim)), pos(static_cast<size_t>(max_pos * dim));
      rng.fill(table, -1.0f, 1.0f);
      rng.fill(pos, -1.0f, 1.0f);
      std::vector<int64_t> ids, positions;
      for (int64_t r = 0; r < rows; ++r) {
        ids.push_back(rng.below(vocab));
        positions.push_back(rng.below(max_pos));
      }
      for (int with_pos = 0; with_pos < 2; ++with_pos) {
        Buf out(static_cast<size_t>(rows * ldo));
        const float scale = with_pos ? 27.7128f : 1.0f;
        kt.embedding(rows, ids.data(), table.data(), dim, scale,
                     with_pos ? positions.data() : nullptr, with_pos ? pos.data() : nullptr,
                     out.data(), ldo);
        ErrStats e;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < dim; ++j) {
            const double t =
                static_cast<double>(table[ids[static_cast<size_t>(r)] * dim + j]) * scale;
            const double want =
                t + (with_pos ? pos[positions[static_cast<size_t>(r)] * dim + j] : 0.0);
            e.add(r * ldo + j, out[r * ldo + j], want, kEps * (std::fabs(t) + std::fabs(want)));
          }
        CHECK_MESSAGE(e.ok(), isa_str(isa) << " embedding dim=" << dim << ": " << e);
        CHECK(touched_padding(out, rows, dim, ldo) == 0);
      }
    }
  }
  for (int64_t dim : {1, 2, 7, 64}) {
    const int64_t positions = 1000;
    std::vector<float> pe(static_cast<size_t>(positions * dim));
    tk::sinusoidal_positions(positions, dim, pe.data());
    ErrStats e;
    for (int64_t p = 0; p < positions; ++p)
      for (int64_t j = 0; j < dim; ++j) {
        const double freq = std::exp(-std::log(10000.0) * static_cast<double>(j - j % 2) / dim);
        const double want = j % 2 == 0 ? std::sin(p * freq) : std::cos(p * freq);
        e.add(p * dim + j, pe[static_cast<size_t>(p * dim + j)], want, kEps + 1e-12 * p);
      }
    CHECK_MESSAGE(e.ok(), "sinusoidal_positions dim=" << dim << ": " << e);
  }
}

// =============================================================================================
// The free functions, on the active ISA (ctest also runs this suite with TESSERA_ISA=generic
// and TESSERA_ISA=avx2).
// =============================================================================================
TEST_SUITE("active_isa") {
  TEST_CASE("active_isa honours TESSERA_ISA; free functions match its table bit for bit") {
    const char* env = std::getenv("TESSERA_ISA");
    if (env != nullptr && *env != '\0') {
      bool valid = false;
      try {
        const Isa want = tk::detail::isa_from_string(env);
        valid = true;
        CHECK(tk::active_isa() == want);
      } catch (const std::runtime_error&) {
        CHECK_FALSE(valid);
      }
      if (!valid) {
        // Unknown or unsupported here: active_isa() must refuse, every time.
        CHECK_THROWS_AS(tk::active_isa(), std::runtime_error);
        CHECK_THROWS_AS(tk::active_isa(), std::runtime_error);
        return;
      }
    } else {
      CHECK(tk::active_isa() == tk::supported_isas().front());
    }
    const Isa isa = tk::active_isa();
    MESSAGE("active ISA: " << isa_str(isa));
    const tk::KernelTable& kt = tk::kernel_table(isa);
    Rng rng;

    // gemm through the default pack_weights (active ISA).
    GemmData d({9, 127, 2 * kt.gemm_panel_width + 3, Activation::gelu_erf, true, true, true, 1},
               rng);
    const tk::PackedWeights pw = tk::pack_weights(d.w.data(), d.g.n, d.g.k, d.ldw);
    CHECK(pw.isa() == isa);
    tk::gemm(d.g.m, d.a.data(), d.lda, pw, d.c.data(), d.ldc, d.epilogue());
    const ErrStats e = d.check();
    CHECK_MESSAGE(e.ok(), "free gemm: " << e);

    // Row kernels: the free function and the table give identical bits.
    const int64_t rows = 3, n = 77, ld = 80;
    Buf x(rows * ld), r(rows * ld), y1(rows * ld), y2(rows * ld), s1(rows * ld), s2(rows * ld);
    Buf gamma(n), beta(n);
    rng.fill(x, -3.0f, 3.0f);
    rng.fill(r, -3.0f, 3.0f);
    rng.fill(gamma, 0.5f, 1.5f);
    rng.fill(beta, -1.0f, 1.0f);
    auto same = [](const Buf& p, const Buf& q) {
      return std::memcmp(p.data(), q.data(), p.size() * sizeof(float)) == 0;
    };
    tk::softmax_rows(rows, n, x.data(), ld, y1.data(), ld);
    kt.softmax_rows(rows, n, x.data(), ld, y2.data(), ld);
    CHECK(same(y1, y2));
    CHECK(check_softmax(x, y1, rows, n, ld, ld).ok());
    tk::add_layernorm_rows(rows, n, x.data(), ld, r.data(), ld, gamma.data(), beta.data(), 1e-5f,
                           y1.data(), ld, s1.data(), ld);
    kt.add_layernorm_rows(rows, n, x.data(), ld, r.data(), ld, gamma.data(), beta.data(), 1e-5f,
                          y2.data(), ld, s2.data(), ld);
    CHECK(same(y1, y2));
    CHECK(same(s1, s2));
    tk::activation(rows * ld, x.data(), y1.data(), Activation::gelu_tanh);
    kt.activation(rows * ld, x.data(), y2.data(), Activation::gelu_tanh);
    CHECK(same(y1, y2));
    tk::add(rows * ld, x.data(), r.data(), y1.data());
    kt.add(rows * ld, x.data(), r.data(), y2.data());
    CHECK(same(y1, y2));
    const int64_t ids[] = {2, 0, 1};
    const int64_t pos[] = {0, 1, 2};
    tk::embedding(3, ids, x.data(), n, 2.0f, pos, r.data(), y1.data(), ld);
    kt.embedding(3, ids, x.data(), n, 2.0f, pos, r.data(), y2.data(), ld);
    CHECK(same(y1, y2));

    AttnCase ac{.batch = 1,
                .heads = 2,
                .q_len = 5,
                .kv_len = 70,
                .head_dim = 17,
                .causal = true,
                .offset = 65,
                .key_padding = true};
    AttnData a1(ac, rng);
    tk::attention(a1.args);
    const ErrStats ea = a1.check();
    CHECK_MESSAGE(ea.ok(), "free attention: " << ea);
  }
}
