// attention_scores -> softmax -> attention_context  ->  attention: masked multi-head attention
// in one node whose kernel never materializes the [B, H, T, S] scores.
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

int sole_reader_at(const Graph& g, ValueId v, Op op, int slot) {
  if (detail::use_count(g, v) != 1) return -1;
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i)
    for (size_t j = 0; j < nodes[i].inputs.size(); ++j)
      if (nodes[i].inputs[j] == v)
        return nodes[i].op == op && static_cast<int>(j) == slot ? static_cast<int>(i) : -1;
  return -1;
}

bool apply_one(Graph& g) {
  auto& nodes = g.mutable_nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& s = nodes[i];
    if (s.op != Op::attention_scores) continue;
    const int p = sole_reader_at(g, s.outputs[0], Op::softmax, 0);
    if (p < 0) continue;
    const int c = sole_reader_at(g, nodes[p].outputs[0], Op::attention_context, 0);
    if (c < 0) continue;
    const Node& ctx = nodes[c];
    if (ctx.attrs.heads != s.attrs.heads || ctx.attrs.head_dim != s.attrs.head_dim ||
        ctx.attrs.cache_slot != s.attrs.cache_slot)
      continue;
    Node fused;
    fused.op = Op::attention;
    const std::string suffix = ".scores";
    fused.name = s.name.size() > suffix.size() &&
                         s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) == 0
                     ? s.name.substr(0, s.name.size() - suffix.size())
                     : s.name + ".attention";
    fused.attrs = s.attrs;
    fused.attrs.v_col = ctx.attrs.v_col;
    fused.inputs = s.inputs;
    fused.inputs.resize(4, kNone);
    if (ctx.inputs[1] != s.inputs[1]) fused.inputs.push_back(ctx.inputs[1]);  // separate v
    fused.outputs = ctx.outputs;
    std::vector<bool> dead(nodes.size(), false);
    dead[i] = dead[p] = true;
    nodes[c] = std::move(fused);
    detail::name_outputs(g, nodes[c]);
    detail::erase_nodes(g, dead);
    return true;
  }
  return false;
}

}  // namespace

int fuse_attention(Graph& g) {
  int n = 0;
  while (apply_one(g)) ++n;
  return n;
}

}  // namespace tessera::passes
