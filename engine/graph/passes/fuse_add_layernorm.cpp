// layernorm(add(a, b))  ->  layernorm(a, residual b): one pass over the rows
// (kernels::add_layernorm_rows). Post-LN: the sum is read only by the layernorm. Pre-LN: the sum
// is the residual stream other nodes read too, so the fused node also stores it (second output).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool apply_one(Graph& g) {
  auto& nodes = g.mutable_nodes();
  const auto readers = g.consumers();
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].op != Op::add || nodes[i].inputs.size() != 2) continue;
    const ValueId sum = nodes[i].outputs[0];
    int ln = -1;
    for (const auto& [node, slot] : readers[sum]) {
      const Node& c = nodes[node];
      if (c.op == Op::layernorm && slot == 0 && c.inputs.size() == 1 && c.outputs.size() == 1) {
        ln = node;
        break;
      }
    }
    if (ln < 0) continue;
    Node fused = nodes[ln];
    fused.inputs = {nodes[i].inputs[0], nodes[i].inputs[1]};
    const bool others = detail::use_count(g, sum) > 1;
    if (others) fused.outputs.push_back(sum);
    std::vector<bool> dead(nodes.size(), false);
    dead[ln] = true;
    // At the add's place: the sum's other readers may come before the layernorm.
    nodes[i] = std::move(fused);
    detail::name_outputs(g, nodes[i]);
    detail::erase_nodes(g, dead);
    return true;
  }
  return false;
}

}  // namespace

int fuse_add_layernorm(Graph& g) {
  int n = 0;
  while (apply_one(g)) ++n;
  return n;
}

}  // namespace tessera::passes
