#include "engine/executor.h"

#include <cmath>
#include <cstring>

namespace tessera {

namespace k = kernels;

void KVCache::reset(int slots, int64_t batch_size, int64_t capacity_tokens, int64_t row_width) {
  batch = batch_size;
  capacity = capacity_tokens;
  width = row_width;
  k.clear();
  v.clear();
  for (int s = 0; s < slots; ++s) {
    k.emplace_back(DType::f32, Shape{batch, capacity, width}, false);
    v.emplace_back(DType::f32, Shape{batch, capacity, width}, false);
  }
}

namespace {

Shape with_last(Shape s, int64_t last) {
  s.back() = last;
  return s;
}

void require_f32(const Tensor& t, const Node& n, const char* what) {
  if (t.dtype() != DType::f32)
    throw Error(n.name + ": " + what + " must be F32, got " + dtype_name(t.dtype()));
}

// Optional input i of a node: null when the node has none or the graph input was not given.
const Tensor* optional_input(const Node& n, size_t i, const std::vector<Tensor>& env) {
  if (i >= n.inputs.size() || n.inputs[i] == kNone) return nullptr;
  const Tensor& t = env[n.inputs[i]];
  return t.empty() ? nullptr : &t;
}

bool is_bool_like(DType dt) {
  return dt == DType::boolean || dt == DType::u8;
}

void run_linear(const Node& n, const WeightSet& w, std::vector<Tensor>& env) {
  const Tensor& x = env[n.inputs[0]];
  require_f32(x, n, "input");
  const auto& packed = w.at(n.attrs.weight).packed;
  if (x.rank() < 1 || x.dim(-1) != packed.k())
    throw Error(n.name + ": input shape " + shape_str(x.shape()) + " has last dim " +
                std::to_string(x.rank() ? x.dim(-1) : 0) + ", expected " +
                std::to_string(packed.k()));
  const int64_t m = x.numel() / packed.k();
  Tensor y(DType::f32, with_last(x.shape(), packed.n()), false);
  k::Epilogue ep;
  ep.bias = w.f32(n.attrs.bias);
  ep.act = n.attrs.act;
  if (const Tensor* rp = optional_input(n, 1, env)) {
    const Tensor& r = *rp;
    if (r.shape() != y.shape())
      throw Error(n.name + ": residual shape " + shape_str(r.shape()) + " differs from output " +
                  shape_str(y.shape()));
    ep.residual = r.data<float>();
    ep.ld_residual = packed.n();
  }
  k::gemm(m, x.data<float>(), packed.k(), packed, y.data<float>(), packed.n(), ep);
  env[n.outputs[0]] = std::move(y);
}

void run_attention(const Node& n, std::vector<Tensor>& env, RunContext& ctx) {
  const auto& a = n.attrs;
  const Tensor& qs = env[n.inputs[0]];
  const Tensor& kvs = env[n.inputs[1]];
  require_f32(qs, n, "queries");
  require_f32(kvs, n, "keys/values");
  const int64_t width = a.heads * a.head_dim;
  if (qs.rank() != 3 || kvs.rank() != 3 || qs.dim(0) != kvs.dim(0))
    throw Error(n.name + ": expected [B, T, C] queries and [B, S, C] keys/values, got " +
                shape_str(qs.shape()) + " and " + shape_str(kvs.shape()));
  const int64_t batch = qs.dim(0), q_len = qs.dim(1), new_len = kvs.dim(1);
  const int64_t cq = qs.dim(2), ckv = kvs.dim(2);
  if (a.q_col + width > cq || a.k_col + width > ckv || a.v_col + width > ckv)
    throw Error(n.name + ": projection widths " + shape_str(qs.shape()) + "/" +
                shape_str(kvs.shape()) + " are too narrow for " + std::to_string(a.heads) +
                " heads of " + std::to_string(a.head_dim));

  Tensor out(DType::f32, Shape{batch, q_len, width}, false);
  k::AttentionArgs args;
  args.batch = batch;
  args.heads = a.heads;
  args.q_len = q_len;
  args.head_dim = a.head_dim;
  args.q = qs.data<float>() + a.q_col;
  args.q_sb = q_len * cq;
  args.q_st = cq;
  args.q_sh = a.head_dim;
  args.out = out.data<float>();
  args.o_sb = q_len * width;
  args.o_st = width;
  args.o_sh = a.head_dim;
  args.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  args.causal = a.causal;

  if (a.cache_slot >= 0) {
    KVCache* cache = ctx.cache;
    if (!cache || a.cache_slot >= static_cast<int>(cache->k.size()))
      throw Error(n.name + ": no KV cache slot " + std::to_string(a.cache_slot));
    if (cache->batch != batch || cache->width != width)
      throw Error(n.name + ": KV cache holds batch " + std::to_string(cache->batch) + " of width " +
                  std::to_string(cache->width) + ", the step has batch " + std::to_string(batch) +
                  " of width " + std::to_string(width));
    if (ctx.past_len + new_len > cache->capacity)
      throw Error(n.name + ": KV cache capacity " + std::to_string(cache->capacity) +
                  " tokens exceeded");
    float* kc = cache->k[a.cache_slot].data<float>();
    float* vc = cache->v[a.cache_slot].data<float>();
    const float* src = kvs.data<float>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < new_len; ++t) {
        const float* row = src + (b * new_len + t) * ckv;
        const int64_t dst = (b * cache->capacity + ctx.past_len + t) * width;
        std::memcpy(kc + dst, row + a.k_col, sizeof(float) * width);
        std::memcpy(vc + dst, row + a.v_col, sizeof(float) * width);
      }
    }
    args.kv_len = ctx.past_len + new_len;
    args.k = kc;
    args.v = vc;
    args.k_sb = args.v_sb = cache->capacity * width;
    args.k_ss = args.v_ss = width;
    args.causal_offset = ctx.past_len;
  } else {
    args.kv_len = new_len;
    args.k = kvs.data<float>() + a.k_col;
    args.v = kvs.data<float>() + a.v_col;
    args.k_sb = args.v_sb = new_len * ckv;
    args.k_ss = args.v_ss = ckv;
  }
  args.k_sh = args.v_sh = a.head_dim;

  const int64_t t_len = q_len, s_len = args.kv_len;
  if (const Tensor* mp = optional_input(n, 2, env)) {
    const Tensor& m = *mp;
    const bool per_head = m.rank() == 3;
    const Shape want2{t_len, s_len}, want3{batch * a.heads, t_len, s_len};
    if (m.shape() != want2 && m.shape() != want3)
      throw Error(n.name + ": attention mask has shape " + shape_str(m.shape()) + ", expected " +
                  shape_str(want2) + " or " + shape_str(want3));
    if (is_bool_like(m.dtype()))
      args.mask_bool = m.data<uint8_t>();
    else if (m.dtype() == DType::f32)
      args.mask_add = m.data<float>();
    else
      throw Error(n.name + ": attention mask must be BOOL, U8 or F32, got " +
                  dtype_name(m.dtype()));
    args.m_sbh = per_head ? t_len * s_len : 0;
    args.m_st = s_len;
  }
  if (const Tensor* mp = optional_input(n, 3, env)) {
    const Tensor& m = *mp;
    if (m.shape() != Shape{batch, s_len})
      throw Error(n.name + ": key padding mask has shape " + shape_str(m.shape()) + ", expected " +
                  shape_str(Shape{batch, s_len}));
    if (!is_bool_like(m.dtype()))
      throw Error(n.name + ": key padding mask must be BOOL or U8, got " + dtype_name(m.dtype()));
    args.key_padding = m.data<uint8_t>();
    args.kp_sb = s_len;
  }
  k::attention(args);
  env[n.outputs[0]] = std::move(out);
}

void run_embedding(const Node& n, const WeightSet& w, std::vector<Tensor>& env,
                   const RunContext& ctx) {
  const Tensor& ids = env[n.inputs[0]];
  if (ids.dtype() != DType::i64 || ids.rank() != 2)
    throw Error(n.name + ": token ids must be I64 [B, T], got " +
                std::string(dtype_name(ids.dtype())) + " " + shape_str(ids.shape()));
  const Tensor& table = w.at(n.attrs.table).tensor;
  const int64_t vocab = table.dim(0), dim = table.dim(1);
  const int64_t batch = ids.dim(0), len = ids.dim(1);
  const int64_t offset = n.attrs.positions_from_cache ? ctx.past_len : 0;
  const int64_t* id = ids.data<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (id[i] < 0 || id[i] >= vocab)
      throw Error(n.name + ": token id " + std::to_string(id[i]) + " at [" +
                  std::to_string(i / len) + ", " + std::to_string(i % len) +
                  "] is out of range for vocabulary size " + std::to_string(vocab));
  }
  std::vector<int64_t> positions;
  const float* pos_table = nullptr;
  if (n.attrs.pos_table >= 0) {
    const Tensor& pt = w.at(n.attrs.pos_table).tensor;
    if (offset + len > pt.dim(0))
      throw Error(n.name + ": sequence of " + std::to_string(offset + len) +
                  " positions exceeds max_position " + std::to_string(pt.dim(0)));
    pos_table = pt.data<float>();
    positions.resize(static_cast<size_t>(ids.numel()));
    for (int64_t i = 0; i < ids.numel(); ++i) positions[i] = offset + i % len;
  }
  Tensor out(DType::f32, Shape{batch, len, dim}, false);
  k::embedding(ids.numel(), id, table.data<float>(), dim, n.attrs.scale,
               pos_table ? positions.data() : nullptr, pos_table, out.data<float>(), dim);
  env[n.outputs[0]] = std::move(out);
}

void run_node(const Node& n, const WeightSet& w, std::vector<Tensor>& env, RunContext& ctx) {
  switch (n.op) {
    case Op::linear:
      run_linear(n, w, env);
      return;
    case Op::attention:
      run_attention(n, env, ctx);
      return;
    case Op::embedding:
      run_embedding(n, w, env, ctx);
      return;
    case Op::layernorm: {
      const Tensor& x = env[n.inputs[0]];
      require_f32(x, n, "input");
      const int64_t dim = x.dim(-1);
      const float* residual = nullptr;
      if (const Tensor* r = optional_input(n, 1, env)) {
        if (r->shape() != x.shape())
          throw Error(n.name + ": residual shape differs from input shape");
        residual = r->data<float>();
      }
      Tensor y(DType::f32, x.shape(), false);
      k::add_layernorm_rows(x.numel() / dim, dim, x.data<float>(), dim, residual, dim,
                            w.f32(n.attrs.gamma), w.f32(n.attrs.beta), n.attrs.eps, y.data<float>(),
                            dim);
      env[n.outputs[0]] = std::move(y);
      return;
    }
    case Op::add: {
      const Tensor& a = env[n.inputs[0]];
      const Tensor& b = env[n.inputs[1]];
      if (a.shape() != b.shape())
        throw Error(n.name + ": shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                    " differ");
      Tensor y(DType::f32, a.shape(), false);
      k::add(a.numel(), a.data<float>(), b.data<float>(), y.data<float>());
      env[n.outputs[0]] = std::move(y);
      return;
    }
    case Op::activation: {
      const Tensor& x = env[n.inputs[0]];
      Tensor y(DType::f32, x.shape(), false);
      k::activation(x.numel(), x.data<float>(), y.data<float>(), n.attrs.act);
      env[n.outputs[0]] = std::move(y);
      return;
    }
    case Op::softmax: {
      const Tensor& x = env[n.inputs[0]];
      const int64_t dim = x.dim(-1);
      Tensor y(DType::f32, x.shape(), false);
      k::softmax_rows(x.numel() / dim, dim, x.data<float>(), dim, y.data<float>(), dim);
      env[n.outputs[0]] = std::move(y);
      return;
    }
  }
  throw Error(n.name + ": unknown operator");
}

}  // namespace

TensorMap execute(const Graph& graph, const TensorMap& inputs, RunContext& ctx) {
  std::vector<Tensor> env(graph.values().size());
  for (ValueId id : graph.inputs()) {
    const Value& v = graph.values()[id];
    auto it = inputs.find(v.name);
    if (it != inputs.end()) {
      env[id] = it->second;
    } else if (!v.optional) {
      throw Error("missing input '" + v.name + "'");
    }
  }
  // Remaining uses of each value, so intermediates are released as soon as they are dead.
  std::vector<int> uses(graph.values().size(), 0);
  for (const auto& n : graph.nodes())
    for (ValueId v : n.inputs)
      if (v != kNone) ++uses[v];
  for (ValueId v : graph.outputs()) ++uses[v];

  for (const auto& n : graph.nodes()) {
    for (ValueId v : n.inputs)
      if (v != kNone && !graph.values()[v].optional && env[v].empty())
        throw Error(n.name + ": input '" + graph.values()[v].name + "' has no value");
    if (ctx.observer) {
      ctx.observer->before(graph, n, env, ctx);
      run_node(n, graph.weights(), env, ctx);
      ctx.observer->after(graph, n, env, ctx);
    } else {
      run_node(n, graph.weights(), env, ctx);
    }
    for (ValueId v : n.inputs)
      if (v != kNone && --uses[v] == 0 && !graph.values()[v].is_input) env[v] = Tensor();
  }
  TensorMap out;
  for (ValueId v : graph.outputs()) out[graph.values()[v].name] = env[v];
  return out;
}

}  // namespace tessera
