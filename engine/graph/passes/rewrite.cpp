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

int sole_reader(const Graph& g, ValueId v, int slot) {
  if (use_count(g, v) != 1) return -1;
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i)
    for (size_t j = 0; j < nodes[i].inputs.size(); ++j)
      if (nodes[i].inputs[j] == v) return static_cast<int>(j) == slot ? static_cast<int>(i) : -1;
  return -1;
}

int sole_reader(const Graph& g, ValueId v, Op op, int slot) {
  const int r = sole_reader(g, v, slot);
  return r >= 0 && g.nodes()[r].op == op ? r : -1;
}

std::vector<int> follow(const Graph& g, int from, std::initializer_list<Op> ops) {
  std::vector<int> chain;
  int at = from;
  for (Op op : ops) {
    at = sole_reader(g, g.nodes()[at].outputs[0], op);
    if (at < 0) return {};
    chain.push_back(at);
  }
  return chain;
}

void replace(Graph& g, int at, Node fused, const std::vector<bool>& folded) {
  g.mutable_nodes()[at] = std::move(fused);
  name_outputs(g, g.nodes()[at]);
  erase_nodes(g, folded);
}

void replace(Graph& g, int at, Node fused, std::initializer_list<int> folded) {
  std::vector<bool> dead(g.nodes().size(), false);
  for (int i : folded) dead[i] = true;
  replace(g, at, std::move(fused), dead);
}

int rewrite_all(Graph& g, bool (*rewrite_at)(Graph& g, int node)) {
  int n = 0;
  for (bool again = true; again;) {
    again = false;
    for (size_t i = 0; i < g.nodes().size() && !again; ++i)
      again = rewrite_at(g, static_cast<int>(i));
    n += again;
  }
  return n;
}

}  // namespace tessera::passes::detail
