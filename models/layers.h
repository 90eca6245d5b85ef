// The sub-graphs every model family is made of, emitted as the plain operators the graph passes
// fuse (engine/graph/passes/passes.h): a dense layer with its epilogue, a layer norm, an
// embedding, multi-head attention with its masks, the feed-forward block, and the residual
// sub-layer with its norm before or after. A family describes its modules with the structs
// below (weight indices into the model's WeightSet and the node names, which are the modules'
// checkpoint paths) and writes its graph top to bottom with them:
//
//   Layers nn(g);
//   ValueId x = nn.embedding(w.tokens, ids);
//   for (const auto& L : w.layers) {
//     x = nn.self_attention(L.attn, nn.norm(L.ln_1, x), masks, x);   // x + attn(norm(x))
//     x = nn.feed_forward(L.mlp, nn.norm(L.ln_2, x), x);             // x + ffn(norm(x))
//   }
//   logits = nn.dense(w.head, nn.norm(w.ln_f, x));
//
// Every call appends its nodes to the graph in the order a reader would compute them; C++
// leaves the order of a call's arguments open, so two calls that emit nodes go in separate
// statements, not in the arguments of one call (the graph would depend on the compiler). Node
// names: a Dense's linear is `name` (its bias_add, activation and residual add `name.bias`,
// `name.act`, `name.residual`), an attention's nodes `name.scores`, `name.softmax`,
// `name.context`, an embedding's `name`, `name.scale`, `name.positions`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "engine/graph/graph.h"

namespace tessera::models {

// y = x · Wᵀ [+ bias]: weight [N, K] (or [K, N] with WeightSet kn_layout), bias [N] or -1.
struct Dense {
  std::string name;
  int weight = -1, bias = -1;
};

// LayerNorm over the last dimension.
struct Norm {
  std::string name;
  int gamma = -1, beta = -1;
  float eps = 1e-5f;
};

// table[ids] [* scale] [+ positions[t + offset]]: a token (or position, or segment) lookup.
struct Embedding {
  std::string name;
  int table = -1;              // [vocab, dim]
  std::optional<float> scale;  // e.g. sqrt(d_model); no node when unset
  int positions = -1;          // [max_positions, dim] added by position, or -1
};

// Multi-head attention: the q, k, v projections (one fused `qkv` [3E] projection of the input,
// or separate `q`, `k`, `v`), the attention itself (nodes named `name.*`) and `out`.
struct Attention {
  std::string name;
  int64_t heads = 0, head_dim = 0;
  Dense qkv;      // used when qkv.weight >= 0: q, k, v at columns 0, E, 2E of its output
  Dense q, k, v;  // otherwise
  Dense out;
  bool fused() const { return qkv.weight >= 0; }
  int64_t width() const { return heads * head_dim; }
};

// The position-wise feed-forward block: down(act(up(x))).
struct FeedForward {
  Dense up, down;
  kernels::Activation act = kernels::Activation::none;
};

// Which keys a query sees. Masks are graph values (kNone when absent; optional inputs may be
// absent at run time too).
struct Masks {
  ValueId attn_mask = kNone;    // [T, S] or [B * heads, T, S]: bool/u8 (1 = masked) or additive f32
  ValueId key_padding = kNone;  // [B, S] u8 (1 = padding)
  bool causal = false;          // query t sees keys up to its own position (after the cache)
};

// Columns [col, col + heads * head_dim) of a value: one of q, k, v, read in place where a fused
// projection holds them side by side. A plain ValueId converts to the slice at column 0.
struct Slice {
  Slice() = default;
  Slice(ValueId v, int64_t c = 0) : value(v), col(c) {}
  ValueId value = kNone;
  int64_t col = 0;
};
struct QKV {
  Slice q, k, v;
};
// The keys and values a cross-attention reads (projected from the encoder's memory).
struct KV {
  Slice k, v;
};

// Where a residual sub-layer puts its norm: pre-LN x + f(norm(x)), post-LN norm(x + f(x)).
enum class NormPlacement { pre, post };

// Emits sub-graphs into one graph.
class Layers {
 public:
  explicit Layers(Graph& g) : g_(g) {}
  Graph& graph() { return g_; }

  // x · Wᵀ [+ bias] [-> act] [+ residual]: linear, bias_add, activation, add (the passes fold
  // them into the GEMM's epilogue).
  ValueId dense(const Dense& d, ValueId x, kernels::Activation act = kernels::Activation::none,
                ValueId residual = kNone);
  // LayerNorm(x).
  ValueId norm(const Norm& n, ValueId x);
  // a + b.
  ValueId add(const std::string& name, ValueId a, ValueId b);
  // gather [-> scale] [-> add_positions]. Positions count from the KV cache's length (decode
  // steps) when positions_from_cache, else from 0.
  ValueId embedding(const Embedding& e, ValueId ids, bool positions_from_cache = false);

  // The q, k, v projections of self-attention over x.
  QKV project_qkv(const Attention& a, ValueId x);
  // The k, v projections of cross-attention over the encoder's memory.
  KV project_kv(const Attention& a, ValueId memory);
  // softmax(q·kᵀ / sqrt(head_dim) + masks) · v over the heads: attention_scores, softmax,
  // attention_context (fuse_attention makes them one node). With cache_slot >= 0 the new k and v
  // rows are appended to that KV-cache slot and the queries attend over all of it.
  ValueId attend(const Attention& a, const QKV& qkv, const Masks& m, int cache_slot = -1);
  // out(attend(project_qkv(x))) [+ residual].
  ValueId self_attention(const Attention& a, ValueId x, const Masks& m, ValueId residual = kNone,
                         int cache_slot = -1);
  // out(attend(q(x), memory k, v)) [+ residual].
  ValueId cross_attention(const Attention& a, ValueId x, const KV& memory, const Masks& m,
                          ValueId residual = kNone);
  // down(act(up(x))) [+ residual].
  ValueId feed_forward(const FeedForward& f, ValueId x, ValueId residual = kNone);

  // A residual sub-layer's norm, on its input (pre-LN) or on its output (post-LN); the other
  // placement passes the value through.
  ValueId norm_input(NormPlacement p, const Norm& n, ValueId x) {
    return p == NormPlacement::pre ? norm(n, x) : x;
  }
  ValueId norm_output(NormPlacement p, const Norm& n, ValueId y) {
    return p == NormPlacement::post ? norm(n, y) : y;
  }
  // The residual sub-layer x + f(x) with its norm: f(input, residual) emits the sub-layer and
  // adds the residual (its last dense layer takes it).
  template <class F>
  ValueId sublayer(NormPlacement p, const Norm& n, ValueId x, F&& f) {
    return norm_output(p, n, std::forward<F>(f)(norm_input(p, n, x), x));
  }

 private:
  Graph& g_;
};

}  // namespace tessera::models
