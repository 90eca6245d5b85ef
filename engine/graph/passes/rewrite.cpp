#include <algorithm>

#include "engine/graph/passes/passes.h"

namespace tessera::passes::detail {

void erase_nodes(Graph& g, const std::vector<bool>& dead) {
  auto& nodes = g.mutable_nodes();
  size_t out = 0;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!dead[i]) {
      if (out != i) nodes[out] = std::move(nodes[i]);
      ++out;
    }
  nodes.resize(out);
}

bool is_output(const Graph& g, ValueId v) {
  return std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
}

int use_count(const Graph& g, ValueId v) {
  int n = is_output(g, v) ? 1 : 0;
  for (const auto& node : g.nodes())
    for (ValueId in : node.inputs)
      if (in == v) ++n;
  return n;
}

int producer(const Graph& g, ValueId v) {
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i)
    for (ValueId o : nodes[i].outputs)
      if (o == v) return static_cast<int>(i);
  return -1;
}

void name_outputs(Graph& g, const Node& n) {
  for (size_t i = 0; i < n.outputs.size(); ++i) {
    const ValueId v = n.outputs[i];
    if (v == kNone || g.values()[v].is_output || g.values()[v].is_input) continue;
    g.value(v).name = n.name + (i == 0 ? ":out" : ":sum");
  }
}

}  // namespace tessera::passes::detail
