// The q, k and v projections of one attention, when they read the same input, become one
// linear whose output columns are [q | k | v] (self-attention); the k and v projections of a
// cross-attention (both over the encoder's memory) become one [k | v] linear. The attention
// nodes then read their operands at column offsets of the fused output. The weights (and
// biases) are concatenated: a view when they are consecutive rows of one matrix (nn.Transformer's
// in_proj_weight), else a copy, shared by every graph over the same WeightSet. Weights held as
// stored in reduced precision (BF16, I8 with its per-row scales) are joined in that dtype: a
// per-output-channel conversion of the joined rows is that of each part.
#include <cstring>
#include <optional>

#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

enum Field { kQ, kK, kV };

struct Ref {
  int node;
  int slot;
  Field field;
};

struct Site {
  ValueId q = kNone, k = kNone, v = kNone;
  std::vector<Ref> refs;
};

int64_t& col(Node& n, Field f) {
  return f == kQ ? n.attrs.q_col : f == kK ? n.attrs.k_col : n.attrs.v_col;
}

// The attention at node i and where it reads q, k and v: an attention node with a separate v
// input, or attention_scores -> softmax -> attention_context.
std::optional<Site> site_at(const Graph& g, int i) {
  const auto& nodes = g.nodes();
  const Node& n = nodes[i];
  if (n.op == Op::attention && n.inputs.size() >= 5 && n.inputs[4] != kNone)
    return Site{n.inputs[0], n.inputs[1], n.inputs[4], {{i, 0, kQ}, {i, 1, kK}, {i, 4, kV}}};
  if (n.op != Op::attention_scores) return std::nullopt;
  const auto chain = detail::follow(g, i, {Op::softmax, Op::attention_context});
  if (chain.empty()) return std::nullopt;
  const int c = chain[1];
  return Site{n.inputs[0], n.inputs[1], nodes[c].inputs[1], {{i, 0, kQ}, {i, 1, kK}, {c, 1, kV}}};
}

// The producer of v if it is a plain-or-biased linear (no activation, no residual) whose output
// is read only by the given references; else -1.
int projection(const Graph& g, ValueId v, const Site& s) {
  if (v == kNone) return -1;
  const int p = detail::producer(g, v);
  if (p < 0) return -1;
  const Node& n = g.nodes()[p];
  if (n.op != Op::linear || n.inputs.size() != 1 || n.attrs.act != kernels::Activation::none)
    return -1;
  int refs = 0;
  for (const auto& r : s.refs)
    if (g.nodes()[r.node].inputs[r.slot] == v) ++refs;
  return detail::use_count(g, v) == refs ? p : -1;
}

// Concatenation of weight entries (rows) ids; -1 if they cannot be (packed already, or K
// differs). Missing biases (-1) are zeros of `rows[i]` elements when others have one.
int concat(WeightSet& ws, const std::vector<int>& ids, const std::vector<int64_t>& rows,
           const std::string& name) {
  bool any = false;
  for (int id : ids) any = any || id >= 0;
  if (!any) return -1;
  auto memo = ws.concatenated.find(ids);
  if (memo != ws.concatenated.end()) return memo->second;
  // Consecutive rows of one base: a view.
  bool consecutive = true;
  for (size_t i = 0; i < ids.size() && consecutive; ++i) {
    if (ids[i] < 0 || ws.at(ids[i]).base.empty() || ws.at(ids[i]).tensor.empty()) {
      consecutive = false;
      break;
    }
    const auto& e = ws.at(ids[i]);
    const auto& first = ws.at(ids[0]);
    if (e.base.raw() != first.base.raw() || e.base.shape() != first.base.shape())
      consecutive = false;
    if (i > 0) {
      const auto& prev = ws.at(ids[i - 1]);
      if (e.base_row != prev.base_row + prev.tensor.dim(0)) consecutive = false;
    }
  }
  int out = -1;
  bool present = true;  // every part has a tensor (weights; biases may be missing)
  for (int id : ids) present = present && id >= 0 && !ws.at(id).tensor.empty();
  if (consecutive) {
    const auto& first = ws.at(ids[0]);
    int64_t total = 0;
    for (int id : ids) total += ws.at(id).tensor.dim(0);
    const Tensor base = first.base, base_scale = first.base_scale;
    const bool mapped = first.mapped;
    auto sources = first.sources;
    out = ws.add_rows(name, base, first.base_row, total, mapped, base_scale, std::move(sources));
  } else if (present) {
    // Weights in any dtype (F32, or BF16 / I8 as stored): joined in that dtype.
    for (int id : ids)
      if (ws.at(id).kn_layout) return -1;
    const Tensor& t0 = ws.at(ids[0]).tensor;
    for (size_t i = 0; i < ids.size(); ++i) {
      const Tensor& t = ws.at(ids[i]).tensor;
      if (t.dim(0) != rows[i] || t.rank() != t0.rank() || (t.rank() == 2 && t.dim(1) != t0.dim(1)))
        return -1;
    }
    const DType dt = ws.at(ids[0]).tensor.dtype();
    for (int id : ids)
      if ((ws.at(id).tensor.dtype() == DType::i8) != (dt == DType::i8)) return -1;
    out = ws.add_concat(name, ids);
  } else {
    int64_t total = 0, width = -1;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= 0) {
        const Tensor& t = ws.at(ids[i]).tensor;
        if (t.empty() || t.dtype() != DType::f32 || t.dim(0) != rows[i]) return -1;
        const int64_t w = t.rank() == 2 ? t.dim(1) : 1;
        if (width >= 0 && w != width) return -1;
        width = w;
      }
      total += rows[i];
    }
    const bool matrix = ids[0] >= 0 ? ws.at(ids[0]).tensor.rank() == 2 : false;
    Tensor t(DType::f32, matrix ? Shape{total, width} : Shape{total});
    int64_t at = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= 0)
        std::memcpy(t.data<float>() + at * width, ws.at(ids[i]).tensor.raw(),
                    static_cast<size_t>(rows[i] * width) * sizeof(float));
      at += rows[i];
    }
    out = ws.add(name, std::move(t));
  }
  ws.concatenated[ids] = out;
  return out;
}

std::string fused_name(const std::string& first, const char* what) {
  const size_t dot = first.rfind('.');
  return (dot == std::string::npos ? first : first.substr(0, dot)) + "." + what;
}

bool rewrite_at(Graph& g, int i) {
  WeightSet* ws = g.mutable_weights();
  if (!ws) return false;
  const auto site = site_at(g, i);
  if (!site) return false;
  const Site& s = *site;
  const int pq = projection(g, s.q, s), pk = projection(g, s.k, s), pv = projection(g, s.v, s);
  if (pk < 0 || pv < 0 || s.k == s.v || pk == pv) return false;
  auto& nodes = g.mutable_nodes();
  const ValueId x = nodes[pk].inputs[0];
  if (nodes[pv].inputs[0] != x) return false;
  std::vector<int> parts;
  if (pq >= 0 && pq != pk && pq != pv && s.q != s.k && s.q != s.v && nodes[pq].inputs[0] == x)
    parts.push_back(pq);
  parts.push_back(pk);
  parts.push_back(pv);
  // Rows of each weight; every weight must still be an f32 matrix of the same K.
  std::vector<int> wid, bid;
  std::vector<int64_t> rows;
  bool ok = true;
  for (int p : parts) {
    const auto& e = ws->at(nodes[p].attrs.weight);
    if (e.tensor.empty() || e.tensor.rank() != 2 || e.kn_layout) ok = false;
    if (!ok) break;
    wid.push_back(nodes[p].attrs.weight);
    bid.push_back(nodes[p].attrs.bias);
    rows.push_back(e.tensor.dim(0));
  }
  if (!ok) return false;
  const char* what = parts.size() == 3 ? "qkv_proj" : "kv_proj";
  const std::string name = fused_name(nodes[parts[0]].name, what);
  const int weight = concat(*ws, wid, rows, name + ".weight");
  if (weight < 0) return false;
  const int bias = concat(*ws, bid, rows, name + ".bias");

  Node fused;
  fused.op = Op::linear;
  fused.name = name;
  fused.inputs = {x};
  fused.attrs.weight = weight;
  fused.attrs.bias = bias;
  const ValueId out = g.add_value(name + ":out");
  fused.outputs = {out};
  // Column offset of each part's output within the fused one.
  std::vector<std::pair<ValueId, int64_t>> offset;
  int64_t at = 0;
  for (size_t j = 0; j < parts.size(); ++j) {
    offset.emplace_back(nodes[parts[j]].outputs[0], at);
    at += rows[j];
  }
  for (const auto& r : s.refs) {
    Node& n = nodes[r.node];
    for (const auto& [v, off] : offset)
      if (n.inputs[r.slot] == v) {
        n.inputs[r.slot] = out;
        col(n, r.field) += off;
      }
  }
  // An attention node now reading k and v from one value needs no separate v input.
  for (const auto& r : s.refs) {
    Node& n = nodes[r.node];
    if (n.op == Op::attention && n.inputs.size() >= 5 && n.inputs[4] == n.inputs[1])
      n.inputs.resize(4);
  }
  int first = parts[0];
  for (int p : parts) first = std::min(first, p);
  std::vector<bool> dead(nodes.size(), false);
  for (int p : parts) dead[p] = p != first;
  detail::replace(g, first, std::move(fused), dead);
  return true;
}

}  // namespace

int fuse_qkv(Graph& g) {
  return detail::rewrite_all(g, rewrite_at);
}

}  // namespace tessera::passes
