// gather [-> scale] [-> add_positions]  ->  embedding (one pass over the output rows).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

// The node after `at` in the chain if it is the sole reader of at's output, an `op` with one
// output; else -1.
int next(const Graph& g, int at, Op op) {
  const int r = detail::sole_reader(g, g.nodes()[at].outputs[0], op);
  return r >= 0 && g.nodes()[r].outputs.size() == 1 ? r : -1;
}

bool rewrite_at(Graph& g, int i) {
  const auto& nodes = g.nodes();
  if (nodes[i].op != Op::gather) return false;
  Node fused = nodes[i];
  fused.op = Op::embedding;
  fused.attrs.scale = 1.0f;
  fused.attrs.pos_table = -1;
  std::vector<bool> dead(nodes.size(), false);
  int at = i;
  if (const int s = next(g, at, Op::scale); s >= 0) {
    fused.attrs.scale = nodes[s].attrs.scale;
    dead[at] = true;
    at = s;
  }
  if (const int p = next(g, at, Op::add_positions); p >= 0) {
    fused.attrs.pos_table = nodes[p].attrs.pos_table;
    fused.attrs.positions_from_cache = nodes[p].attrs.positions_from_cache;
    dead[at] = true;
    at = p;
  }
  fused.outputs = nodes[at].outputs;
  detail::replace(g, at, std::move(fused), dead);
  return true;
}

}  // namespace

int fuse_embedding(Graph& g) {
  return detail::rewrite_all(g, rewrite_at);
}

}  // namespace tessera::passes
