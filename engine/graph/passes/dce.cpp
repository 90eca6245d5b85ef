// Dead-node elimination: nodes none of whose outputs is read (by a node or as a graph output).
// Nodes that write the KV cache have an effect beyond their outputs and are kept.
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

int dce(Graph& g) {
  auto& nodes = g.mutable_nodes();
  std::vector<int> uses(g.values().size(), 0);
  for (ValueId v : g.outputs()) ++uses[v];
  for (const auto& n : nodes)
    for (ValueId v : n.inputs)
      if (v != kNone) ++uses[v];
  std::vector<bool> dead(nodes.size(), false);
  int removed = 0;
  for (size_t i = nodes.size(); i-- > 0;) {
    const Node& n = nodes[i];
    const bool effect =
        (n.op == Op::attention || n.op == Op::attention_scores || n.op == Op::attention_context) &&
        n.attrs.cache_slot >= 0;
    bool used = effect;
    for (ValueId o : n.outputs) used = used || (o != kNone && uses[o] > 0);
    if (used) continue;
    dead[i] = true;
    ++removed;
    for (ValueId v : n.inputs)
      if (v != kNone) --uses[v];
  }
  detail::erase_nodes(g, dead);
  return removed;
}

}  // namespace tessera::passes
