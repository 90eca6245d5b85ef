// linear -> bias_add [-> activation]  ->  linear with bias and activation in the GEMM epilogue
// (also linear -> activation when the linear has no bias). The activations of the epilogue are
// those of kernels::Activation: ReLU, GELU (erf) and GELU (tanh).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool rewrite_at(Graph& g, int i) {
  const Node& l = g.nodes()[i];
  // Only a plain GEMM (no residual yet: the epilogue adds the residual last).
  if (l.op != Op::linear || l.inputs.size() != 1 || l.attrs.act != kernels::Activation::none)
    return false;
  const int r = detail::sole_reader(g, l.outputs[0]);
  if (r < 0) return false;
  const Node& next = g.nodes()[r];
  const bool bias = next.op == Op::bias_add && l.attrs.bias < 0;
  const bool act = next.op == Op::activation;
  if (!bias && !act) return false;
  Node fused = l;
  if (bias)
    fused.attrs.bias = next.attrs.bias;
  else
    fused.attrs.act = next.attrs.act;
  fused.outputs = next.outputs;
  detail::replace(g, r, std::move(fused), {i});
  return true;
}

}  // namespace

int fuse_epilogue(Graph& g) {
  return detail::rewrite_all(g, rewrite_at);
}

}  // namespace tessera::passes
