// The bf16 and int8 GEMMs (kernels/lowp_body.hpp, kernels/lowp.cpp) against scalar references
// that round the same way (kernels.h, WeightType): bit for bit, on every ISA and on the
// AVX512-BF16 / AVX512-VNNI variant where the CPU has it, over every row and panel tail, the
// few-row and blocked paths, every epilogue, 1/2/3 threads; packing from f32, bf16 bits and
// quantized int8 gives the same panels; rows read back; the quantizers' rules and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;
using tk::WeightType;

namespace {

using GemmFn = void (*)(int64_t, const float*, int64_t, const tk::PackedWeights&, float*, int64_t,
                        const tk::Epilogue&);

// The kernels to test for one ISA and type: the table's (widening) GEMM, and the dot-product
// variant where this CPU has it.
struct Variant {
  std::string name;
  GemmFn gemm;
};
std::vector<Variant> variants(Isa isa, WeightType type) {
  std::vector<Variant> v{{isa_str(isa), tk::kernel_table(isa).gemm}};
  if (isa == Isa::avx512 && tk::detail::lowp_vnni_available(type))
    v.push_back({"avx512+" + std::string(type == WeightType::bf16 ? "bf16" : "vnni"),
                 &tk::detail::gemm_avx512_vnni});
  return v;
}

// The reference: C[i, j] = epilogue(sum over k of the rounded products), in the kernels' order.
//   bf16: per pair of k (2w, 2w+1): acc = fma(a_odd, w_odd, acc), then fma(a_even, w_even, acc).
//   int8: acc = sum q_a q_w (int32); v = float(acc - z cs_j) * s_a * s_w[j].
std::vector<float> reference(WeightType type, Isa isa, int64_t m, int64_t k, int64_t n,
                             const float* a, int64_t lda, const float* w, const tk::Epilogue& ep) {
  std::vector<float> c(static_cast<size_t>(m * n));
  std::vector<int8_t> q(static_cast<size_t>(n * k));
  std::vector<float> sw(static_cast<size_t>(n));
  if (type == WeightType::int8) tk::quantize_weights_int8(w, n, k, k, false, q.data(), sw.data());
  std::vector<uint8_t> qa(static_cast<size_t>(k));
  for (int64_t i = 0; i < m; ++i) {
    const float* ar = a + i * lda;
    float sa = 0.0f;
    int32_t za = 0;
    if (type == WeightType::int8) tk::quantize_row_u8(ar, k, qa.data(), &sa, &za);
    for (int64_t j = 0; j < n; ++j) {
      float v = 0.0f;
      if (type == WeightType::bf16) {
        auto r = [](float x) { return tk::bf16_to_f32(tk::f32_to_bf16(x)); };
        for (int64_t kk = 0; kk < k; kk += 2) {
          const float ae = r(ar[kk]), we = r(w[j * k + kk]);
          const float ao = kk + 1 < k ? r(ar[kk + 1]) : 0.0f;
          const float wo = kk + 1 < k ? r(w[j * k + kk + 1]) : 0.0f;
          v = std::fma(ao, wo, v);
          v = std::fma(ae, we, v);
        }
      } else {
        int32_t acc = 0, cs = 0;
        for (int64_t kk = 0; kk < k; ++kk) {
          acc += int32_t{qa[static_cast<size_t>(kk)]} * q[static_cast<size_t>(j * k + kk)];
          cs += q[static_cast<size_t>(j * k + kk)];
        }
        v = static_cast<float>(acc - za * cs) * sa * sw[static_cast<size_t>(j)];
      }
      if (ep.bias) v += ep.bias[j];
      tk::kernel_table(isa).activation(1, &v, &v, ep.act);
      if (ep.residual) v += ep.residual[i * ep.ld_residual + j];
      c[static_cast<size_t>(i * n + j)] = v;
    }
  }
  return c;
}

struct LowpCase {
  int64_t m, k, n;
  Activation act = Activation::none;
  bool bias = false, residual = false;
};

// Runs one case on every variant of every ISA; the outputs must equal the reference bit for bit
// and stay inside C's rows. Returns the largest |C - fp32 GEMM| relative to sum |a| |w| (the
// rounding error of the type), for the callers' bounds.
double run_case(WeightType type, const LowpCase& t, Rng& rng) {
  const int64_t lda = t.k + 3, ldc = t.n + 5;
  Buf a(static_cast<size_t>(t.m * lda)), w(static_cast<size_t>(t.n * t.k));
  Buf bias(static_cast<size_t>(t.n)), res(static_cast<size_t>(t.m * t.n));
  rng.fill(a, -2.0f, 2.0f);
  rng.fill(w, -0.5f, 0.5f);
  rng.fill(bias, -1.0f, 1.0f);
  rng.fill(res, -1.0f, 1.0f);
  // Skewed rows: a row with a large outlier and a row of one sign stress the row quantization.
  if (t.m > 2) {
    a[0] = 37.0f;
    for (int64_t kk = 0; kk < t.k; ++kk)
      a[static_cast<size_t>(lda + kk)] = std::fabs(a[static_cast<size_t>(lda + kk)]);
  }
  tk::Epilogue ep;
  ep.act = t.act;
  if (t.bias) ep.bias = bias.data();
  if (t.residual) {
    ep.residual = res.data();
    ep.ld_residual = t.n;
  }
  double worst = 0.0;
  for (Isa isa : tk::supported_isas()) {
    const std::vector<float> ref = reference(type, isa, t.m, t.k, t.n, a.data(), lda, w.data(), ep);
    const tk::PackedWeights pw = tk::pack_weights_as(w.data(), t.n, t.k, t.k, false, type, isa);
    for (const Variant& v : variants(isa, type)) {
      for (int threads : {1, 2, 3}) {
        tk::ScopedThreads scope(threads);
        Buf c(static_cast<size_t>(t.m * ldc));
        v.gemm(t.m, a.data(), lda, pw, c.data(), ldc, ep);
        int64_t mismatches = 0;
        float first_got = 0.0f, first_want = 0.0f;
        for (int64_t i = 0; i < t.m; ++i)
          for (int64_t j = 0; j < t.n; ++j) {
            const float got = c[static_cast<size_t>(i * ldc + j)];
            const float want = ref[static_cast<size_t>(i * t.n + j)];
            if (std::memcmp(&got, &want, 4) != 0 && mismatches++ == 0) {
              first_got = got;
              first_want = want;
            }
          }
        INFO(weight_type_name(type), " ", v.name, " threads ", threads, " m=", t.m, " k=", t.k,
             " n=", t.n, " act=", act_name(t.act), " first got ", first_got, " want ", first_want);
        CHECK(mismatches == 0);
        CHECK(touched_padding(c, t.m, t.n, ldc) == 0);
      }
    }
    // Against the fp32 maths, relative to sum |a||w| (the scale of the rounding error).
    if (!t.bias && !t.residual && t.act == Activation::none) {
      for (int64_t i = 0; i < t.m; ++i)
        for (int64_t j = 0; j < t.n; ++j) {
          double exact = 0.0, mag = 0.0;
          for (int64_t kk = 0; kk < t.k; ++kk) {
            const double p =
                double(a[static_cast<size_t>(i * lda + kk)]) * w[static_cast<size_t>(j * t.k + kk)];
            exact += p;
            mag += std::fabs(p);
          }
          const double err = std::fabs(ref[static_cast<size_t>(i * t.n + j)] - exact);
          if (mag > 0) worst = std::max(worst, err / mag);
        }
    }
  }
  return worst;
}

}  // namespace

TEST_CASE("lowp: bf16 and int8 GEMMs equal their references bit for bit, every tail") {
  Rng rng;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::gelu_erf,
                             Activation::gelu_tanh};
  for (WeightType type : {WeightType::bf16, WeightType::int8}) {
    int variant = 0;
    auto next = [&](int64_t m, int64_t k, int64_t n) {
      LowpCase t{m, k, n};
      const int v = variant++;
      t.act = acts[v % 4];
      t.bias = v % 3 != 0;
      t.residual = v % 5 < 2;
      return t;
    };
    const int64_t nr = tk::kernel_table(tk::supported_isas().back()).gemm_panel_width;  // generic
    // Every K tail of the words (bf16 pairs, int8 quads) and odd sizes.
    for (int64_t k : {1, 2, 3, 4, 5, 7, 17, 127})
      for (int64_t m : {1, 3, 17})
        for (int64_t n : {int64_t{1}, int64_t{3}, nr + 1, int64_t{67}})
          run_case(type, next(m, k, n), rng);
    // Every row tail of MR (6 or 8) on both paths (few rows: M <= 4 MR; blocked above).
    for (int64_t m = 1; m <= 40; ++m) run_case(type, next(m, 33, 40), rng);
    // The blocked path with K blocks and a tail, several row items, panel tails.
    run_case(type, next(300, 1001, 97), rng);
    run_case(type, next(129, 768, 65), rng);
  }
}

TEST_CASE("lowp: rounding error against fp32 within the type's bound") {
  Rng rng;
  // bf16: A and W rounded to 8 bits each: |err| <= ~2 * 2^-9 sum |a w| (+ fp32 sums).
  const double bf16 = run_case(WeightType::bf16, LowpCase{17, 768, 33}, rng);
  CHECK(bf16 < 2.5 * std::ldexp(1.0, -9));
  // int8: each product off by at most half a step of each factor, relative to sum |a w| a few
  // percent (W in [-0.5, 0.5] with max ~0.5 per channel, A in [-2, 2]).
  const double int8 = run_case(WeightType::int8, LowpCase{17, 768, 33}, rng);
  CHECK(int8 < 0.03);
  MESSAGE("max |C - exact| / sum |a w|: bf16 ", bf16, ", int8 ", int8);
}

TEST_CASE("lowp: packing from f32, [k, n], bf16 bits and int8 give the same panels") {
  Rng rng;
  for (Isa isa : tk::supported_isas()) {
    for (int64_t n : {1, 5, 33, 70})
      for (int64_t k : {1, 2, 3, 5, 9, 64}) {
        Buf w(static_cast<size_t>(n * k));
        rng.fill(w, -3.0f, 3.0f);
        std::vector<float> wt(static_cast<size_t>(k * n));  // [k, n]
        for (int64_t j = 0; j < n; ++j)
          for (int64_t kk = 0; kk < k; ++kk)
            wt[static_cast<size_t>(kk * n + j)] = w[static_cast<size_t>(j * k + kk)];
        for (WeightType type : {WeightType::bf16, WeightType::int8}) {
          INFO(isa_str(isa), " ", weight_type_name(type), " n=", n, " k=", k);
          const tk::PackedWeights nk = tk::pack_weights_as(w.data(), n, k, k, false, type, isa);
          const tk::PackedWeights kn = tk::pack_weights_as(wt.data(), n, k, n, true, type, isa);
          REQUIRE(nk.bytes() == kn.bytes());
          CHECK(std::memcmp(nk.data(), kn.data(), nk.bytes()) == 0);
          CHECK(nk.type() == type);
          tk::PackedWeights from;
          if (type == WeightType::bf16) {
            std::vector<uint16_t> bits(static_cast<size_t>(n * k));
            for (size_t i = 0; i < bits.size(); ++i) bits[i] = tk::f32_to_bf16(w[i]);
            from = tk::pack_weights_bf16(bits.data(), n, k, k, false, isa);
          } else {
            std::vector<int8_t> q(static_cast<size_t>(k * n));
            std::vector<float> s(static_cast<size_t>(n));
            tk::quantize_weights_int8(wt.data(), n, k, n, true, q.data(), s.data());
            from = tk::pack_weights_int8(q.data(), s.data(), n, k, n, true, isa);
          }
          REQUIRE(from.bytes() == nk.bytes());
          CHECK(std::memcmp(from.data(), nk.data(), nk.bytes()) == 0);
          // Rows read back: bf16 exactly the rounded weights; int8 within half a step.
          std::vector<int64_t> rows(static_cast<size_t>(n));
          for (int64_t j = 0; j < n; ++j) rows[static_cast<size_t>(j)] = n - 1 - j;
          std::vector<float> back(static_cast<size_t>(n * k));
          tk::packed_rows(nk, rows.data(), n, back.data(), k);
          int64_t bad = 0;
          for (int64_t r = 0; r < n; ++r) {
            const int64_t j = n - 1 - r;
            for (int64_t kk = 0; kk < k; ++kk) {
              const float orig = w[static_cast<size_t>(j * k + kk)];
              const float got = back[static_cast<size_t>(r * k + kk)];
              if (type == WeightType::bf16) {
                bad += got != tk::bf16_to_f32(tk::f32_to_bf16(orig));
              } else {
                bad += std::fabs(got - orig) > 0.5f * nk.scales()[j] * 1.0001f;
              }
            }
          }
          CHECK(bad == 0);
        }
      }
  }
}

TEST_CASE("lowp: the quantizers' rules") {
  // bf16: nearest even, NaN stays NaN, infinities stay, overflow rounds to infinity.
  CHECK(tk::f32_to_bf16(1.0f) == 0x3f80);
  CHECK(tk::f32_to_bf16(std::ldexp(1.0f, 0) + std::ldexp(1.0f, -8)) == 0x3f80);      // tie: even
  CHECK(tk::f32_to_bf16(std::ldexp(1.0f, 0) + 3 * std::ldexp(1.0f, -8)) == 0x3f82);  // tie: even
  CHECK(tk::f32_to_bf16(-kInf) == 0xff80);
  CHECK(std::isnan(tk::bf16_to_f32(tk::f32_to_bf16(kNaN))));
  CHECK(std::isinf(tk::bf16_to_f32(tk::f32_to_bf16(3.4e38f))));
  // int8 weights: max |w| of a channel maps to 127; an all-zero channel has scale 1.
  const float w[2][4] = {{0.5f, -0.25f, 0.0f, 0.125f}, {0.0f, 0.0f, 0.0f, 0.0f}};
  int8_t q[8];
  float s[2];
  tk::quantize_weights_int8(&w[0][0], 2, 4, 4, false, q, s);
  CHECK(s[0] == 0.5f / 127.0f);
  CHECK(s[1] == 1.0f);
  CHECK(q[0] == 127);
  CHECK(q[1] == -64);  // -63.5 -> even
  CHECK(q[3] == 32);   // 31.75
  CHECK(q[4] == 0);
  const float bad[2] = {1.0f, kNaN};
  CHECK_THROWS_WITH_AS(tk::quantize_weights_int8(bad, 1, 2, 2, false, q, s),
                       doctest::Contains("output 0, input 1 is not finite"), std::invalid_argument);
  // Scales of a quantized checkpoint: finite and > 0.
  const int8_t qq[2] = {1, 2};
  for (float scale : {0.0f, -1.0f, kNaN, kInf}) {
    CHECK_THROWS_WITH_AS(tk::pack_weights_int8(qq, &scale, 1, 2, 2, false, tk::active_isa()),
                         doctest::Contains("the scale of output 0"), std::invalid_argument);
  }
  // A row: DynamicQuantizeLinear's rule (zero point from min(0, x), 255 steps).
  const float x[4] = {-1.0f, 0.0f, 0.5f, 3.0f};
  uint8_t qa[4];
  float sa;
  int32_t za;
  tk::quantize_row_u8(x, 4, qa, &sa, &za);
  CHECK(sa == 4.0f / 255.0f);
  CHECK(za == 64);  // round(63.75)
  CHECK(qa[0] == 0);
  CHECK(qa[1] == 64);
  CHECK(qa[3] == 255);
  const float positive[2] = {2.0f, 4.0f};
  tk::quantize_row_u8(positive, 2, qa, &sa, &za);
  CHECK(za == 0);
  CHECK(qa[1] == 255);
}
