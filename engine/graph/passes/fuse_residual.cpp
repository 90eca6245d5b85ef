// add(linear(x), r)  ->  linear(x, residual r): the GEMM epilogue adds r while the tile is hot
// (after bias and activation, so only a linear without a residual yet qualifies).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool apply_one(Graph& g) {
  auto& nodes = g.mutable_nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].op != Op::add || nodes[i].inputs.size() != 2) continue;
    // Prefer the operand computed last as the GEMM (the other is the residual stream).
    int best = -1, best_slot = -1;
    for (int slot = 0; slot < 2; ++slot) {
      const ValueId v = nodes[i].inputs[slot];
      if (v == nodes[i].inputs[1 - slot]) continue;  // add(y, y)
      const int p = detail::producer(g, v);
      if (p < 0 || nodes[p].op != Op::linear || nodes[p].inputs.size() != 1) continue;
      if (detail::use_count(g, v) != 1) continue;
      if (p > best) {
        best = p;
        best_slot = slot;
      }
    }
    if (best < 0) continue;
    Node fused = nodes[best];
    fused.inputs.push_back(nodes[i].inputs[1 - best_slot]);
    fused.outputs = nodes[i].outputs;
    std::vector<bool> dead(nodes.size(), false);
    dead[best] = true;
    nodes[i] = std::move(fused);
    detail::name_outputs(g, nodes[i]);
    detail::erase_nodes(g, dead);
    return true;
  }
  return false;
}

}  // namespace

int fuse_residual(Graph& g) {
  int n = 0;
  while (apply_one(g)) ++n;
  return n;
}

}  // namespace tessera::passes
