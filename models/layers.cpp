#include "models/layers.h"

namespace tessera::models {

using kernels::Activation;

ValueId Layers::dense(const Dense& d, ValueId x, Activation act, ValueId residual) {
  NodeAttrs a;
  a.weight = d.weight;
  ValueId y = g_.add_node(Op::linear, d.name, {x}, a);
  if (d.bias >= 0) {
    NodeAttrs b;
    b.bias = d.bias;
    y = g_.add_node(Op::bias_add, d.name + ".bias", {y}, b);
  }
  if (act != Activation::none) {
    NodeAttrs b;
    b.act = act;
    y = g_.add_node(Op::activation, d.name + ".act", {y}, b);
  }
  if (residual != kNone) y = add(d.name + ".residual", residual, y);
  return y;
}

ValueId Layers::norm(const Norm& n, ValueId x) {
  NodeAttrs a;
  a.gamma = n.gamma;
  a.beta = n.beta;
  a.eps = n.eps;
  return g_.add_node(Op::layernorm, n.name, {x}, a);
}

ValueId Layers::add(const std::string& name, ValueId a, ValueId b) {
  return g_.add_node(Op::add, name, {a, b}, NodeAttrs{});
}

ValueId Layers::embedding(const Embedding& e, ValueId ids, bool positions_from_cache) {
  NodeAttrs a;
  a.table = e.table;
  ValueId y = g_.add_node(Op::gather, e.name, {ids}, a);
  if (e.scale) {
    NodeAttrs s;
    s.scale = *e.scale;
    y = g_.add_node(Op::scale, e.name + ".scale", {y}, s);
  }
  if (e.positions >= 0) {
    NodeAttrs p;
    p.pos_table = e.positions;
    p.positions_from_cache = positions_from_cache;
    y = g_.add_node(Op::add_positions, e.name + ".positions", {y}, p);
  }
  return y;
}

QKV Layers::project_qkv(const Attention& a, ValueId x) {
  if (a.fused()) {
    const ValueId qkv = dense(a.qkv, x);
    return QKV{{qkv, 0}, {qkv, a.width()}, {qkv, 2 * a.width()}};
  }
  const ValueId q = dense(a.q, x);
  const ValueId k = dense(a.k, x);
  const ValueId v = dense(a.v, x);
  return QKV{q, k, v};
}

KV Layers::project_kv(const Attention& a, ValueId memory) {
  const ValueId k = dense(a.k, memory);
  const ValueId v = dense(a.v, memory);
  return KV{k, v};
}

ValueId Layers::attend(const Attention& a, const QKV& in, const Masks& m, int cache_slot) {
  NodeAttrs at;
  at.heads = a.heads;
  at.head_dim = a.head_dim;
  at.q_col = in.q.col;
  at.k_col = in.k.col;
  at.v_col = in.v.col;
  at.causal = m.causal;
  at.cache_slot = cache_slot;
  const ValueId s = g_.add_node(Op::attention_scores, a.name + ".scores",
                                {in.q.value, in.k.value, m.attn_mask, m.key_padding}, at);
  const ValueId p = g_.add_node(Op::softmax, a.name + ".softmax", {s}, NodeAttrs{});
  return g_.add_node(Op::attention_context, a.name + ".context", {p, in.v.value}, at);
}

ValueId Layers::self_attention(const Attention& a, ValueId x, const Masks& m, ValueId residual,
                               int cache_slot) {
  const ValueId heads = attend(a, project_qkv(a, x), m, cache_slot);
  return dense(a.out, heads, Activation::none, residual);
}

ValueId Layers::cross_attention(const Attention& a, ValueId x, const KV& memory, const Masks& m,
                                ValueId residual) {
  const ValueId q = dense(a.q, x);
  const ValueId heads = attend(a, QKV{q, memory.k, memory.v}, m);
  return dense(a.out, heads, Activation::none, residual);
}

ValueId Layers::feed_forward(const FeedForward& f, ValueId x, ValueId residual) {
  const ValueId h = dense(f.up, x, f.act);
  return dense(f.down, h, Activation::none, residual);
}

}  // namespace tessera::models
