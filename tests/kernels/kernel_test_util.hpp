// Shared by the kernel tests (tests/kernels/test_*.cpp, one executable test_kernels): buffers
// with NaN poison and guards, the random source, error bookkeeping, the double references of the
// activations and of softmax. The GEMM and attention cases live in gemm_test_util.hpp and
// attention_test_util.hpp.
//
// The tests check every kernel of every ISA this CPU can run (called directly through
// kernel_table(isa)), and the free functions, against plain scalar references that accumulate in
// double. Tolerances are derived from the maths of each kernel (see each reference); every
// failure reports the worst element and the max error.
//
// Inputs are misaligned (offset by one float from a 64-byte boundary), outputs are poisoned with
// NaN first, and the padding around every output is checked to be untouched.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"
#include "kernels/parallel.hpp"

namespace tk = tessera::kernels;

namespace kernel_test {

using tk::Activation;
using tk::Isa;

inline constexpr double kEps = std::numeric_limits<float>::epsilon();  // 2^-23, one ulp at 1.0
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr float kInf = std::numeric_limits<float>::infinity();
// xsimd's float exp/erfc flush results below FLT_MIN to zero (no denormals): absolute slack.
inline constexpr double kDenormSlack = 16.0 * FLT_MIN;

// doctest streams a const char* as a pointer: names go through std::string.
inline std::string isa_str(Isa isa) {
  return tk::isa_name(isa);
}

inline std::string act_name(Activation a) {
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
inline int64_t touched_padding(const Buf& b, int64_t rows, int64_t n, int64_t ld) {
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

inline std::ostream& operator<<(std::ostream& os, const ErrStats& e) {
  return os << e.failures << " of " << e.count << " elements out of tolerance; max err "
            << e.max_err << "; worst (err/tol " << e.worst_ratio << ") at index " << e.worst_index
            << ": got " << e.worst_got << ", want " << e.worst_want << ", tol " << e.worst_tol;
}

// ---------------------------------------------------------------------------------------------
// References (double)
// ---------------------------------------------------------------------------------------------
inline double ref_act(Activation a, double x) {
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
inline double act_rel_tol(Activation a, double x) {
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
inline constexpr double kActLipschitz = 1.2;  // gelu' peaks at 1.129 (x ~ 2.4); relu and none: 1

// ---------------------------------------------------------------------------------------------
// Row-kernel references
// ---------------------------------------------------------------------------------------------
// softmax: y_j = exp(x_j - m) / sum_i exp(x_i - m). Float errors: exp ~2 eps; its argument
// x_j - m is rounded (relative eps), i.e. a relative error eps |x_j - m| in exp; the sum adds
// ~n eps and its terms' argument errors contribute at most max_t t e^-t = 1/e eps each.
//   |err_j| <= eps y_j (4n + 8 + 2 |x_j - m|) + FLT_MIN (flush of exp below FLT_MIN).
inline ErrStats check_softmax(const Buf& x_in, const Buf& y, int64_t rows, int64_t n, int64_t ldx,
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

}  // namespace kernel_test
