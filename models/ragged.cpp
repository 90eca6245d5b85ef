#include "models/ragged.h"

#include <cmath>

#include "kernels/kernels.h"

namespace tessera::models {

Tensor ragged_self_attention(const Tensor& qkv, const std::vector<int64_t>& begin, int64_t heads,
                             int64_t head_dim) {
  const int64_t e = heads * head_dim, total = begin.back();
  Tensor attn(DType::f32, {1, total, e}, false);
  for (size_t b = 0; b + 1 < begin.size(); ++b) {
    const int64_t n = begin[b + 1] - begin[b];
    if (n == 0) continue;
    kernels::AttentionArgs a;
    a.batch = 1;
    a.heads = heads;
    a.head_dim = head_dim;
    a.q_len = a.kv_len = n;
    const float* base = qkv.data<float>() + begin[b] * 3 * e;
    a.q = base;
    a.k = base + e;
    a.v = base + 2 * e;
    a.q_sb = a.k_sb = a.v_sb = n * 3 * e;
    a.q_st = a.k_ss = a.v_ss = 3 * e;
    a.q_sh = a.k_sh = a.v_sh = head_dim;
    a.out = attn.data<float>() + begin[b] * e;
    a.o_sb = n * e;
    a.o_st = e;
    a.o_sh = head_dim;
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
    kernels::attention(a);
  }
  return attn;
}

}  // namespace tessera::models
