#include "engine/graph/executor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/io/limits.h"

namespace tessera {

namespace k = kernels;

void KVCache::reset(int slots, int64_t batch_size, int64_t capacity_tokens, int64_t row_width,
                    bool touch) {
  // Keys and values of every slot, checked before anything is allocated.
  const std::string what = "the KV cache (" + std::to_string(slots) + " layers x 2 x batch " +
                           std::to_string(batch_size) + " x " + std::to_string(capacity_tokens) +
                           " positions x width " + std::to_string(row_width) + " x 4 bytes)";
  uint64_t bytes = 2 * static_cast<uint64_t>(std::max(slots, 0));
  for (int64_t d : {batch_size, capacity_tokens, row_width, int64_t{4}})
    bytes = checked_mul(bytes, static_cast<uint64_t>(std::max<int64_t>(d, 0)), what);
  check_fits_memory(bytes, what);
  k.clear();
  v.clear();
  batch = batch_size;
  capacity = capacity_tokens;
  width = row_width;
  if (touch && slots > 0) {
    // One block for every slot: from 2 MiB up it is backed by huge pages where the system
    // allows them (kernels::allocate_aligned), so touching it takes a few faults, not one per
    // 4 KiB page (on a VM each costs microseconds).
    Tensor all(DType::f32, Shape{2 * slots, batch, capacity, width}, false);
    std::memset(all.data<float>(), 0, all.nbytes());
    for (int s = 0; s < slots; ++s) {
      k.push_back(all.slice(2 * s, 1).reshaped({batch, capacity, width}));
      v.push_back(all.slice(2 * s + 1, 1).reshaped({batch, capacity, width}));
    }
    return;
  }
  for (int s = 0; s < slots; ++s) {
    k.emplace_back(DType::f32, Shape{batch, capacity, width}, false);
    v.emplace_back(DType::f32, Shape{batch, capacity, width}, false);
  }
}

namespace {

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

const Tensor& weight_tensor(const WeightSet& w, int i, const Node& n, const char* what) {
  if (i < 0 || static_cast<size_t>(i) >= w.entries.size() || w.at(i).tensor.empty() ||
      w.at(i).tensor.dtype() != DType::f32)
    throw Error(n.name + ": " + what + " is not an f32 tensor in the weight set");
  return w.at(i).tensor;
}

// Output features of a linear node's weight (packed, or the f32 [N, K] matrix).
int64_t linear_n(const WeightSet& w, const Node& n) {
  const auto& e = w.at(n.attrs.weight);
  if (!e.packed.empty()) return e.packed.n();
  if (e.tensor.rank() != 2) throw Error(n.name + ": weight '" + e.name + "' is not a matrix");
  return e.kn_layout ? e.tensor.dim(1) : e.tensor.dim(0);
}

void run_linear(const Node& n, const WeightSet& w, std::vector<Tensor>& env) {
  const Tensor& x = env[n.inputs[0]];
  require_f32(x, n, "input");
  const auto& e = w.at(n.attrs.weight);
  kernels::PackedWeights local;
  const kernels::PackedWeights* packed = &e.packed;
  if (packed->empty()) {
    // The prepack pass is off: pack for this call only (as the model's weight type).
    local = pack_weight(e, w.gemm_type);
    packed = &local;
  }
  if (x.rank() < 1 || x.dim(-1) != packed->k())
    throw Error(n.name + ": input shape " + shape_str(x.shape()) + " has last dim " +
                std::to_string(x.rank() ? x.dim(-1) : 0) + ", expected " +
                std::to_string(packed->k()));
  const int64_t m = x.numel() / packed->k();
  Tensor& y = env[n.outputs[0]];
  k::Epilogue ep;
  ep.bias = w.f32(n.attrs.bias);
  ep.act = n.attrs.act;
  if (const Tensor* rp = optional_input(n, 1, env)) {
    const Tensor& r = *rp;
    if (r.shape() != y.shape())
      throw Error(n.name + ": residual shape " + shape_str(r.shape()) + " differs from output " +
                  shape_str(y.shape()));
    ep.residual = r.data<float>();
    ep.ld_residual = packed->n();
  }
  k::gemm(m, x.data<float>(), packed->k(), *packed, y.data<float>(), packed->n(), ep);
}

// The masks of an attention node (inputs 2 and 3) checked against [B, T, S], into `args`.
void attention_masks(const Node& n, const std::vector<Tensor>& env, int64_t batch, int64_t t_len,
                     int64_t s_len, k::AttentionArgs& args) {
  const auto& a = n.attrs;
  if (const Tensor* mp = optional_input(n, 2, env)) {
    const Tensor& m = *mp;
    const bool per_head = m.rank() == 3;
    // (No Shape is built on the good path: a run allocates nothing per node.)
    const bool ok2 = m.rank() == 2 && m.dim(0) == t_len && m.dim(1) == s_len;
    const bool ok3 =
        per_head && m.dim(0) == batch * a.heads && m.dim(1) == t_len && m.dim(2) == s_len;
    if (!ok2 && !ok3)
      throw Error(n.name + ": attention mask has shape " + shape_str(m.shape()) + ", expected " +
                  shape_str(Shape{t_len, s_len}) + " or " +
                  shape_str(Shape{batch * a.heads, t_len, s_len}));
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
    if (m.rank() != 2 || m.dim(0) != batch || m.dim(1) != s_len)
      throw Error(n.name + ": key padding mask has shape " + shape_str(m.shape()) + ", expected " +
                  shape_str(Shape{batch, s_len}));
    if (!is_bool_like(m.dtype()))
      throw Error(n.name + ": key padding mask must be BOOL or U8, got " + dtype_name(m.dtype()));
    args.key_padding = m.data<uint8_t>();
    args.kp_sb = s_len;
  }
}

void check_rank3(const Node& n, const Tensor& a, const Tensor& b) {
  if (a.rank() != 3 || b.rank() != 3 || a.dim(0) != b.dim(0))
    throw Error(n.name + ": expected [B, T, C] queries and [B, S, C] keys/values, got " +
                shape_str(a.shape()) + " and " + shape_str(b.shape()));
}

// Appends rows [.., col, col + width) of src [B, new_len, C] to `dst` (a KV-cache slot) at
// position ctx.past_len, after checking the cache can take them.
void append_to_cache(const Node& n, const Tensor& src, int64_t col, bool values, RunContext& ctx) {
  const auto& a = n.attrs;
  const int64_t width = a.heads * a.head_dim;
  const int64_t batch = src.dim(0), new_len = src.dim(1), c = src.dim(2);
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
  float* dst = (values ? cache->v : cache->k)[a.cache_slot].data<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < new_len; ++t)
      std::memcpy(dst + (b * cache->capacity + ctx.past_len + t) * width,
                  src.data<float>() + (b * new_len + t) * c + col, sizeof(float) * width);
}

// The cached attention of a batch whose rows have caches of their own (RunContext::rows): per
// row, its new keys and values are appended at its own length and its queries attend over its
// own cache: one attention per row (the call a batch of that row alone makes), the rows split
// over the threads. `args` holds the batch's query and output layout.
void run_attention_rows(const Node& n, std::vector<Tensor>& env, RunContext& ctx, const Tensor& qs,
                        const Tensor& kvs, const Tensor& vs, const k::AttentionArgs& args) {
  const auto& a = n.attrs;
  const int64_t batch = qs.dim(0), new_len = kvs.dim(1), width = a.heads * a.head_dim;
  if (static_cast<int64_t>(ctx.rows.size()) != batch)
    throw Error(n.name + ": " + std::to_string(ctx.rows.size()) + " row caches for a batch of " +
                std::to_string(batch));
  if (optional_input(n, 2, env) || optional_input(n, 3, env))
    throw Error(n.name + ": rows with caches of their own take no attention or padding mask");
  thread_local std::vector<k::AttentionArgs> per_row;
  per_row.resize(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const RunContext::RowCache& rc = ctx.rows[static_cast<size_t>(b)];
    KVCache* cache = rc.cache;
    if (!cache || a.cache_slot >= static_cast<int>(cache->k.size()) || cache->batch != 1 ||
        cache->width != width)
      throw Error(n.name + ": row " + std::to_string(b) + " has no KV cache slot " +
                  std::to_string(a.cache_slot) + " of batch 1 and width " + std::to_string(width));
    if (rc.past_len < 0 || rc.past_len + new_len > cache->capacity)
      throw Error(n.name + ": row " + std::to_string(b) + "'s KV cache capacity " +
                  std::to_string(cache->capacity) + " tokens exceeded");
    const float* ksrc = kvs.data<float>() + b * new_len * kvs.dim(2) + a.k_col;
    const float* vsrc = vs.data<float>() + b * new_len * vs.dim(2) + a.v_col;
    float* kdst = cache->k[a.cache_slot].data<float>();
    float* vdst = cache->v[a.cache_slot].data<float>();
    for (int64_t t = 0; t < new_len; ++t) {
      std::memcpy(kdst + (rc.past_len + t) * width, ksrc + t * kvs.dim(2), sizeof(float) * width);
      std::memcpy(vdst + (rc.past_len + t) * width, vsrc + t * vs.dim(2), sizeof(float) * width);
    }
    k::AttentionArgs& r = per_row[static_cast<size_t>(b)];
    r = args;
    r.batch = 1;
    r.q = args.q + b * args.q_sb;
    r.out = args.out + b * args.o_sb;
    r.kv_len = rc.past_len + new_len;
    r.k = kdst;
    r.v = vdst;
    r.k_sb = r.v_sb = cache->capacity * width;
    r.k_ss = r.v_ss = width;
    r.k_sh = r.v_sh = a.head_dim;
    r.causal_offset = rc.past_len;
  }
  k::attention_many(per_row.data(), batch);
}

void run_attention(const Node& n, std::vector<Tensor>& env, RunContext& ctx) {
  const auto& a = n.attrs;
  const Tensor& qs = env[n.inputs[0]];
  const Tensor& kvs = env[n.inputs[1]];
  const Tensor* vsp = optional_input(n, 4, env);
  const Tensor& vs = vsp ? *vsp : kvs;
  require_f32(qs, n, "queries");
  require_f32(kvs, n, "keys/values");
  require_f32(vs, n, "values");
  const int64_t width = a.heads * a.head_dim;
  check_rank3(n, qs, kvs);
  check_rank3(n, qs, vs);
  if (vs.dim(1) != kvs.dim(1))
    throw Error(n.name + ": keys " + shape_str(kvs.shape()) + " and values " +
                shape_str(vs.shape()) + " differ in length");
  const int64_t batch = qs.dim(0), q_len = qs.dim(1), new_len = kvs.dim(1);
  const int64_t cq = qs.dim(2), ck = kvs.dim(2), cv = vs.dim(2);
  if (a.q_col + width > cq || a.k_col + width > ck || a.v_col + width > cv)
    throw Error(n.name + ": projection widths " + shape_str(qs.shape()) + "/" +
                shape_str(kvs.shape()) + " are too narrow for " + std::to_string(a.heads) +
                " heads of " + std::to_string(a.head_dim));

  Tensor& out = env[n.outputs[0]];
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

  if (a.cache_slot >= 0 && !ctx.rows.empty()) {
    run_attention_rows(n, env, ctx, qs, kvs, vs, args);
    return;
  }
  if (a.cache_slot >= 0) {
    append_to_cache(n, kvs, a.k_col, false, ctx);
    append_to_cache(n, vs, a.v_col, true, ctx);
    KVCache* cache = ctx.cache;
    args.kv_len = ctx.past_len + new_len;
    args.k = cache->k[a.cache_slot].data<float>();
    args.v = cache->v[a.cache_slot].data<float>();
    args.k_sb = args.v_sb = cache->capacity * width;
    args.k_ss = args.v_ss = width;
    args.causal_offset = ctx.past_len;
  } else {
    args.kv_len = new_len;
    args.k = kvs.data<float>() + a.k_col;
    args.v = vs.data<float>() + a.v_col;
    args.k_sb = new_len * ck;
    args.k_ss = ck;
    args.v_sb = new_len * cv;
    args.v_ss = cv;
  }
  args.k_sh = args.v_sh = a.head_dim;
  attention_masks(n, env, batch, q_len, args.kv_len, args);
  k::attention(args);
}

// Unfused attention, first half: scores[b, h, t, s] = scale * q·k + masks (-inf where a key is
// not allowed), with the same mask semantics as kernels::attention.
void run_attention_scores(const Node& n, std::vector<Tensor>& env, RunContext& ctx) {
  const auto& a = n.attrs;
  if (a.cache_slot >= 0 && !ctx.rows.empty())
    throw Error(n.name +
                ": rows with KV caches of their own need the fused attention (graph pass "
                "fuse_attention)");
  const Tensor& qs = env[n.inputs[0]];
  const Tensor& ks = env[n.inputs[1]];
  require_f32(qs, n, "queries");
  require_f32(ks, n, "keys");
  check_rank3(n, qs, ks);
  const int64_t width = a.heads * a.head_dim, d_len = a.head_dim;
  const int64_t batch = qs.dim(0), t_len = qs.dim(1), new_len = ks.dim(1);
  const int64_t cq = qs.dim(2), ck = ks.dim(2);
  if (a.q_col + width > cq || a.k_col + width > ck)
    throw Error(n.name + ": projection widths " + shape_str(qs.shape()) + "/" +
                shape_str(ks.shape()) + " are too narrow for " + std::to_string(a.heads) +
                " heads of " + std::to_string(a.head_dim));
  const float* kbase = ks.data<float>() + a.k_col;
  int64_t k_sb = new_len * ck, k_ss = ck, s_len = new_len, causal_offset = 0;
  if (a.cache_slot >= 0) {
    append_to_cache(n, ks, a.k_col, false, ctx);
    kbase = ctx.cache->k[a.cache_slot].data<float>();
    k_sb = ctx.cache->capacity * width;
    k_ss = width;
    s_len = ctx.past_len + new_len;
    causal_offset = ctx.past_len;
  }
  k::AttentionArgs m;
  attention_masks(n, env, batch, t_len, s_len, m);
  Tensor& out = env[n.outputs[0]];
  const double scale = 1.0 / std::sqrt(static_cast<double>(d_len));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float* o = out.data<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < a.heads; ++h)
      for (int64_t t = 0; t < t_len; ++t) {
        const float* q = qs.data<float>() + b * t_len * cq + t * cq + a.q_col + h * d_len;
        float* row = o + ((b * a.heads + h) * t_len + t) * s_len;
        const int64_t mrow = (b * a.heads + h) * m.m_sbh + t * m.m_st;
        for (int64_t s = 0; s < s_len; ++s) {
          bool allowed = !(a.causal && s > t + causal_offset);
          if (m.key_padding && m.key_padding[b * m.kp_sb + s]) allowed = false;
          if (m.mask_bool && m.mask_bool[mrow + s]) allowed = false;
          if (!allowed) {
            row[s] = neg_inf;
            continue;
          }
          const float* kk = kbase + b * k_sb + s * k_ss + h * d_len;
          double dot = 0;
          for (int64_t d = 0; d < d_len; ++d)
            dot += static_cast<double>(q[d]) * static_cast<double>(kk[d]);
          float v = static_cast<float>(dot * scale);
          if (m.mask_add) v += m.mask_add[mrow + s];
          row[s] = v;
        }
      }
}

// Unfused attention, second half: out[b, t, h*D + d] = sum_s probs[b, h, t, s] * v[b, s, h*D + d].
void run_attention_context(const Node& n, std::vector<Tensor>& env, RunContext& ctx) {
  const auto& a = n.attrs;
  if (a.cache_slot >= 0 && !ctx.rows.empty())
    throw Error(n.name +
                ": rows with KV caches of their own need the fused attention (graph pass "
                "fuse_attention)");
  const Tensor& p = env[n.inputs[0]];
  const Tensor& vs = env[n.inputs[1]];
  require_f32(p, n, "probabilities");
  require_f32(vs, n, "values");
  const int64_t width = a.heads * a.head_dim, d_len = a.head_dim;
  if (p.rank() != 4 || vs.rank() != 3 || p.dim(0) != vs.dim(0) || p.dim(1) != a.heads)
    throw Error(n.name + ": expected [B, H, T, S] probabilities and [B, S, C] values, got " +
                shape_str(p.shape()) + " and " + shape_str(vs.shape()));
  const int64_t batch = p.dim(0), t_len = p.dim(2), s_len = p.dim(3);
  const int64_t new_len = vs.dim(1), cv = vs.dim(2);
  if (a.v_col + width > cv)
    throw Error(n.name + ": values " + shape_str(vs.shape()) + " are too narrow for " +
                std::to_string(a.heads) + " heads of " + std::to_string(a.head_dim));
  const float* vbase = vs.data<float>() + a.v_col;
  int64_t v_sb = new_len * cv, v_ss = cv, have = new_len;
  if (a.cache_slot >= 0) {
    append_to_cache(n, vs, a.v_col, true, ctx);
    vbase = ctx.cache->v[a.cache_slot].data<float>();
    v_sb = ctx.cache->capacity * width;
    v_ss = width;
    have = ctx.past_len + new_len;
  }
  if (have != s_len)
    throw Error(n.name + ": probabilities over " + std::to_string(s_len) + " keys, but " +
                std::to_string(have) + " values");
  Tensor& out = env[n.outputs[0]];
  thread_local std::vector<double> acc;
  acc.resize(static_cast<size_t>(d_len));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < a.heads; ++h)
      for (int64_t t = 0; t < t_len; ++t) {
        const float* pr = p.data<float>() + ((b * a.heads + h) * t_len + t) * s_len;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t s = 0; s < s_len; ++s) {
          if (pr[s] == 0.0f) continue;
          const float* v = vbase + b * v_sb + s * v_ss + h * d_len;
          for (int64_t d = 0; d < d_len; ++d)
            acc[d] += static_cast<double>(pr[s]) * static_cast<double>(v[d]);
        }
        float* o = out.data<float>() + (b * t_len + t) * width + h * d_len;
        for (int64_t d = 0; d < d_len; ++d) o[d] = static_cast<float>(acc[d]);
      }
}

void check_ids(const Node& n, const Tensor& ids, int64_t vocab) {
  if (ids.dtype() != DType::i64 || ids.rank() != 2)
    throw Error(n.name + ": token ids must be I64 [B, T], got " +
                std::string(dtype_name(ids.dtype())) + " " + shape_str(ids.shape()));
  const int64_t len = ids.dim(1);
  const int64_t* id = ids.data<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (id[i] < 0 || id[i] >= vocab)
      throw Error(n.name + ": token id " + std::to_string(id[i]) + " at [" +
                  std::to_string(i / len) + ", " + std::to_string(i % len) +
                  "] is out of range for vocabulary size " + std::to_string(vocab));
  }
}

// Position table rows for x [B, T, ..] starting at `offset`; checks they exist.
const float* positions_for(const Node& n, const WeightSet& w, int64_t offset, int64_t len) {
  const Tensor& pt = weight_tensor(w, n.attrs.pos_table, n, "positional table");
  if (offset + len > pt.dim(0))
    throw Error(n.name + ": sequence of " + std::to_string(offset + len) +
                " positions exceeds max_position " + std::to_string(pt.dim(0)));
  return pt.data<float>();
}

// An embedding table is an f32 [vocab, dim] tensor, or (a tied LM head whose f32 original the
// prepack pass dropped) the packed weights of that head: rows read with kernels::packed_rows.
const kernels::PackedWeights* packed_table(const WeightSet& w, const Node& n) {
  const int i = n.attrs.table;
  if (i >= 0 && static_cast<size_t>(i) < w.entries.size() && w.at(i).tensor.empty() &&
      !w.at(i).packed.empty())
    return &w.at(i).packed;
  return nullptr;
}
Shape table_shape(const WeightSet& w, const Node& n) {
  if (const auto* p = packed_table(w, n)) return Shape{p->n(), p->k()};
  return weight_tensor(w, n.attrs.table, n, "embedding table").shape();
}

// Position of a node's first new token when it counts positions from the cache.
int64_t positions_offset(const Node& n, const RunContext& ctx) {
  if (!n.attrs.positions_from_cache) return 0;
  if (!ctx.rows.empty())
    throw Error(n.name +
                ": positions from the cache are undefined for rows with caches of "
                "their own (give explicit positions)");
  return ctx.past_len;
}

void run_embedding(const Node& n, const WeightSet& w, std::vector<Tensor>& env,
                   const RunContext& ctx) {
  const Tensor& ids = env[n.inputs[0]];
  if (const auto* packed = packed_table(w, n)) {
    check_ids(n, ids, packed->n());
    const int64_t dim = packed->k(), len = ids.dim(1), rows = ids.numel();
    float* y = env[n.outputs[0]].data<float>();
    k::packed_rows(*packed, ids.data<int64_t>(), rows, y, dim);
    const int64_t offset = positions_offset(n, ctx);
    const float* pt = n.attrs.pos_table >= 0 ? positions_for(n, w, offset, len) : nullptr;
    if (n.attrs.scale != 1.0f || pt)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < dim; ++i)
          y[r * dim + i] =
              y[r * dim + i] * n.attrs.scale + (pt ? pt[(offset + r % len) * dim + i] : 0.0f);
    return;
  }
  const Tensor& table = weight_tensor(w, n.attrs.table, n, "embedding table");
  check_ids(n, ids, table.dim(0));
  const int64_t dim = table.dim(1), len = ids.dim(1);
  const int64_t offset = positions_offset(n, ctx);
  const float* pos_table = n.attrs.pos_table >= 0 ? positions_for(n, w, offset, len) : nullptr;
  // Position of each row: a scratch buffer that only grows (no allocation once warm).
  thread_local std::vector<int64_t> positions;
  if (pos_table) {
    if (positions.size() < static_cast<size_t>(ids.numel()))
      positions.resize(static_cast<size_t>(ids.numel()));
    for (int64_t i = 0; i < ids.numel(); ++i) positions[i] = offset + i % len;
  }
  k::embedding(ids.numel(), ids.data<int64_t>(), table.data<float>(), dim, n.attrs.scale,
               pos_table ? positions.data() : nullptr, pos_table, env[n.outputs[0]].data<float>(),
               dim);
}

void run_node(const Node& n, const WeightSet& w, std::vector<Tensor>& env, RunContext& ctx) {
  switch (n.op) {
    case Op::linear:
      run_linear(n, w, env);
      return;
    case Op::attention:
      run_attention(n, env, ctx);
      return;
    case Op::attention_scores:
      run_attention_scores(n, env, ctx);
      return;
    case Op::attention_context:
      run_attention_context(n, env, ctx);
      return;
    case Op::embedding:
      run_embedding(n, w, env, ctx);
      return;
    case Op::gather: {
      const Tensor& ids = env[n.inputs[0]];
      if (const auto* packed = packed_table(w, n)) {
        check_ids(n, ids, packed->n());
        k::packed_rows(*packed, ids.data<int64_t>(), ids.numel(), env[n.outputs[0]].data<float>(),
                       packed->k());
        return;
      }
      const Tensor& table = weight_tensor(w, n.attrs.table, n, "embedding table");
      check_ids(n, ids, table.dim(0));
      k::embedding(ids.numel(), ids.data<int64_t>(), table.data<float>(), table.dim(1), 1.0f,
                   nullptr, nullptr, env[n.outputs[0]].data<float>(), table.dim(1));
      return;
    }
    case Op::add_positions: {
      const Tensor& x = env[n.inputs[0]];
      require_f32(x, n, "input");
      if (x.rank() != 3) throw Error(n.name + ": expected [B, T, C], got " + shape_str(x.shape()));
      const int64_t batch = x.dim(0), len = x.dim(1), dim = x.dim(2);
      const int64_t offset = positions_offset(n, ctx);
      const float* pt = positions_for(n, w, offset, len);
      if (w.at(n.attrs.pos_table).tensor.dim(1) != dim)
        throw Error(n.name + ": positional table width differs from the input's " +
                    std::to_string(dim));
      float* y = env[n.outputs[0]].data<float>();
      const float* xs = x.data<float>();
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t t = 0; t < len; ++t)
          for (int64_t i = 0; i < dim; ++i)
            y[(b * len + t) * dim + i] = xs[(b * len + t) * dim + i] + pt[(offset + t) * dim + i];
      return;
    }
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
      float* sum = n.outputs.size() > 1 ? env[n.outputs[1]].data<float>() : nullptr;
      k::add_layernorm_rows(x.numel() / dim, dim, x.data<float>(), dim, residual, dim,
                            w.f32(n.attrs.gamma), w.f32(n.attrs.beta), n.attrs.eps,
                            env[n.outputs[0]].data<float>(), dim, sum, dim);
      return;
    }
    case Op::add: {
      const Tensor& a = env[n.inputs[0]];
      const Tensor& b = env[n.inputs[1]];
      if (a.shape() != b.shape())
        throw Error(n.name + ": shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                    " differ");
      k::add(a.numel(), a.data<float>(), b.data<float>(), env[n.outputs[0]].data<float>());
      return;
    }
    case Op::bias_add: {
      const Tensor& x = env[n.inputs[0]];
      require_f32(x, n, "input");
      const Tensor& bias = weight_tensor(w, n.attrs.bias, n, "bias");
      const int64_t dim = x.dim(-1);
      if (bias.numel() != dim)
        throw Error(n.name + ": bias of " + std::to_string(bias.numel()) +
                    " elements for rows of " + std::to_string(dim));
      float* y = env[n.outputs[0]].data<float>();
      const float* xs = x.data<float>();
      const float* bs = bias.data<float>();
      for (int64_t r = 0; r < x.numel() / dim; ++r)
        for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = xs[r * dim + i] + bs[i];
      return;
    }
    case Op::scale: {
      const Tensor& x = env[n.inputs[0]];
      require_f32(x, n, "input");
      float* y = env[n.outputs[0]].data<float>();
      const float s = n.attrs.scale;
      for (int64_t i = 0; i < x.numel(); ++i) y[i] = x.data<float>()[i] * s;
      return;
    }
    case Op::activation: {
      const Tensor& x = env[n.inputs[0]];
      require_f32(x, n, "input");
      k::activation(x.numel(), x.data<float>(), env[n.outputs[0]].data<float>(), n.attrs.act);
      return;
    }
    case Op::softmax: {
      const Tensor& x = env[n.inputs[0]];
      require_f32(x, n, "input");
      const int64_t dim = x.dim(-1);
      k::softmax_rows(x.numel() / dim, dim, x.data<float>(), dim, env[n.outputs[0]].data<float>(),
                      dim);
      return;
    }
    case Op::constant:
      return;  // its value is the weight itself (set up with the plan)
    case Op::rnn_cell:
    case Op::additive_attention:
      break;  // the rnn_attention family runs these itself
  }
  throw Error(n.name + ": unknown operator");
}

}  // namespace

namespace {

[[noreturn]] void shape_error(const Node& n, const std::string& what) {
  throw Error(n.name + ": " + what);
}

}  // namespace

std::vector<Shape> infer_shapes(const Graph& graph, const TensorMap& inputs, int64_t past_len) {
  const auto& values = graph.values();
  const WeightSet& w = graph.weights();
  std::vector<Shape> s(values.size());
  std::vector<bool> have(values.size(), false);
  for (ValueId id : graph.inputs()) {
    auto it = inputs.find(values[id].name);
    if (it != inputs.end()) {
      s[id] = it->second.shape();
      have[id] = true;
    } else if (!values[id].optional) {
      throw Error("missing input '" + values[id].name + "'");
    }
  }
  for (const auto& n : graph.nodes()) {
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const ValueId v = n.inputs[i];
      if (v != kNone && !have[v] && !values[v].optional)
        shape_error(n, "input '" + values[v].name + "' has no value");
    }
    auto in = [&](size_t i) -> const Shape& { return s[n.inputs.at(i)]; };
    Shape out;
    switch (n.op) {
      case Op::linear: {
        if (in(0).empty()) shape_error(n, "input must have at least one dimension");
        out = in(0);
        out.back() = linear_n(w, n);
        break;
      }
      case Op::attention:
      case Op::attention_context: {
        const Shape& x = in(0);
        if (n.op == Op::attention ? x.size() != 3 : x.size() != 4)
          shape_error(n, "unexpected input shape " + shape_str(x));
        out = Shape{x[0], n.op == Op::attention ? x[1] : x[2], n.attrs.heads * n.attrs.head_dim};
        break;
      }
      case Op::attention_scores: {
        const Shape& q = in(0);
        const Shape& k = in(1);
        if (q.size() != 3 || k.size() != 3)
          shape_error(n, "expected [B, T, C] queries and [B, S, C] keys, got " + shape_str(q) +
                             " and " + shape_str(k));
        const int64_t s_len = k[1] + (n.attrs.cache_slot >= 0 ? past_len : 0);
        out = Shape{q[0], n.attrs.heads, q[1], s_len};
        break;
      }
      case Op::embedding:
      case Op::gather: {
        const Shape table = table_shape(w, n);
        if (in(0).size() != 2) shape_error(n, "token ids must be [B, T], got " + shape_str(in(0)));
        out = Shape{in(0)[0], in(0)[1], table[1]};
        break;
      }
      case Op::constant:
        out = weight_tensor(w, n.attrs.weight, n, "constant").shape();
        break;
      case Op::rnn_cell:
      case Op::additive_attention:
        shape_error(n, "operator of the rnn_attention family: not run by the executor");
      case Op::layernorm:
      case Op::add:
      case Op::activation:
      case Op::softmax:
      case Op::bias_add:
      case Op::scale:
      case Op::add_positions:
        if (in(0).empty()) shape_error(n, "input must have at least one dimension");
        out = in(0);
        break;
    }
    shape_numel(out);  // throws on overflow
    for (ValueId o : n.outputs)
      if (o != kNone) {
        s[o] = out;
        have[o] = true;
      }
  }
  return s;
}

struct GraphSession::Cached {
  MemoryPlan plan;
  std::vector<Tensor> env;  // arena views and constants; inputs are assigned per run
  uint64_t generation = ~uint64_t{0};
  std::vector<Shape> shapes;
};

GraphSession::GraphSession(const Graph& graph) : graph_(graph) {
  for (const auto& n : graph.nodes())
    if (n.op == Op::attention_scores && n.attrs.cache_slot >= 0) shapes_need_past_ = true;
}

GraphSession::~GraphSession() = default;

size_t GraphSession::arena_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arena_.nbytes();
}

size_t GraphSession::cached_plans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_.size();
}

GraphSession::Cached& GraphSession::lookup(const TensorMap& inputs, int64_t past_len) {
  const auto& values = graph_.values();
  key_.clear();
  for (ValueId id : graph_.inputs()) {
    auto it = inputs.find(values[id].name);
    if (it == inputs.end()) {
      key_.push_back(-1);
      continue;
    }
    const Tensor& t = it->second;
    key_.push_back(static_cast<int64_t>(t.dtype()));
    key_.push_back(t.rank());
    for (int64_t d : t.shape()) key_.push_back(d);
  }
  if (shapes_need_past_) key_.push_back(past_len);
  auto it = plans_.find(key_);
  if (it != plans_.end()) return *it->second;

  auto c = std::make_unique<Cached>();
  c->shapes = infer_shapes(graph_, inputs, past_len);
  std::vector<size_t> bytes(values.size(), 0);
  std::vector<bool> external(values.size(), false);
  for (ValueId id : graph_.inputs()) external[id] = true;
  for (const auto& n : graph_.nodes())
    if (n.op == Op::constant)
      for (ValueId o : n.outputs) external[o] = true;
  // Every value, then the arena, checked against physical memory before it is allocated (each
  // value fits, so the planner's sums cannot overflow).
  const uint64_t memory = physical_memory_bytes();
  for (size_t v = 0; v < values.size(); ++v) {
    const auto numel = static_cast<uint64_t>(shape_numel(c->shapes[v]));
    if (__builtin_mul_overflow(numel, sizeof(float), &bytes[v]) || bytes[v] > memory) {
      const std::string what = "activation '" + values[v].name + "' " + shape_str(c->shapes[v]);
      check_fits_memory(checked_mul(numel, sizeof(float), what), "the activations (" + what + ")");
    }
  }
  c->plan = plan_memory(graph_, bytes, external);
  check_fits_memory(c->plan.arena_bytes, "the activations of this batch (arena of " +
                                             std::to_string(values.size()) + " values)");
  c->env.resize(values.size());
  if (plans_.size() >= 256) plans_.clear();  // decode steps of many lengths: keep it bounded
  return *plans_.emplace(key_, std::move(c)).first->second;
}

const MemoryPlan& GraphSession::plan(const TensorMap& inputs, int64_t past_len) {
  std::lock_guard<std::mutex> lock(mu_);
  return lookup(inputs, past_len).plan;
}

TensorMap GraphSession::run(const TensorMap& inputs, RunContext& ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  Cached& c = lookup(inputs, ctx.past_len);
  const auto& values = graph_.values();
  if (arena_.nbytes() < c.plan.arena_bytes) {
    arena_ = Tensor(DType::u8, Shape{static_cast<int64_t>(c.plan.arena_bytes)}, false);
    ++arena_generation_;
  }
  if (c.generation != arena_generation_) {
    auto* base = arena_.data<uint8_t>();
    for (size_t v = 0; v < values.size(); ++v)
      if (c.plan.offset[v] >= 0)
        c.env[v] = Tensor::view(DType::f32, c.shapes[v], base + c.plan.offset[v], nullptr);
    for (const auto& n : graph_.nodes())
      if (n.op == Op::constant) c.env[n.outputs[0]] = graph_.weights().at(n.attrs.weight).tensor;
    c.generation = arena_generation_;
  }
  std::vector<Tensor>& env = c.env;
  for (ValueId id : graph_.inputs()) {
    auto it = inputs.find(values[id].name);
    if (it != inputs.end())
      env[id] = it->second;
    else
      env[id] = Tensor();
  }
  for (const auto& n : graph_.nodes()) {
    if (ctx.observer) {
      ctx.observer->before(graph_, n, env, ctx);
      run_node(n, graph_.weights(), env, ctx);
      ctx.observer->after(graph_, n, env, ctx);
    } else {
      run_node(n, graph_.weights(), env, ctx);
    }
  }
  // Outputs get their own memory: the arena is overwritten by the next run.
  TensorMap out;
  for (ValueId v : graph_.outputs()) {
    const Tensor& t = env[v];
    Tensor copy(t.dtype(), t.shape(), false);
    if (t.nbytes()) std::memcpy(copy.raw(), t.raw(), t.nbytes());
    out.emplace(values[v].name, std::move(copy));
  }
  return out;
}

namespace {
thread_local SessionSet* t_bound_sessions = nullptr;
}  // namespace

GraphSession& SessionSet::get(const Graph& graph) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& s = sessions_[&graph];
  if (!s) s = std::make_unique<GraphSession>(graph);
  return *s;
}

size_t SessionSet::arena_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [graph, s] : sessions_) n += s->arena_bytes();
  return n;
}

SessionSet& SessionSet::current_or(SessionSet& fallback) {
  return t_bound_sessions ? *t_bound_sessions : fallback;
}

SessionSet::Bind::Bind(SessionSet& set) : previous_(t_bound_sessions) {
  t_bound_sessions = &set;
}

SessionSet::Bind::~Bind() {
  t_bound_sessions = previous_;
}

TensorMap execute(const Graph& graph, const TensorMap& inputs, RunContext& ctx) {
  GraphSession s(graph);
  return s.run(inputs, ctx);
}

}  // namespace tessera
