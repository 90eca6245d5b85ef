#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
// tessera::ops (include/tessera/ops.hpp) as a program sees it, through libtessera.so: every op on
// odd sizes (1, 3, 17: below, at and past a SIMD width's remainder) against a double-accumulating
// scalar reference, and the errors that name the op and the argument. The kernels themselves are
// tested to the bit in tests/kernels; this checks the layer that lays arguments out for them
// (transposes, padding of unequal head sizes, masks, batches) and its checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <tessera/ops.hpp>
#include <vector>

namespace ops = tessera::ops;

namespace {

constexpr float kEps = std::numeric_limits<float>::epsilon();

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

const float* data(const tessera::TensorView& t) {
  return t.as<float>();
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// max |got - want| over n values, and the largest |want|.
double max_diff(const float* got, const std::vector<double>& want) {
  double d = 0;
  for (size_t i = 0; i < want.size(); ++i) d = std::max(d, std::abs(double(got[i]) - want[i]));
  return d;
}

// Scores softmax(scale q·k) v for one head, in double: q [T, D] (row stride ldq), k [S, D],
// v [S, Dv]; out [T, Dv] (stride ldo).
void ref_attention(int64_t t_len, int64_t s_len, int64_t dk, int64_t dv, const float* q,
                   int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                   double scale, bool causal, double* out, int64_t ldo) {
  std::vector<double> w(s_len);
  for (int64_t t = 0; t < t_len; ++t) {
    double mx = -INFINITY;
    for (int64_t s = 0; s < s_len; ++s) {
      double dot = 0;
      for (int64_t j = 0; j < dk; ++j) dot += double(q[t * ldq + j]) * k[s * ldk + j];
      w[s] = causal && s > t ? -INFINITY : scale * dot;
      mx = std::max(mx, w[s]);
    }
    double sum = 0;
    for (int64_t s = 0; s < s_len; ++s) sum += (w[s] = std::exp(w[s] - mx));
    for (int64_t j = 0; j < dv; ++j) {
      double acc = 0;
      for (int64_t s = 0; s < s_len; ++s) acc += w[s] / sum * v[s * ldv + j];
      out[t * ldo + j] = acc;
    }
  }
}

const int64_t kSizes[] = {1, 3, 17};

}  // namespace

TEST_CASE("ops: isa names the kernels") {
  const std::string isa = ops::isa();
  CHECK((isa == "avx512" || isa == "avx2" || isa == "generic"));
}

TEST_CASE("ops::matmul against a double reference, plain and transposed, with bias") {
  for (int64_t m : kSizes)
    for (int64_t k : kSizes)
      for (int64_t n : kSizes)
        for (bool transpose : {false, true}) {
          CAPTURE(m);
          CAPTURE(k);
          CAPTURE(n);
          CAPTURE(transpose);
          const auto a = random_vector(m * k, 1);  // [M, K]
          const auto b = random_vector(k * n, 2);  // [K, N] or [N, K]
          const auto bias = random_vector(n, 3);   // [N]
          const auto bt = ops::view(
              b.data(), transpose ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n});
          const auto bv = ops::view(bias.data(), {n});
          const auto c = ops::matmul(ops::view(a.data(), {m, k}), bt, transpose, &bv);
          REQUIRE(c.shape == std::vector<int64_t>{m, n});
          std::vector<double> want(m * n);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double acc = bias[j];
              for (int64_t x = 0; x < k; ++x)
                acc += double(a[i * k + x]) * (transpose ? b[j * k + x] : b[x * n + j]);
              want[i * n + j] = acc;
            }
          // |a|, |b|, |bias| <= 1: each term's rounding is bounded by (K + 1) eps.
          CHECK(max_diff(data(c), want) <= (k + 1) * kEps * (k + 1));
        }
}

TEST_CASE("ops::matmul keeps a's leading dimensions; K = 0 gives the bias") {
  const auto a = random_vector(2 * 3 * 5, 4);  // [2, 3, 5]
  const auto b = random_vector(5 * 7, 5);      // [5, 7]
  const auto c = ops::matmul(ops::view(a.data(), {2, 3, 5}), ops::view(b.data(), {5, 7}));
  CHECK(c.shape == std::vector<int64_t>{2, 3, 7});
  const std::vector<float> bias = {1, 2};
  const auto bv = ops::view(bias.data(), {2});
  const auto e = ops::matmul(ops::view(nullptr, {3, 0}), ops::view(nullptr, {0, 2}), false, &bv);
  REQUIRE(e.shape == std::vector<int64_t>{3, 2});
  for (int i = 0; i < 3; ++i) {
    CHECK(data(e)[2 * i] == 1.0f);
    CHECK(data(e)[2 * i + 1] == 2.0f);
  }
}

TEST_CASE("ops::add and ops::sinusoidal_positions") {
  for (int64_t n : kSizes) {
    const auto a = random_vector(n * 3, 6), b = random_vector(n * 3, 7);
    const auto y = ops::add(ops::view(a.data(), {3, n}), ops::view(b.data(), {3, n}));
    for (int64_t i = 0; i < 3 * n; ++i) CHECK(data(y)[i] == a[i] + b[i]);
    const auto pe = ops::sinusoidal_positions(n, n);
    REQUIRE(pe.shape == std::vector<int64_t>{n, n});
    for (int64_t p = 0; p < n; ++p)
      for (int64_t j = 0; j < n; ++j) {
        const double angle = double(p) / std::pow(10000.0, double(j - j % 2) / double(n));
        CHECK(data(pe)[p * n + j] == float(j % 2 ? std::cos(angle) : std::sin(angle)));
      }
  }
}

TEST_CASE("ops::softmax: rows, scale, causal mask") {
  for (int64_t t : kSizes)
    for (int64_t s : kSizes)
      for (bool causal : {false, true}) {
        CAPTURE(t);
        CAPTURE(s);
        CAPTURE(causal);
        const float scale = 0.37f;
        const auto x = random_vector(2 * t * s, 8, -4.0f, 4.0f);  // [2, T, S]
        const auto y = ops::softmax(ops::view(x.data(), {2, t, s}), scale, causal);
        REQUIRE(y.shape == std::vector<int64_t>{2, t, s});
        std::vector<double> want(2 * t * s);
        for (int64_t r = 0; r < 2 * t; ++r) {
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j < s; ++j)
            if (!(causal && j > r % t)) mx = std::max(mx, double(scale * x[r * s + j]));
          for (int64_t j = 0; j < s; ++j)
            sum += want[r * s + j] =
                causal && j > r % t ? 0.0 : std::exp(double(scale * x[r * s + j]) - mx);
          for (int64_t j = 0; j < s; ++j) want[r * s + j] /= sum;
        }
        // exp within 1 eps, the sum over S terms, one division: (S + 4) eps relative.
        CHECK(max_diff(data(y), want) <= (s + 4) * kEps);
      }
}

TEST_CASE("ops::attention against a double reference: heads, batches, Dk != Dv, causal") {
  struct Case {
    int64_t batch, heads, t, s, dk, dv;
  };
  std::vector<Case> cases;
  for (int64_t t : kSizes)
    for (int64_t s : kSizes)
      for (int64_t d : kSizes) {
        cases.push_back({1, 1, t, s, d, d});      // one head, equal sizes (no copy)
        cases.push_back({2, 3, t, s, d, 4});      // heads, batch, Dv larger or smaller
        cases.push_back({1, 2, t, s, 5, d + 1});  // Dk fixed, Dv varies
      }
  for (const Case& c : cases)
    for (bool causal : {false, true}) {
      CAPTURE(c.batch);
      CAPTURE(c.heads);
      CAPTURE(c.t);
      CAPTURE(c.s);
      CAPTURE(c.dk);
      CAPTURE(c.dv);
      CAPTURE(causal);
      const int64_t qw = c.heads * c.dk, vw = c.heads * c.dv;
      const auto q = random_vector(c.batch * c.t * qw, 9);   // [B, T, H·Dk]
      const auto k = random_vector(c.batch * c.s * qw, 10);  // [B, S, H·Dk]
      const auto v = random_vector(c.batch * c.s * vw, 11);  // [B, S, H·Dv]
      ops::AttentionOptions o;
      o.heads = c.heads;
      o.causal = causal;
      const auto out = ops::attention(ops::view(q.data(), {c.batch, c.t, qw}),
                                      ops::view(k.data(), {c.batch, c.s, qw}),
                                      ops::view(v.data(), {c.batch, c.s, vw}), o);
      REQUIRE(out.shape == std::vector<int64_t>{c.batch, c.t, vw});
      std::vector<double> want(c.batch * c.t * vw);
      for (int64_t b = 0; b < c.batch; ++b)
        for (int64_t h = 0; h < c.heads; ++h)
          ref_attention(c.t, c.s, c.dk, c.dv, q.data() + b * c.t * qw + h * c.dk, qw,
                        k.data() + b * c.s * qw + h * c.dk, qw, v.data() + b * c.s * vw + h * c.dv,
                        vw, 1.0 / std::sqrt(double(c.dk)), causal,
                        want.data() + b * c.t * vw + h * c.dv, vw);
      // |q|, |k|, |v| <= 1: a score (scale = 1/sqrt(Dk), Dk terms) is within
      // (Dk + 2) eps sqrt(Dk); an error e in the scores moves the output by at most 2 e (the
      // weights' changes sum to at most 2 e, times |v| <= 1); the softmax and the weighted
      // sum over S keys add (2 S + 8) eps.
      const double score_err = (c.dk + 2) * std::sqrt(double(c.dk)) * kEps;
      CHECK(max_diff(data(out), want) <= 2 * score_err + (2 * c.s + 8) * kEps);
    }
}

TEST_CASE("ops::attention on rank-2 inputs equals the batch of one") {
  const auto q = random_vector(3 * 8, 12), k = random_vector(5 * 8, 13),
             v = random_vector(5 * 6, 14);
  ops::AttentionOptions o;
  o.heads = 2;
  o.scale = 0.25f;
  const auto a = ops::attention(ops::view(q.data(), {3, 8}), ops::view(k.data(), {5, 8}),
                                ops::view(v.data(), {5, 6}), o);
  const auto b = ops::attention(ops::view(q.data(), {1, 3, 8}), ops::view(k.data(), {1, 5, 8}),
                                ops::view(v.data(), {1, 5, 6}), o);
  REQUIRE(a.shape == std::vector<int64_t>{3, 6});
  CHECK(std::equal(data(a), data(a) + 18, data(b)));
}

TEST_CASE("ops::layer_norm: with and without weight, bias, residual") {
  for (int64_t n : kSizes)
    for (bool affine : {false, true})
      for (bool with_residual : {false, true}) {
        CAPTURE(n);
        CAPTURE(affine);
        CAPTURE(with_residual);
        const auto x = random_vector(4 * n, 15, -3.0f, 3.0f);  // [4, N]
        const auto r = random_vector(4 * n, 16);
        const auto w = random_vector(n, 17, 0.5f, 1.5f), b = random_vector(n, 18);
        const auto wv = ops::view(w.data(), {n}), bv = ops::view(b.data(), {n}),
                   rv = ops::view(r.data(), {4, n});
        const float eps = 1e-5f;
        const auto y = ops::layer_norm(ops::view(x.data(), {4, n}), affine ? &wv : nullptr,
                                       affine ? &bv : nullptr, eps, with_residual ? &rv : nullptr);
        std::vector<double> want(4 * n);
        for (int64_t i = 0; i < 4; ++i) {
          std::vector<double> s(n);
          double mean = 0, var = 0;
          for (int64_t j = 0; j < n; ++j)
            mean += s[j] = double(x[i * n + j]) + (with_residual ? r[i * n + j] : 0.0f);
          mean /= double(n);
          for (int64_t j = 0; j < n; ++j) var += (s[j] - mean) * (s[j] - mean);
          var /= double(n);
          for (int64_t j = 0; j < n; ++j)
            want[i * n + j] = (s[j] - mean) / std::sqrt(var + eps) * (affine ? w[j] : 1.0) +
                              (affine ? b[j] : 0.0);
        }
        // Normalized values are at most sqrt(N) in size; mean and variance within N eps.
        CHECK(max_diff(data(y), want) <= 4 * (n + 4) * kEps * std::sqrt(double(n)));
      }
}

TEST_CASE("ops: errors name the op and the argument") {
  const std::vector<float> buf(64, 0.5f);
  const float* p = buf.data();
  std::string e = error_of([&] { ops::matmul(ops::view(p, {2, 3}), ops::view(p, {4, 5})); });
  CHECK(contains(e, "ops::matmul"));
  CHECK(contains(e, "b is [4, 5]"));
  CHECK(contains(e, "K = 3"));
  e = error_of([&] { ops::matmul(ops::view(p, {2, 3}), ops::view(p, {3})); });
  CHECK(contains(e, "b has rank 1 [3]; expected rank 2"));
  const auto bad_bias = ops::view(p, {4});
  e = error_of([&] { ops::matmul(ops::view(p, {2, 3}), ops::view(p, {3, 5}), false, &bad_bias); });
  CHECK(contains(e, "bias is [4]; expected [N] with N = 5"));
  tessera::TensorView ints = ops::view(p, {2, 2});
  ints.dtype = tessera::DType::i32;
  e = error_of([&] { ops::softmax(ints); });
  CHECK(contains(e, "ops::softmax: x must be F32, got I32"));
  e = error_of([&] { ops::softmax(ops::view(p, {4}), 1.0f, true); });
  CHECK(contains(e, "x has rank 1 [4]; expected rank 2 or more"));
  e = error_of([&] { ops::add(ops::view(p, {2, 3}), ops::view(p, {3, 2})); });
  CHECK(contains(e, "ops::add: b is [3, 2]; expected the shape of a, [2, 3]"));
  ops::AttentionOptions heads3;
  heads3.heads = 3;
  e = error_of([&] {
    ops::attention(ops::view(p, {4, 8}), ops::view(p, {4, 8}), ops::view(p, {4, 8}), heads3);
  });
  CHECK(contains(e, "q's last dimension 8 is not heads = 3 times"));
  e = error_of([&] {
    ops::attention(ops::view(p, {4, 8}), ops::view(p, {4, 6}), ops::view(p, {4, 8}));
  });
  CHECK(contains(e, "k is [4, 6]; its last dimension must be q's, 8"));
  e = error_of([&] {
    ops::attention(ops::view(p, {4, 8}), ops::view(p, {4, 8}), ops::view(p, {3, 8}));
  });
  CHECK(contains(e, "v is [3, 8]; expected as many rows as k, S = 4"));
  e = error_of([&] {
    ops::attention(ops::view(p, {1, 4, 8}), ops::view(p, {4, 8}), ops::view(p, {4, 8}));
  });
  CHECK(contains(e, "k is [4, 8]; expected rank 3 like q"));
  e = error_of([&] {
    ops::attention(ops::view(p, {4, 8}), ops::view(nullptr, {0, 8}), ops::view(nullptr, {0, 8}));
  });
  CHECK(contains(e, "no keys"));
  const auto w3 = ops::view(p, {3});
  e = error_of([&] { ops::layer_norm(ops::view(p, {2, 4}), &w3); });
  CHECK(contains(e, "ops::layer_norm: weight is [3]; expected [N] with N = 4"));
  e = error_of([&] { ops::layer_norm(ops::view(p, {2, 4}), nullptr, nullptr, -1.0f); });
  CHECK(contains(e, "eps must be finite and >= 0"));
  e = error_of([&] { ops::sinusoidal_positions(4, 0); });
  CHECK(contains(e, "dim must be >= 1"));
  e = error_of([&] { ops::matmul(ops::view(nullptr, {2, 3}), ops::view(p, {3, 5})); });
  CHECK(contains(e, "a has no data"));
}
