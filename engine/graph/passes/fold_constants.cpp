// Constant folding: a node whose every input is a constant (a weight) is evaluated once, at
// load, and becomes a constant node yielding the result (a new weight). Nodes that read the
// run's context (KV cache, positions from the cache) are never folded.
#include "engine/graph/executor.h"
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool foldable(const Node& n) {
  switch (n.op) {
    case Op::constant:
    case Op::attention:
    case Op::attention_scores:
    case Op::attention_context:
      return false;
    case Op::add_positions:
      return !n.attrs.positions_from_cache;
    default:
      return n.outputs.size() == 1;
  }
}

}  // namespace

int fold_constants(Graph& g) {
  WeightSet* ws = g.mutable_weights();
  if (!ws) return 0;
  std::shared_ptr<WeightSet> shared(std::shared_ptr<WeightSet>(), ws);  // non-owning
  int folded = 0;
  auto& nodes = g.mutable_nodes();
  std::vector<int> weight_of(g.values().size(), -1);  // value -> weight, for constant outputs
  for (auto& n : nodes) {
    if (n.op == Op::constant) {
      weight_of[n.outputs[0]] = n.attrs.weight;
      continue;
    }
    if (!foldable(n) || n.inputs.empty()) continue;
    bool all = true;
    for (ValueId v : n.inputs) all = all && v != kNone && weight_of[v] >= 0;
    if (!all) continue;
    // Evaluate the node alone over constants.
    Graph one(shared);
    std::vector<ValueId> ins;
    for (ValueId v : n.inputs) {
      NodeAttrs a;
      a.weight = weight_of[v];
      ins.push_back(one.add_node(Op::constant, n.name + ".in", {}, a));
    }
    ValueId out = one.add_node(n.op, n.name, ins, n.attrs);
    one.mark_output(out, "folded");
    RunContext ctx;
    TensorMap result = execute(one, {}, ctx);
    const int w = ws->add(n.name + ":folded", result.at("folded"));
    n.op = Op::constant;
    n.inputs.clear();
    NodeAttrs a;
    a.weight = w;
    n.attrs = a;
    weight_of[n.outputs[0]] = w;
    ++folded;
  }
  return folded;
}

}  // namespace tessera::passes
