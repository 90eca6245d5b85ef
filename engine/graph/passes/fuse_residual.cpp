// add(linear(x), r)  ->  linear(x, residual r): the GEMM epilogue adds r while the tile is hot
// (after bias and activation, so only a linear without a residual yet qualifies).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool rewrite_at(Graph& g, int i) {
  const auto& nodes = g.nodes();
  const Node& add = nodes[i];
  if (add.op != Op::add || add.inputs.size() != 2) return false;
  // Prefer the operand computed last as the GEMM (the other is the residual stream).
  int best = -1, best_slot = -1;
  for (int slot = 0; slot < 2; ++slot) {
    const ValueId v = add.inputs[slot];
    if (v == add.inputs[1 - slot]) continue;  // add(y, y)
    const int p = detail::producer(g, v);
    if (p < 0 || nodes[p].op != Op::linear || nodes[p].inputs.size() != 1) continue;
    if (detail::use_count(g, v) != 1) continue;
    if (p > best) {
      best = p;
      best_slot = slot;
    }
  }
  if (best < 0) return false;
  Node fused = nodes[best];
  fused.inputs.push_back(add.inputs[1 - best_slot]);
  fused.outputs = add.outputs;
  detail::replace(g, i, std::move(fused), {best});
  return true;
}

}  // namespace

int fuse_residual(Graph& g) {
  return detail::rewrite_all(g, rewrite_at);
}

}  // namespace tessera::passes
