// The steps of self-attention on tessera::ops (include/tessera/ops.hpp), in C++: the same six
// steps as examples/attention_steps.py (docs/attention-chapter.md), on embeddings drawn from a
// fixed seed instead of PyTorch's. Each step prints an excerpt; where two routes compute the same
// thing (the explicit lines and the fused attention kernel), it prints their largest difference
// and fails (exit 1) above 1e-5.
//
//   build-examples/attention_steps_cpp
#include <cmath>
#include <cstdio>
#include <random>
#include <tessera/ops.hpp>
#include <vector>

namespace ops = tessera::ops;
using tessera::TensorView;

namespace {

constexpr int64_t kWords = 8, kDim = 16, kDk = 24, kDv = 28, kHeads = 4;

std::vector<float> random_vector(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

void print_row(const char* label, const TensorView& t, int64_t row) {
  const int64_t n = t.shape.back();
  std::printf("  %s[%lld] =", label, static_cast<long long>(row));
  for (int64_t j = 0; j < n && j < 8; ++j) std::printf(" %8.4f", t.as<float>()[row * n + j]);
  std::printf(n > 8 ? " ...\n" : "\n");
}

bool same(const char* what, const TensorView& a, const TensorView& b) {
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    d = std::fmax(d, std::fabs(double(a.as<float>()[i]) - double(b.as<float>()[i])));
  std::printf("  %-44s max difference %.3e\n", what, d);
  return a.shape == b.shape && d <= 1e-5;
}

}  // namespace

int main() {
  try {
    std::mt19937 rng(123);
    const std::vector<float> x = random_vector(kWords * kDim, rng, -1.0f, 1.0f);  // [8, 16]
    const TensorView X = ops::view(x.data(), {kWords, kDim});
    std::printf("kernels: %s; X [%lld, %lld]\n", ops::isa().c_str(), static_cast<long long>(kWords),
                static_cast<long long>(kDim));
    bool ok = true;

    std::printf("step 1: omega = X X^T, alpha = softmax(omega), z = alpha X\n");
    const TensorView omega1 = ops::matmul(X, X, true);  // [8, 8]
    const TensorView alpha1 = ops::softmax(omega1);     // [8, 8]
    const TensorView z1 = ops::matmul(alpha1, X);       // [8, 16]
    print_row("alpha", alpha1, 1);
    ops::AttentionOptions unscaled;
    unscaled.scale = 1.0f;
    ok &= same("z vs fused attention(X, X, X, scale=1)", z1, ops::attention(X, X, X, unscaled));

    std::printf("step 2: scaled dot-product attention, d_k = 24, d_v = 28\n");
    const std::vector<float> wq = random_vector(kDim * kDk, rng, 0.0f, 1.0f);  // [16, 24]
    const std::vector<float> wk = random_vector(kDim * kDk, rng, 0.0f, 1.0f);  // [16, 24]
    const std::vector<float> wv = random_vector(kDim * kDv, rng, 0.0f, 1.0f);  // [16, 28]
    const TensorView q = ops::matmul(X, ops::view(wq.data(), {kDim, kDk}));    // [8, 24]
    const TensorView k = ops::matmul(X, ops::view(wk.data(), {kDim, kDk}));    // [8, 24]
    const TensorView v = ops::matmul(X, ops::view(wv.data(), {kDim, kDv}));    // [8, 28]
    const TensorView omega2 = ops::matmul(q, k, true);                         // [8, 8]
    const float scale = 1.0f / std::sqrt(float(kDk));
    const TensorView z2 = ops::matmul(ops::softmax(omega2, scale), v);  // [8, 28]
    print_row("z", z2, 1);
    ok &= same("z vs fused attention(q, k, v)", z2, ops::attention(q, k, v));

    std::printf("step 3: multi-head attention, 4 heads\n");
    const std::vector<float> w_in = random_vector(3 * kDim * kDim, rng, -0.4f, 0.4f);  // [48, 16]
    const std::vector<float> w_out = random_vector(kDim * kDim, rng, -0.4f, 0.4f);     // [16, 16]
    const TensorView qkv = ops::matmul(X, ops::view(w_in.data(), {3 * kDim, kDim}), true);
    std::vector<float> parts[3];  // q, k, v [8, 16], cut out of qkv [8, 48]
    for (int p = 0; p < 3; ++p)
      for (int64_t t = 0; t < kWords; ++t)
        for (int64_t j = 0; j < kDim; ++j)
          parts[p].push_back(qkv.as<float>()[t * 3 * kDim + p * kDim + j]);
    ops::AttentionOptions heads;
    heads.heads = kHeads;
    const TensorView mh = ops::attention(ops::view(parts[0].data(), {kWords, kDim}),
                                         ops::view(parts[1].data(), {kWords, kDim}),
                                         ops::view(parts[2].data(), {kWords, kDim}), heads);
    const TensorView z3 = ops::matmul(mh, ops::view(w_out.data(), {kDim, kDim}), true);
    print_row("z", z3, 1);

    std::printf("step 4: causal self-attention\n");
    const TensorView alpha4 = ops::softmax(omega2, scale, true);  // zeros above the diagonal
    print_row("alpha", alpha4, 2);
    ops::AttentionOptions causal;
    causal.causal = true;
    ok &= same("alpha v vs fused attention(q, k, v, causal)", ops::matmul(alpha4, v),
               ops::attention(q, k, v, causal));

    std::printf("step 5: sinusoidal positional encodings\n");
    const TensorView pe = ops::sinusoidal_positions(kWords, kDim);  // [8, 16]
    const TensorView x_pe = ops::add(X, pe);
    print_row("pe", pe, 1);

    std::printf("step 6: layer normalization\n");
    const TensorView y = ops::layer_norm(x_pe);
    double mean = 0;
    for (int64_t j = 0; j < kDim; ++j) mean += y.as<float>()[j];
    print_row("LayerNorm(X + pe)", y, 0);
    std::printf("  row 0: mean %.1e\n", mean / kDim);
    const TensorView y_res = ops::layer_norm(z3, nullptr, nullptr, 1e-5f, &x_pe);  // add & norm
    print_row("LayerNorm(x + MHA)", y_res, 0);

    std::printf(ok ? "all steps agree\n" : "FAILED: a difference over 1e-5\n");
    return ok ? 0 : 1;
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
