// gather [-> scale] [-> add_positions]  ->  embedding (one pass over the output rows).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

// The single consumer of v if it is node op `op` reading v as input 0, else -1.
int sole_consumer(const Graph& g, ValueId v, Op op) {
  if (detail::use_count(g, v) != 1) return -1;
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!nodes[i].inputs.empty() && nodes[i].inputs[0] == v)
      return nodes[i].op == op && nodes[i].outputs.size() == 1 ? static_cast<int>(i) : -1;
  return -1;
}

bool apply_one(Graph& g) {
  auto& nodes = g.mutable_nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].op != Op::gather) continue;
    Node fused = nodes[i];
    fused.op = Op::embedding;
    fused.attrs.scale = 1.0f;
    fused.attrs.pos_table = -1;
    std::vector<bool> dead(nodes.size(), false);
    int at = static_cast<int>(i);
    const int s = sole_consumer(g, nodes[at].outputs[0], Op::scale);
    if (s >= 0) {
      fused.attrs.scale = nodes[s].attrs.scale;
      dead[at] = true;
      at = s;
    }
    const int p = sole_consumer(g, nodes[at].outputs[0], Op::add_positions);
    if (p >= 0) {
      fused.attrs.pos_table = nodes[p].attrs.pos_table;
      fused.attrs.positions_from_cache = nodes[p].attrs.positions_from_cache;
      dead[at] = true;
      at = p;
    }
    fused.outputs = nodes[at].outputs;
    nodes[at] = std::move(fused);
    detail::name_outputs(g, nodes[at]);
    detail::erase_nodes(g, dead);
    return true;
  }
  return false;
}

}  // namespace

int fuse_embedding(Graph& g) {
  int n = 0;
  while (apply_one(g)) ++n;
  return n;
}

}  // namespace tessera::passes
