// layernorm(add(a, b))  ->  layernorm(a, residual b): one pass over the rows
// (kernels::add_layernorm_rows). Post-LN: the sum is read only by the layernorm. Pre-LN: the sum
// is the residual stream other nodes read too, so the fused node also stores it (second output).
#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

bool rewrite_at(Graph& g, int i) {
  const auto& nodes = g.nodes();
  const Node& add = nodes[i];
  if (add.op != Op::add || add.inputs.size() != 2) return false;
  // The first layernorm reading the sum alone.
  const ValueId sum = add.outputs[0];
  int ln = -1;
  for (size_t j = 0; j < nodes.size() && ln < 0; ++j) {
    const Node& c = nodes[j];
    if (c.op == Op::layernorm && c.inputs.size() == 1 && c.inputs[0] == sum &&
        c.outputs.size() == 1)
      ln = static_cast<int>(j);
  }
  if (ln < 0) return false;
  Node fused = nodes[ln];
  fused.inputs = {add.inputs[0], add.inputs[1]};
  if (detail::use_count(g, sum) > 1) fused.outputs.push_back(sum);
  // At the add's place: the sum's other readers may come before the layernorm.
  detail::replace(g, i, std::move(fused), {ln});
  return true;
}

}  // namespace

int fuse_add_layernorm(Graph& g) {
  return detail::rewrite_all(g, rewrite_at);
}

}  // namespace tessera::passes
