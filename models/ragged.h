// Padding removal: pieces shared by the families whose encoders run a ragged batch packed into
// one sequence [1, total, E] (bert, and the transformer family's encode()).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/io/tensor.h"

namespace tessera::models {

// Self-attention of each sequence over its own tokens, for a ragged batch packed into one
// sequence. qkv: [1, total, 3E], the fused q|k|v projection (E = heads * head_dim); sequence b
// holds tokens [begin[b], begin[b + 1]) (begin has batch + 1 entries, begin.back() == total).
// Returns [1, total, E]: softmax(q kᵀ / sqrt(head_dim)) v per sequence and head, q/k/v read in
// place by the fused attention kernel (no mask: every token of a sequence is real).
Tensor ragged_self_attention(const Tensor& qkv, const std::vector<int64_t>& begin, int64_t heads,
                             int64_t head_dim);

}  // namespace tessera::models
