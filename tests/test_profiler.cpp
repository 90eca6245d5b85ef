// The profiler's FLOP/byte counts on hand-made graphs (linear, attention with and without a KV
// cache, layernorm, add, embedding), and its aggregates: per-node and per-operator totals add up.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "engine/graph/executor.h"
#include "engine/observe/profiler.h"

using namespace tessera;

namespace {

Tensor filled(Shape shape, float start = 0.1f) {
  Tensor t(DType::f32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = start + 0.01f * static_cast<float>(i % 17);
  return t;
}

struct Fixture {
  std::shared_ptr<WeightSet> ws = std::make_shared<WeightSet>();
  int w = -1, b = -1, gamma = -1, beta = -1, table = -1, pos = -1;
  size_t packed_bytes = 0;
  Fixture() {
    Tensor wt = filled({6, 4});
    auto p = kernels::pack_weights(wt.data<float>(), 6, 4, 4);
    packed_bytes = p.bytes();
    w = ws->add_packed("w", std::move(p));
    b = ws->add("b", filled({6}));
    gamma = ws->add("gamma", filled({6}, 1.0f));
    beta = ws->add("beta", filled({6}));
    table = ws->add("table", filled({10, 6}));
    pos = ws->add("pos", filled({16, 6}));
  }
};

const NodeCost& cost_of(const Profiler& p, const std::string& name) {
  for (const auto& r : p.records())
    if (r.node->name == name) return r.cost;
  FAIL("no record for node " << name);
  static NodeCost none;
  return none;
}

}  // namespace

TEST_CASE("node FLOP and byte counts") {
  Fixture f;
  Graph g(f.ws);
  // x [2, 3, 4] -> linear (K 4, N 6, bias) -> y [2, 3, 6]
  const ValueId x = g.add_input("x");
  NodeAttrs la;
  la.weight = f.w;
  la.bias = f.b;
  const ValueId y = g.add_node(Op::linear, "lin", {x}, la);
  // Self-attention reading q, k, v out of y: 2 heads of dim 1 at columns 0, 2, 4.
  NodeAttrs aa;
  aa.heads = 2;
  aa.head_dim = 1;
  aa.q_col = 0;
  aa.k_col = 2;
  aa.v_col = 4;
  const ValueId a = g.add_node(Op::attention, "attn", {y, y, kNone, kNone}, aa);
  NodeAttrs na;
  na.gamma = f.gamma;
  na.beta = f.beta;
  const ValueId n = g.add_node(Op::layernorm, "ln", {y}, na);
  const ValueId s = g.add_node(Op::add, "sum", {n, y}, NodeAttrs{});
  // Linear with a residual: [2, 3, 4] -> [2, 3, 6] + s.
  const ValueId r = g.add_node(Op::linear, "lin_res", {x, s}, la);
  g.mark_output(a, "a");
  g.mark_output(r, "r");

  Profiler prof(true);
  RunContext ctx;
  ctx.observer = &prof;
  TensorMap out = execute(g, {{"x", filled({2, 3, 4})}}, ctx);
  REQUIRE(prof.records().size() == 5);

  const double m = 6, k = 4, nn = 6;
  const NodeCost& lin = cost_of(prof, "lin");
  CHECK(lin.flops == 2 * m * nn * k);
  CHECK(lin.bytes == m * k * 4 + static_cast<double>(f.packed_bytes) + nn * 4 + m * nn * 4);
  const NodeCost& lr = cost_of(prof, "lin_res");
  CHECK(lr.flops == lin.flops);
  CHECK(lr.bytes == lin.bytes + m * nn * 4);

  // B 2, H 2, T 3, S 3, D 1
  const NodeCost& at = cost_of(prof, "attn");
  CHECK(at.flops == 4.0 * 2 * 2 * 3 * 3 * 1 + 5.0 * 2 * 2 * 3 * 3);
  CHECK(at.bytes == (2.0 * 3 * 2 * 2 + 2.0 * 3 * 2 * 2) * 4);

  const NodeCost& ln = cost_of(prof, "ln");
  CHECK(ln.flops == 8.0 * 36);
  CHECK(ln.bytes == 36.0 * 4 * 2 + 6.0 * 4 * 2);
  const NodeCost& add = cost_of(prof, "sum");
  CHECK(add.flops == 36.0);
  CHECK(add.bytes == 36.0 * 4 * 3);

  // Shapes in the trace: inputs -> outputs.
  CHECK(prof.shapes_of(prof.records()[0])->str() == "[2, 3, 4] -> [2, 3, 6]");
  CHECK(prof.shapes_of(prof.records()[3])->str() == "[2, 3, 6], [2, 3, 6] -> [2, 3, 6]");
  const auto trace = prof.trace_json();
  REQUIRE(trace["traceEvents"].size() == 5);
  for (const auto& e : trace["traceEvents"]) {
    CHECK(e["ph"] == "X");
    CHECK(e["dur"].get<double>() >= 0);
    CHECK(e["args"]["flops"].get<double>() > 0);
  }
}

TEST_CASE("attention with a KV cache counts past and new keys; embedding") {
  Fixture f;
  Graph g(f.ws);
  const ValueId ids = g.add_input("ids");
  NodeAttrs ea;
  ea.table = f.table;
  ea.pos_table = f.pos;
  ea.positions_from_cache = true;
  const ValueId e = g.add_node(Op::embedding, "embed", {ids}, ea);  // [2, 1, 6]
  NodeAttrs aa;
  aa.heads = 2;
  aa.head_dim = 1;
  aa.q_col = 0;
  aa.k_col = 2;
  aa.v_col = 4;
  aa.cache_slot = 0;
  aa.causal = true;
  const ValueId a = g.add_node(Op::attention, "attn", {e, e, kNone, kNone}, aa);
  g.mark_output(a, "a");

  KVCache cache;
  cache.reset(1, 2, 8, 2);
  Profiler prof;
  Tensor id(DType::i64, {2, 1});
  id.data<int64_t>()[0] = 3;
  id.data<int64_t>()[1] = 7;
  for (int64_t past = 0; past < 4; ++past) {
    RunContext ctx{&cache, past, &prof, {}};
    execute(g, {{"ids", id}}, ctx);
  }
  REQUIRE(prof.records().size() == 8);
  for (int64_t past = 0; past < 4; ++past) {
    const NodeCost& emb = prof.records()[2 * past].cost;
    CHECK(emb.flops == 2.0 * 12);
    CHECK(emb.bytes == 2.0 * 8 + 12.0 * 4 * 3);
    const NodeCost& at = prof.records()[2 * past + 1].cost;
    const double s = static_cast<double>(past + 1);  // B 2, H 2, T 1, D 1
    CHECK(at.flops == 4.0 * 2 * 2 * 1 * s + 5.0 * 2 * 2 * 1 * s);
    CHECK(at.bytes == (2.0 * 1 * 2 * 2 + 2.0 * s * 2 * 2) * 4);
  }
}

TEST_CASE("per-node and per-operator aggregates add up") {
  Fixture f;
  Graph g(f.ws);
  const ValueId x = g.add_input("x");
  NodeAttrs la;
  la.weight = f.w;
  la.bias = f.b;
  const ValueId y = g.add_node(Op::linear, "lin", {x}, la);
  NodeAttrs na;
  na.gamma = f.gamma;
  na.beta = f.beta;
  const ValueId n1 = g.add_node(Op::layernorm, "ln1", {y}, na);
  const ValueId n2 = g.add_node(Op::layernorm, "ln2", {n1}, na);
  NodeAttrs act;
  act.act = kernels::Activation::relu;
  const ValueId z = g.add_node(Op::activation, "relu", {n2}, act);
  const ValueId sm = g.add_node(Op::softmax, "softmax", {z}, NodeAttrs{});
  g.mark_output(sm, "out");

  Profiler prof;
  const int reps = 7;
  for (int r = 0; r < reps; ++r) {
    RunContext ctx;
    ctx.observer = &prof;
    execute(g, {{"x", filled({5, 4})}}, ctx);
  }
  // Recording off: nothing more is recorded.
  prof.set_enabled(false);
  {
    RunContext ctx;
    ctx.observer = &prof;
    execute(g, {{"x", filled({5, 4})}}, ctx);
  }
  REQUIRE(prof.records().size() == 5u * reps);

  const auto nodes = prof.by_node();
  const auto ops = prof.by_op();
  REQUIRE(nodes.size() == 5);
  REQUIRE(ops.size() == 4);
  double t_nodes = 0, t_ops = 0, f_nodes = 0, f_ops = 0, b_nodes = 0, b_ops = 0, share = 0;
  int64_t calls = 0;
  for (const auto& r : nodes) {
    CHECK(r.calls == reps);
    CHECK(r.median_s <= r.total_s);
    t_nodes += r.total_s;
    f_nodes += r.flops;
    b_nodes += r.bytes;
    share += r.share;
  }
  for (const auto& r : ops) {
    t_ops += r.total_s;
    f_ops += r.flops;
    b_ops += r.bytes;
    calls += r.calls;
  }
  double f_records = 0;
  for (const auto& r : prof.records()) f_records += r.cost.flops;
  CHECK(calls == 5 * reps);
  CHECK(t_nodes == doctest::Approx(prof.total_seconds()));
  CHECK(t_ops == doctest::Approx(prof.total_seconds()));
  CHECK(f_nodes == doctest::Approx(f_records));
  CHECK(f_ops == doctest::Approx(f_records));
  CHECK(b_ops == doctest::Approx(b_nodes));
  CHECK(share == doctest::Approx(1.0));
  for (size_t i = 1; i < nodes.size(); ++i) CHECK(nodes[i - 1].total_s >= nodes[i].total_s);
  for (const auto& r : ops)
    if (r.name == "layernorm") CHECK(r.calls == 2 * reps);

  // Roofline: the bound never exceeds the compute roof, and equals intensity x bandwidth below
  // the ridge.
  SysInfo m;
  m.threads = 2;
  m.peak_gflops_per_core = 100;
  m.bandwidth_gbs_1t = m.bandwidth_gbs_all = 20;
  ProfileRow low;
  low.flops = 1e9;
  low.bytes = 1e9;  // 1 flop/B
  low.total_s = 1;
  CHECK(Profiler::bound_gflops(low, m) == doctest::Approx(20));
  CHECK(Profiler::fraction_of_bound(low, m) == doctest::Approx(0.05));
  ProfileRow high = low;
  high.bytes = 1e6;  // 1000 flop/B
  CHECK(Profiler::bound_gflops(high, m) == doctest::Approx(200));
}
