// linear -> bias_add [-> activation]  ->  linear with bias and activation in the GEMM epilogue
// (also linear -> activation when the linear has no bias). The activations of the epilogue are
// those of kernels::Activation: ReLU, GELU (erf) and GELU (tanh).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

// Index of the only node reading v (as input 0), if v has no other use; else -1.
int sole_reader(const Graph& g, ValueId v) {
  if (detail::use_count(g, v) != 1) return -1;
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i)
    for (size_t j = 0; j < nodes[i].inputs.size(); ++j)
      if (nodes[i].inputs[j] == v) return j == 0 ? static_cast<int>(i) : -1;
  return -1;
}

bool apply_one(Graph& g) {
  auto& nodes = g.mutable_nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& l = nodes[i];
    // Only a plain GEMM (no residual yet: the epilogue adds the residual last).
    if (l.op != Op::linear || l.inputs.size() != 1 || l.attrs.act != kernels::Activation::none)
      continue;
    const int r = sole_reader(g, l.outputs[0]);
    if (r < 0) continue;
    const Node& next = nodes[r];
    const bool bias = next.op == Op::bias_add && l.attrs.bias < 0;
    const bool act = next.op == Op::activation;
    if (!bias && !act) continue;
    Node fused = l;
    if (bias)
      fused.attrs.bias = next.attrs.bias;
    else
      fused.attrs.act = next.attrs.act;
    fused.outputs = next.outputs;
    std::vector<bool> dead(nodes.size(), false);
    dead[i] = true;
    nodes[r] = std::move(fused);
    detail::name_outputs(g, nodes[r]);
    detail::erase_nodes(g, dead);
    return true;
  }
  return false;
}

}  // namespace

int fuse_epilogue(Graph& g) {
  int n = 0;
  while (apply_one(g)) ++n;
  return n;
}

}  // namespace tessera::passes
