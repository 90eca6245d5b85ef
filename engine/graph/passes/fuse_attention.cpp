// attention_scores -> softmax -> attention_context  ->  attention: masked multi-head attention
// in one node whose kernel never materializes the [B, H, T, S] scores.
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool rewrite_at(Graph& g, int i) {
  const auto& nodes = g.nodes();
  const Node& s = nodes[i];
  if (s.op != Op::attention_scores) return false;
  const auto chain = detail::follow(g, i, {Op::softmax, Op::attention_context});
  if (chain.empty()) return false;
  const int p = chain[0], c = chain[1];
  const Node& ctx = nodes[c];
  if (ctx.attrs.heads != s.attrs.heads || ctx.attrs.head_dim != s.attrs.head_dim ||
      ctx.attrs.cache_slot != s.attrs.cache_slot)
    return false;
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
  detail::replace(g, c, std::move(fused), {i, p});
  return true;
}

}  // namespace

int fuse_attention(Graph& g) {
  return detail::rewrite_all(g, rewrite_at);
}

}  // namespace tessera::passes
