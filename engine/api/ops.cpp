// tessera::ops (include/tessera/ops.hpp): one kernel call per op, on the kernels' free functions
// (kernels/kernels.h), which run the ISA the library chose. This file checks what a caller hands
// in (dtype, rank, shape: a tessera::Error naming the op and the argument), allocates the result
// and lays the arguments out as the kernel takes them; the arithmetic is the kernels'.
#include <tessera/ops.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

#include "kernels/kernels.h"

namespace tessera::ops {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw Error(std::string("ops::") + op + ": " + what);
}

// Checks that t is an F32 tensor of non-negative sizes with memory behind it, of rank in
// [min_rank, max_rank]; `name` is the argument's name in the op's signature.
void check_f32(const char* op, const char* name, const TensorView& t, size_t min_rank,
               size_t max_rank = 64) {
  if (t.dtype != DType::f32)
    fail(op, std::string(name) + " must be F32, got " + dtype_name(t.dtype));
  for (int64_t d : t.shape)
    if (d < 0) fail(op, std::string(name) + " has a negative size: " + shape_text(t.shape));
  if (t.shape.size() < min_rank || t.shape.size() > max_rank) {
    std::string want = min_rank == max_rank ? std::to_string(min_rank)
                       : max_rank == 64
                           ? std::to_string(min_rank) + " or more"
                           : std::to_string(min_rank) + " to " + std::to_string(max_rank);
    fail(op, std::string(name) + " has rank " + std::to_string(t.shape.size()) + " " +
                 shape_text(t.shape) + "; expected rank " + want);
  }
  if (t.data == nullptr && t.numel() > 0) fail(op, std::string(name) + " has no data");
}

// A new F32 tensor of this shape, owning its memory (zeroed).
struct Output {
  TensorView view;
  float* data;
};
Output new_tensor(std::vector<int64_t> shape) {
  Output o;
  o.view.dtype = DType::f32;
  o.view.shape = std::move(shape);
  auto storage = std::make_shared<std::vector<float>>(static_cast<size_t>(o.view.numel()));
  o.data = storage->data();
  o.view.data = o.data;
  o.view.owner = std::move(storage);
  return o;
}

const float* f32(const TensorView& t) {
  return static_cast<const float*>(t.data);
}

// Runs f, turning what the kernels throw about their arguments or the ISA choice (TESSERA_ISA
// naming an ISA this CPU lacks) into tessera::Error, as the rest of the API does.
template <class F>
auto guarded(const char* op, F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail(op, e.what());
  }
}

}  // namespace

std::string isa() {
  return guarded("isa", [] { return std::string(kernels::isa_name(kernels::active_isa())); });
}

TensorView view(const float* data, std::vector<int64_t> shape) {
  TensorView v;
  v.dtype = DType::f32;
  v.shape = std::move(shape);
  v.data = data;
  return v;
}

TensorView matmul(const TensorView& a, const TensorView& b, bool transpose_b,
                  const TensorView* bias) {
  const char* op = "matmul";
  check_f32(op, "a", a, 1);
  check_f32(op, "b", b, 2, 2);
  const int64_t k = a.shape.back();
  const int64_t b_k = transpose_b ? b.shape[1] : b.shape[0];
  const int64_t n = transpose_b ? b.shape[0] : b.shape[1];
  if (b_k != k)
    fail(op, "b is " + shape_text(b.shape) + "; expected " + (transpose_b ? "[N, K]" : "[K, N]") +
                 " with K = " + std::to_string(k) + ", the last dimension of a " +
                 shape_text(a.shape));
  if (bias) {
    check_f32(op, "bias", *bias, 1, 1);
    if (bias->shape[0] != n)
      fail(op, "bias is " + shape_text(bias->shape) + "; expected [N] with N = " +
                   std::to_string(n) + " (the columns of the product)");
  }
  std::vector<int64_t> shape(a.shape.begin(), a.shape.end() - 1);
  int64_t m = 1;
  for (int64_t d : shape) m *= d;  // rows of a
  shape.push_back(n);
  Output c = new_tensor(shape);  // [..., N]
  if (m == 0 || n == 0) return c.view;
  if (k == 0) {  // an empty sum: the bias alone
    if (bias)
      for (int64_t i = 0; i < m; ++i) std::memcpy(c.data + i * n, f32(*bias), n * sizeof(float));
    return c.view;
  }
  guarded(op, [&] {
    const kernels::PackedWeights w = transpose_b ? kernels::pack_weights(f32(b), n, k, k)
                                                 : kernels::pack_weights_kn(f32(b), k, n, n);
    kernels::Epilogue ep;
    ep.bias = bias ? f32(*bias) : nullptr;
    kernels::gemm(m, f32(a), k, w, c.data, n, ep);
    return 0;
  });
  return c.view;
}

TensorView add(const TensorView& a, const TensorView& b) {
  const char* op = "add";
  check_f32(op, "a", a, 0);
  check_f32(op, "b", b, 0);
  if (a.shape != b.shape)
    fail(op, "b is " + shape_text(b.shape) + "; expected the shape of a, " + shape_text(a.shape));
  Output y = new_tensor(a.shape);
  if (y.view.numel() > 0)
    guarded(op, [&] {
      kernels::add(a.numel(), f32(a), f32(b), y.data);
      return 0;
    });
  return y.view;
}

TensorView softmax(const TensorView& x, float scale, bool causal) {
  const char* op = "softmax";
  check_f32(op, "x", x, causal ? 2 : 1);
  if (!std::isfinite(scale)) fail(op, "scale must be finite, got " + std::to_string(scale));
  Output y = new_tensor(x.shape);
  const int64_t n = x.shape.back();
  if (y.view.numel() == 0) return y.view;
  const int64_t rows = x.numel() / n;
  const float* src = f32(x);
  if (scale != 1.0f || causal) {
    // The scores the kernel normalizes: scale · x, -inf where the causal mask forbids.
    const int64_t t_len = causal ? x.shape[x.shape.size() - 2] : 1;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r % t_len;  // the query row within its [T, S] matrix
      for (int64_t s = 0; s < n; ++s)
        y.data[r * n + s] = causal && s > t ? -INFINITY : scale * src[r * n + s];
    }
    src = y.data;
  }
  guarded(op, [&] {
    kernels::softmax_rows(rows, n, src, n, y.data, n);
    return 0;
  });
  return y.view;
}

TensorView attention(const TensorView& q, const TensorView& k, const TensorView& v,
                     const AttentionOptions& options) {
  const char* op = "attention";
  check_f32(op, "q", q, 2, 3);
  check_f32(op, "k", k, 2, 3);
  check_f32(op, "v", v, 2, 3);
  const int64_t h = options.heads;
  if (h < 1) fail(op, "heads must be >= 1, got " + std::to_string(h));
  const size_t rank = q.shape.size();
  const char* layout = rank == 2 ? "[S, H·D]" : "[B, S, H·D]";
  for (const auto& [name, t] : {std::pair{"k", &k}, std::pair{"v", &v}})
    if (t->shape.size() != rank)
      fail(op, std::string(name) + " is " + shape_text(t->shape) + "; expected rank " +
                   std::to_string(rank) + " like q " + shape_text(q.shape) + " (" + layout + ")");
  const int64_t batch = rank == 3 ? q.shape[0] : 1;
  const int64_t t_len = q.shape[rank - 2], s_len = k.shape[rank - 2];
  const int64_t qk_width = q.shape[rank - 1], v_width = v.shape[rank - 1];
  if (rank == 3 && (k.shape[0] != batch || v.shape[0] != batch))
    fail(op, "k " + shape_text(k.shape) + " and v " + shape_text(v.shape) +
                 " must have q's batch size B = " + std::to_string(batch));
  if (k.shape[rank - 1] != qk_width)
    fail(op, "k is " + shape_text(k.shape) + "; its last dimension must be q's, " +
                 std::to_string(qk_width) + " (H·Dk)");
  if (v.shape[rank - 2] != s_len)
    fail(op, "v is " + shape_text(v.shape) +
                 "; expected as many rows as k, S = " + std::to_string(s_len));
  if (s_len < 1) fail(op, "k has no keys (S = 0): a softmax over no scores is undefined");
  if (qk_width % h != 0 || qk_width == 0)
    fail(op, "q's last dimension " + std::to_string(qk_width) +
                 " is not heads = " + std::to_string(h) + " times a head size Dk >= 1");
  if (v_width % h != 0 || v_width == 0)
    fail(op, "v's last dimension " + std::to_string(v_width) +
                 " is not heads = " + std::to_string(h) + " times a head size Dv >= 1");
  const int64_t dk = qk_width / h, dv = v_width / h;
  if (options.scale && !std::isfinite(*options.scale))
    fail(op, "scale must be finite, got " + std::to_string(*options.scale));
  std::vector<int64_t> shape = q.shape;
  shape.back() = v_width;
  Output out = new_tensor(shape);  // [B?, T, H·Dv]
  if (out.view.numel() == 0) return out.view;

  // The kernel takes one head size D for q, k and v. With Dk != Dv, the narrower side is copied
  // into [B, rows, H, D] with zero columns past its own size.
  const int64_t d = std::max(dk, dv);
  auto padded = [&](const TensorView& t, int64_t rows, int64_t width) {
    std::vector<float> p(static_cast<size_t>(batch * rows * h * d), 0.0f);  // [B, rows, H, D]
    const float* src = f32(t);                                              // [B, rows, H, width]
    for (int64_t r = 0; r < batch * rows * h; ++r)
      std::memcpy(p.data() + r * d, src + r * width, width * sizeof(float));
    return p;
  };
  std::vector<float> qp, kp, vp, op_;
  kernels::AttentionArgs a;
  a.batch = batch;
  a.heads = h;
  a.q_len = t_len;
  a.kv_len = s_len;
  a.head_dim = d;
  a.scale = options.scale.value_or(1.0f / std::sqrt(static_cast<float>(dk)));
  a.causal = options.causal;
  a.causal_offset = 0;  // top-left aligned: key s for query t when s <= t
  const int64_t qk_row = dk < d ? h * d : qk_width, v_row = dv < d ? h * d : v_width;
  if (dk < d) {
    qp = padded(q, t_len, dk);
    kp = padded(k, s_len, dk);
  }
  if (dv < d) {
    vp = padded(v, s_len, dv);
    op_.assign(static_cast<size_t>(batch * t_len * h * d), 0.0f);  // [B, T, H, D]
  }
  a.q = dk < d ? qp.data() : f32(q);
  a.q_sb = t_len * qk_row, a.q_st = qk_row, a.q_sh = d;
  a.k = dk < d ? kp.data() : f32(k);
  a.k_sb = s_len * qk_row, a.k_ss = qk_row, a.k_sh = d;
  a.v = dv < d ? vp.data() : f32(v);
  a.v_sb = s_len * v_row, a.v_ss = v_row, a.v_sh = d;
  a.out = dv < d ? op_.data() : out.data;
  a.o_sb = t_len * v_row, a.o_st = v_row, a.o_sh = d;
  guarded(op, [&] {
    kernels::attention(a);
    return 0;
  });
  if (dv < d)  // the first Dv columns of each head
    for (int64_t r = 0; r < batch * t_len * h; ++r)
      std::memcpy(out.data + r * dv, op_.data() + r * d, dv * sizeof(float));
  return out.view;
}

TensorView layer_norm(const TensorView& x, const TensorView* weight, const TensorView* bias,
                      float eps, const TensorView* residual) {
  const char* op = "layer_norm";
  check_f32(op, "x", x, 1);
  const int64_t n = x.shape.back();
  for (const auto& [name, t] : {std::pair{"weight", weight}, std::pair{"bias", bias}}) {
    if (!t) continue;
    check_f32(op, name, *t, 1, 1);
    if (t->shape[0] != n)
      fail(op, std::string(name) + " is " + shape_text(t->shape) + "; expected [N] with N = " +
                   std::to_string(n) + ", the last dimension of x " + shape_text(x.shape));
  }
  if (residual) {
    check_f32(op, "residual", *residual, 1);
    if (residual->shape != x.shape)
      fail(op, "residual is " + shape_text(residual->shape) + "; expected the shape of x, " +
                   shape_text(x.shape));
  }
  if (!(eps >= 0.0f) || !std::isfinite(eps))
    fail(op, "eps must be finite and >= 0, got " + std::to_string(eps));
  Output y = new_tensor(x.shape);
  if (y.view.numel() == 0) return y.view;
  guarded(op, [&] {
    kernels::add_layernorm_rows(x.numel() / n, n, f32(x), n, residual ? f32(*residual) : nullptr, n,
                                weight ? f32(*weight) : nullptr, bias ? f32(*bias) : nullptr, eps,
                                y.data, n);
    return 0;
  });
  return y.view;
}

TensorView sinusoidal_positions(int64_t positions, int64_t dim) {
  const char* op = "sinusoidal_positions";
  if (positions < 0) fail(op, "positions must be >= 0, got " + std::to_string(positions));
  if (dim < 1) fail(op, "dim must be >= 1, got " + std::to_string(dim));
  Output pe = new_tensor({positions, dim});  // [positions, dim]
  kernels::sinusoidal_positions(positions, dim, pe.data);
  return pe.view;
}

}  // namespace tessera::ops
