// Tessera's operators, one call each: the kernels the models run on (blocked GEMM, row softmax,
// fused flash-style attention, add + layer norm, the sinusoidal table), for a program that wants
// the steps of attention one at a time rather than a loaded model (examples/attention_steps.py,
// docs/attention-chapter.md).
//
//   #include <tessera/ops.hpp>
//   std::vector<float> x(8 * 16);                                  // [8 words, 16 dims]
//   tessera::TensorView X = tessera::ops::view(x.data(), {8, 16});
//   auto omega = tessera::ops::matmul(X, X, true);                 // ω = X Xᵀ  [8, 8]
//   auto alpha = tessera::ops::softmax(omega);                     // α, row-wise  [8, 8]
//   auto z = tessera::ops::matmul(alpha, X);                       // z = α X  [8, 16]
//
// Tensors. Inputs are row-major contiguous F32 TensorViews over the caller's memory, read in
// place during the call; every result is a new F32 TensorView that owns its memory. Leading
// dimensions ("...") are rows: an op over the last dimension treats x [..., N] as numel/N rows.
//
// Kernels. Every op calls the kernels of the ISA the library chose (the best this CPU has, or
// TESSERA_ISA, or the first loaded Model's ModelOptions::isa; isa() says which) on the library's
// kernel threads, as a Model's graph does. Results are the same bits for any thread count.
//
// Errors. A wrong dtype, rank or shape throws tessera::Error naming the op and the argument
// ("ops::matmul: b is [12, 5]; expected [K, N] with K = 16, the last dimension of a").
#ifndef TESSERA_OPS_HPP
#define TESSERA_OPS_HPP

#include <tessera/tessera.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera::ops {

// The kernels these ops run: "avx512", "avx2" or "generic" (chosen once per process).
TESSERA_API std::string isa();

// An F32 view of the caller's buffer (not owned: it must outlive the calls that read it).
TESSERA_API TensorView view(const float* data, std::vector<int64_t> shape);

// c = a · b (+ bias): a [..., K]; b [K, N], or [N, K] with transpose_b (a PyTorch Linear
// weight: a · bᵀ); bias [N] or null. Returns [..., N]. b is packed for the GEMM on every call
// (a model packs its weights once, at load).
TESSERA_API TensorView matmul(const TensorView& a, const TensorView& b, bool transpose_b = false,
                              const TensorView* bias = nullptr);

// a + b, element by element: two tensors of one shape.
TESSERA_API TensorView add(const TensorView& a, const TensorView& b);

// softmax(scale · x) over the last dimension of x [..., N] (N >= 1). causal: x is [..., T, S]
// and entry (t, s) with s > t is -inf before the softmax (top-left aligned, as
// torch.tril(torch.ones(T, S)) and scaled_dot_product_attention(is_causal=True)); a row whose
// entries are all masked gives zeros.
TESSERA_API TensorView softmax(const TensorView& x, float scale = 1.0f, bool causal = false);

struct AttentionOptions {
  int64_t heads = 1;           // H: the last dimensions of q, k, v are H heads side by side
  bool causal = false;         // key s allowed for query t only if s <= t (top-left aligned)
  std::optional<float> scale;  // scores are scale · q·k; unset: 1 / sqrt(Dk)
};

// Scaled dot-product attention, softmax(scale · q kᵀ) v per batch and head, by the fused kernel
// (online softmax over tiles of keys; no [T, S] matrix is formed). q [T, H·Dk] or [B, T, H·Dk];
// k [S, H·Dk]; v [S, H·Dv] (k and v with the same leading B when q has one), S >= 1. Returns
// [T, H·Dv] or [B, T, H·Dv]: the heads' outputs side by side, as PyTorch's MultiheadAttention
// has them before its output projection. Dk and Dv may differ: the kernel takes one head size,
// so the narrower of q/k and v is padded with zero columns (they add nothing to q·k, and the
// output columns they make are dropped).
TESSERA_API TensorView attention(const TensorView& q, const TensorView& k, const TensorView& v,
                                 const AttentionOptions& options = {});

// y = (s - mean(s)) / sqrt(var(s) + eps) · weight + bias over the last dimension, with
// s = x + residual (residual null: s = x); biased variance, as torch.nn.LayerNorm. x [..., N],
// weight and bias [N] or null (ones and zeros), residual the shape of x or null; eps >= 0.
TESSERA_API TensorView layer_norm(const TensorView& x, const TensorView* weight = nullptr,
                                  const TensorView* bias = nullptr, float eps = 1e-5f,
                                  const TensorView* residual = nullptr);

// The sinusoidal positional encodings of "Attention Is All You Need" (section 3.5), [positions,
// dim]: pe[p, 2i] = sin(p / 10000^(2i/dim)), pe[p, 2i+1] = cos(p / 10000^(2i/dim)), computed in
// double. positions >= 0, dim >= 1.
TESSERA_API TensorView sinusoidal_positions(int64_t positions, int64_t dim);

}  // namespace tessera::ops

#endif  // TESSERA_OPS_HPP
