// Tests of the graph passes (engine/passes) and the memory planner (engine/planner): each pass
// on a small hand-built graph (it fires, and the graph computes the same values before and
// after), the --passes syntax, and the planner on random graphs (no two values alive at the same
// time share a byte; the arena run equals node-by-node evaluation).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include <unistd.h>

#include <filesystem>

#include "engine/graph/executor.h"
#include "engine/graph/passes/passes.h"
#include "engine/graph/planner.h"
#include "engine/io/safetensors.h"

using namespace tessera;
using kernels::Activation;

namespace {

// "prefix<i>" (appending to a string, not `named("x", i)`: GCC 12 -Wrestrict trips on
// that).
std::string named(const char* prefix, int64_t i) {
  std::string s(prefix);
  s += std::to_string(i);
  return s;
}

Tensor random_tensor(Shape shape, std::mt19937& rng, float scale = 0.5f) {
  Tensor t(DType::f32, std::move(shape));
  std::normal_distribution<float> dist(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

double max_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max<double>(m, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
  return m;
}

// Runs `g` and a copy of it after `pass`; both must give the same outputs. Returns the copy.
Graph check_pass(const Graph& g, int (*pass)(Graph&), const TensorMap& in, int expect_rewrites,
                 double tol = 1e-5, KVCache* cache = nullptr, int64_t past = 0) {
  Graph after = g;
  CHECK(pass(after) == expect_rewrites);
  KVCache c1, c2;
  if (cache) c1 = c2 = *cache;
  RunContext r1{cache ? &c1 : nullptr, past, nullptr, {}},
      r2{cache ? &c2 : nullptr, past, nullptr, {}};
  TensorMap a = execute(g, in, r1), b = execute(after, in, r2);
  REQUIRE(a.size() == b.size());
  for (const auto& entry : a) {
    // Not a structured binding: doctest's INFO captures it in a lambda, which clang 14 rejects.
    const std::string& name = entry.first;
    const double d = max_diff(entry.second, b.at(name));
    INFO(name << " differs by " << d);
    CHECK(d <= tol);
  }
  if (cache)
    for (size_t s = 0; s < c1.k.size(); ++s) {
      CHECK(max_diff(c1.k[s], c2.k[s]) <= tol);
      CHECK(max_diff(c1.v[s], c2.v[s]) <= tol);
    }
  return after;
}

int count_op(const Graph& g, Op op) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node.op == op;
  return n;
}

NodeAttrs with_weight(int w) {
  NodeAttrs a;
  a.weight = w;
  return a;
}
NodeAttrs with_bias(int b) {
  NodeAttrs a;
  a.bias = b;
  return a;
}
NodeAttrs with_act(Activation act) {
  NodeAttrs a;
  a.act = act;
  return a;
}

}  // namespace

TEST_CASE("passes: the --passes syntax") {
  CHECK(passes::parse("all").disabled.empty());
  CHECK(passes::parse("").disabled.empty());
  CHECK(passes::parse("none").disabled.size() == passes::names().size());
  auto o = passes::parse("-fuse_qkv,-fuse_attention");
  CHECK(o.disabled == std::set<std::string>{"fuse_qkv", "fuse_attention"});
  o = passes::parse("fuse_epilogue,prepack");
  CHECK(o.enabled("fuse_epilogue"));
  CHECK(o.enabled("prepack"));
  CHECK(!o.enabled("fuse_qkv"));
  std::string msg;
  try {
    passes::parse("-fuse_qkvv");
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("unknown pass 'fuse_qkvv'") != std::string::npos);
  CHECK(msg.find("fuse_add_layernorm") != std::string::npos);  // lists the valid ones
  CHECK_THROWS_AS(passes::parse("fuse_qkv,-dce"), Error);
}

TEST_CASE("passes: fuse_epilogue folds bias and each activation into the linear") {
  for (Activation act : {Activation::relu, Activation::gelu_erf, Activation::gelu_tanh}) {
    std::mt19937 rng(1);
    auto ws = std::make_shared<WeightSet>();
    const int w = ws->add("w", random_tensor({17, 13}, rng));
    const int b = ws->add("b", random_tensor({17}, rng));
    Graph g(ws);
    ValueId x = g.add_input("x");
    ValueId y = g.add_node(Op::linear, "lin", {x}, with_weight(w));
    y = g.add_node(Op::bias_add, "lin.bias", {y}, with_bias(b));
    y = g.add_node(Op::activation, "lin.act", {y}, with_act(act));
    g.mark_output(y, "y");
    Graph after = check_pass(g, passes::fuse_epilogue, {{"x", random_tensor({3, 5, 13}, rng)}}, 2);
    REQUIRE(after.nodes().size() == 1);
    CHECK(after.nodes()[0].attrs.bias == b);
    CHECK(after.nodes()[0].attrs.act == act);
  }
}

TEST_CASE("passes: fuse_epilogue leaves a linear whose output is read twice") {
  std::mt19937 rng(2);
  auto ws = std::make_shared<WeightSet>();
  const int w = ws->add("w", random_tensor({8, 8}, rng));
  const int b = ws->add("b", random_tensor({8}, rng));
  Graph g(ws);
  ValueId x = g.add_input("x");
  ValueId y = g.add_node(Op::linear, "lin", {x}, with_weight(w));
  ValueId z = g.add_node(Op::bias_add, "lin.bias", {y}, with_bias(b));
  g.mark_output(z, "z");
  g.mark_output(y, "y");
  check_pass(g, passes::fuse_epilogue, {{"x", random_tensor({2, 8}, rng)}}, 0);
}

TEST_CASE("passes: fuse_residual moves the add into the GEMM epilogue") {
  std::mt19937 rng(3);
  auto ws = std::make_shared<WeightSet>();
  const int w = ws->add("w", random_tensor({9, 9}, rng));
  Graph g(ws);
  ValueId x = g.add_input("x");
  ValueId h = g.add_node(Op::activation, "h", {x}, with_act(Activation::relu));
  ValueId y = g.add_node(Op::linear, "lin", {h}, with_weight(w));
  ValueId z = g.add_node(Op::add, "res", {x, y}, NodeAttrs{});
  g.mark_output(z, "z");
  Graph after = check_pass(g, passes::fuse_residual, {{"x", random_tensor({4, 9}, rng)}}, 1);
  CHECK(count_op(after, Op::add) == 0);
  CHECK(after.nodes().back().inputs == std::vector<ValueId>{h, x});
}

TEST_CASE("passes: fuse_add_layernorm, post-LN and pre-LN (the sum kept as a second output)") {
  for (bool pre : {false, true}) {
    std::mt19937 rng(4);
    auto ws = std::make_shared<WeightSet>();
    NodeAttrs ln;
    ln.gamma = ws->add("g", random_tensor({11}, rng));
    ln.beta = ws->add("b", random_tensor({11}, rng));
    Graph g(ws);
    ValueId a = g.add_input("a");
    ValueId b = g.add_input("b");
    ValueId s = g.add_node(Op::add, "add", {a, b}, NodeAttrs{});
    ValueId y = g.add_node(Op::layernorm, "ln", {s}, ln);
    if (pre) y = g.add_node(Op::add, "next", {y, s}, NodeAttrs{});  // the residual stream
    g.mark_output(y, "y");
    Graph after = check_pass(
        g, passes::fuse_add_layernorm,
        {{"a", random_tensor({2, 3, 11}, rng)}, {"b", random_tensor({2, 3, 11}, rng)}}, 1);
    CHECK(after.nodes()[0].op == Op::layernorm);
    CHECK(after.nodes()[0].inputs.size() == 2);
    CHECK(after.nodes()[0].outputs.size() == (pre ? 2u : 1u));
  }
}

TEST_CASE("passes: fuse_embedding joins gather, scale and positions") {
  std::mt19937 rng(5);
  auto ws = std::make_shared<WeightSet>();
  const int table = ws->add("table", random_tensor({10, 6}, rng));
  const int pos = ws->add("pos", random_tensor({8, 6}, rng));
  Graph g(ws);
  ValueId ids = g.add_input("ids");
  NodeAttrs a;
  a.table = table;
  ValueId y = g.add_node(Op::gather, "emb", {ids}, a);
  NodeAttrs s;
  s.scale = 2.5f;
  y = g.add_node(Op::scale, "emb.scale", {y}, s);
  NodeAttrs p;
  p.pos_table = pos;
  y = g.add_node(Op::add_positions, "emb.pos", {y}, p);
  g.mark_output(y, "y");
  Tensor idt(DType::i64, {2, 5});
  for (int i = 0; i < 10; ++i) idt.data<int64_t>()[i] = (i * 7) % 10;
  Graph after = check_pass(g, passes::fuse_embedding, {{"ids", idt}}, 1);
  REQUIRE(after.nodes().size() == 1);
  CHECK(after.nodes()[0].op == Op::embedding);
  CHECK(after.nodes()[0].attrs.scale == 2.5f);
  CHECK(after.nodes()[0].attrs.pos_table == pos);
}

namespace {

// q, k, v projections of x (and of `kv_src` for k/v when given), biased, then unfused attention.
struct AttnGraph {
  std::shared_ptr<WeightSet> ws = std::make_shared<WeightSet>();
  std::unique_ptr<Graph> g;
};

AttnGraph attention_graph(std::mt19937& rng, bool cross, int cache_slot, bool biased = true) {
  AttnGraph r;
  const int64_t e = 12, heads = 3;
  Tensor in_w = random_tensor({3 * e, e}, rng);
  Tensor in_b = random_tensor({3 * e}, rng);
  int w[3], b[3];
  for (int i = 0; i < 3; ++i) {
    w[i] = r.ws->add_rows(named("w", i), in_w, i * e, e, false);
    b[i] = biased ? r.ws->add_rows(named("b", i), in_b, i * e, e, false) : -1;
  }
  r.g = std::make_unique<Graph>(r.ws);
  Graph& g = *r.g;
  ValueId x = g.add_input("x");
  ValueId m = cross ? g.add_input("m") : x;
  ValueId mask = g.add_input("mask", true);
  ValueId pad = g.add_input("pad", true);
  ValueId proj[3];
  for (int i = 0; i < 3; ++i) {
    NodeAttrs a = with_weight(w[i]);
    a.bias = b[i];
    proj[i] =
        g.add_node(Op::linear, "attn." + std::string(1, "qkv"[i]) + "_proj", {i == 0 ? x : m}, a);
  }
  NodeAttrs a;
  a.heads = heads;
  a.head_dim = e / heads;
  a.cache_slot = cache_slot;
  a.causal = cache_slot >= 0;
  ValueId s = g.add_node(Op::attention_scores, "attn.scores", {proj[0], proj[1], mask, pad}, a);
  ValueId p = g.add_node(Op::softmax, "attn.softmax", {s}, NodeAttrs{});
  ValueId c = g.add_node(Op::attention_context, "attn.context", {p, proj[2]}, a);
  g.mark_output(c, "y");
  return r;
}

}  // namespace

TEST_CASE("passes: fuse_attention, with masks, padding and a KV cache") {
  std::mt19937 rng(6);
  for (int slot : {-1, 0}) {
    AttnGraph ag = attention_graph(rng, false, slot);
    Tensor mask(DType::f32, {5, slot >= 0 ? 7 : 5});
    for (int64_t i = 0; i < mask.numel(); ++i) mask.data<float>()[i] = (i % 3 == 0) ? -1.5f : 0.f;
    Tensor pad(DType::u8, {2, slot >= 0 ? 7 : 5});
    pad.data<uint8_t>()[pad.numel() - 1] = 1;
    KVCache cache;
    cache.reset(1, 2, 9, 12);
    for (int64_t i = 0; i < cache.k[0].numel(); ++i) {
      cache.k[0].data<float>()[i] = std::sin(static_cast<float>(i));
      cache.v[0].data<float>()[i] = std::cos(static_cast<float>(i));
    }
    TensorMap in{{"x", random_tensor({2, 5, 12}, rng)}, {"mask", mask}, {"pad", pad}};
    Graph after = check_pass(*ag.g, passes::fuse_attention, in, 1, 1e-5,
                             slot >= 0 ? &cache : nullptr, slot >= 0 ? 2 : 0);
    CHECK(count_op(after, Op::attention) == 1);
    CHECK(count_op(after, Op::softmax) == 0);
  }
}

TEST_CASE("passes: fuse_qkv, self-attention (3 projections) and cross-attention (k and v)") {
  std::mt19937 rng(7);
  for (bool cross : {false, true})
    for (bool fused_attention_first : {false, true}) {
      AttnGraph ag = attention_graph(rng, cross, -1);
      if (fused_attention_first) passes::fuse_attention(*ag.g);
      TensorMap in{{"x", random_tensor({2, 5, 12}, rng)}};
      if (cross) in["m"] = random_tensor({2, 4, 12}, rng);
      Graph after = check_pass(*ag.g, passes::fuse_qkv, in, 1);
      CHECK(count_op(after, Op::linear) == (cross ? 2 : 1));
      // The concatenated weight is a view of the consecutive in_proj rows, not a copy.
      for (const auto& n : after.nodes())
        if (n.op == Op::linear && after.weights().at(n.attrs.weight).tensor.dim(0) > 12)
          CHECK(!after.weights().at(n.attrs.weight).base.empty());
    }
  // Without biases the projections still fuse (no bias on the fused linear).
  AttnGraph ag = attention_graph(rng, false, -1, false);
  Graph after = check_pass(*ag.g, passes::fuse_qkv, {{"x", random_tensor({1, 3, 12}, rng)}}, 1);
  CHECK(after.nodes()[0].attrs.bias == -1);
}

TEST_CASE("passes: dce removes what nobody reads, keeps KV-cache writers") {
  std::mt19937 rng(8);
  auto ws = std::make_shared<WeightSet>();
  Graph g(ws);
  ValueId x = g.add_input("x");
  ValueId a = g.add_node(Op::activation, "dead1", {x}, with_act(Activation::relu));
  g.add_node(Op::activation, "dead2", {a}, with_act(Activation::gelu_erf));
  ValueId y = g.add_node(Op::activation, "live", {x}, with_act(Activation::gelu_tanh));
  g.mark_output(y, "y");
  Graph after = check_pass(g, passes::dce, {{"x", random_tensor({3, 4}, rng)}}, 2);
  REQUIRE(after.nodes().size() == 1);
  CHECK(after.nodes()[0].name == "live");
}

TEST_CASE("passes: fold_constants evaluates what depends only on weights") {
  std::mt19937 rng(9);
  auto ws = std::make_shared<WeightSet>();
  const int c1 = ws->add("c1", random_tensor({4, 6}, rng));
  const int c2 = ws->add("c2", random_tensor({4, 6}, rng));
  Graph g(ws);
  ValueId x = g.add_input("x");
  ValueId a = g.add_node(Op::constant, "c1", {}, with_weight(c1));
  ValueId b = g.add_node(Op::constant, "c2", {}, with_weight(c2));
  ValueId s = g.add_node(Op::add, "sum", {a, b}, NodeAttrs{});
  ValueId t = g.add_node(Op::activation, "act", {s}, with_act(Activation::gelu_erf));
  ValueId y = g.add_node(Op::add, "y", {x, t}, NodeAttrs{});
  g.mark_output(y, "y");
  Graph after = check_pass(g, passes::fold_constants, {{"x", random_tensor({4, 6}, rng)}}, 2);
  CHECK(count_op(after, Op::constant) == 4);  // sum and act became constants
  passes::dce(after);
  CHECK(after.nodes().size() == 2);  // the folded constant and the add of the input
}

TEST_CASE("passes: prepack packs GEMM weights, drops their f32 copy, keeps tables") {
  std::mt19937 rng(10);
  auto ws = std::make_shared<WeightSet>();
  const int w = ws->add("w", random_tensor({6, 6}, rng));
  NodeAttrs emb;
  emb.table = ws->add("table", random_tensor({5, 6}, rng));
  const int unused = ws->add("unused", random_tensor({3}, rng));
  Graph g(ws);
  ValueId ids = g.add_input("ids");
  ValueId e = g.add_node(Op::embedding, "emb", {ids}, emb);
  ValueId y = g.add_node(Op::linear, "lin", {e}, with_weight(w));
  g.mark_output(y, "y");
  Tensor idt(DType::i64, {1, 3});
  idt.data<int64_t>()[1] = 4;
  RunContext ctx;
  Tensor before = execute(g, {{"ids", idt}}, ctx).at("y");
  CHECK(passes::prepack({&g}) == 1);
  CHECK(!ws->at(w).packed.empty());
  CHECK(ws->at(w).tensor.empty());
  CHECK(!ws->at(emb.table).tensor.empty());
  CHECK(ws->at(unused).tensor.empty());
  CHECK(max_diff(before, execute(g, {{"ids", idt}}, ctx).at("y")) == 0);
}

namespace {

// How many of the whole pages inside [p, p + bytes) are mapped into this process (present in
// its page tables: /proc/self/pagemap bit 63). mincore() would not do: for a file mapping it
// reports the page cache, not this process's resident set.
size_t resident_pages(const void* p, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (end <= begin) return 0;
  FILE* f = std::fopen("/proc/self/pagemap", "rb");
  REQUIRE(f != nullptr);
  size_t n = 0;
  for (uintptr_t a = begin; a < end; a += page) {
    uint64_t entry = 0;
    REQUIRE(std::fseek(f, static_cast<long>(a / page * 8), SEEK_SET) == 0);
    REQUIRE(std::fread(&entry, 8, 1, f) == 1);
    n += (entry >> 63) & 1;
  }
  std::fclose(f);
  return n;
}

}  // namespace

TEST_CASE("passes: prepack releases the mapped pages of the weights it packed") {
  namespace fs = std::filesystem;
  std::mt19937 rng(11);
  const fs::path path =
      fs::temp_directory_path() / ("tessera_prepack_" + std::to_string(::getpid()) + ".st");
  write_safetensors(path.string(), {{"w", random_tensor({256, 512}, rng)},
                                    {"table", random_tensor({64, 512}, rng)}});
  auto ws = std::make_shared<WeightSet>();
  const void* w_data = nullptr;
  const void* t_data = nullptr;
  size_t w_bytes = 0, t_bytes = 0;
  {
    SafetensorsFile f(path.string());
    Tensor w = f.get("w"), t = f.get("table");
    // Touch every page so both are resident before packing.
    double sum = 0;
    for (int64_t i = 0; i < w.numel(); ++i) sum += w.data<float>()[i];
    for (int64_t i = 0; i < t.numel(); ++i) sum += t.data<float>()[i];
    CHECK(std::isfinite(sum));
    w_data = w.raw();
    w_bytes = w.nbytes();
    t_data = t.raw();
    t_bytes = t.nbytes();
    ws->add_mapped("w", w);
    ws->add_mapped("table", t);
  }
  const size_t w_pages = resident_pages(w_data, w_bytes);
  CHECK(w_pages >= 100);  // 512 KiB of weights
  Graph g(ws);
  NodeAttrs emb;
  emb.table = 1;
  ValueId ids = g.add_input("ids");
  ValueId e = g.add_node(Op::embedding, "emb", {ids}, emb);
  g.mark_output(g.add_node(Op::linear, "lin", {e}, with_weight(0)), "y");
  Tensor idt(DType::i64, {1, 2});
  idt.data<int64_t>()[1] = 63;
  RunContext ctx;
  Tensor before = execute(g, {{"ids", idt}}, ctx).at("y");
  CHECK(passes::prepack({&g}) == 1);
  // The file stays mapped (the table's view keeps it); the packed matrix's pages are gone, the
  // table's (read by the gather) are not.
  MESSAGE("resident pages of the packed weight: " << w_pages << " before prepack, "
                                                  << resident_pages(w_data, w_bytes) << " after");
  CHECK(resident_pages(w_data, w_bytes) == 0);
  CHECK(resident_pages(t_data, t_bytes) > 0);
  CHECK(max_diff(before, execute(g, {{"ids", idt}}, ctx).at("y")) == 0);
  fs::remove(path);
}

// ---------------------------------------------------------------------------------------------
// Memory planner
// ---------------------------------------------------------------------------------------------
namespace {

// A random DAG: each node reads 1-2 earlier values (of its width class) and writes one.
struct RandomGraph {
  std::shared_ptr<WeightSet> ws = std::make_shared<WeightSet>();
  std::unique_ptr<Graph> g;
  std::vector<int64_t> width;  // per ValueId: last dim
};

RandomGraph random_graph(std::mt19937& rng, int nodes) {
  RandomGraph r;
  const int64_t widths[] = {3, 8, 17};
  int wmat[3][3];
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      wmat[a][b] = r.ws->add("w", random_tensor({widths[b], widths[a]}, rng, 0.3f));
  NodeAttrs ln;
  ln.gamma = ln.beta = -1;
  r.g = std::make_unique<Graph>(r.ws);
  Graph& g = *r.g;
  std::vector<ValueId> vals;
  auto note = [&](ValueId v, int64_t w) {
    if (static_cast<size_t>(v) >= r.width.size()) r.width.resize(v + 1, 0);
    r.width[v] = w;
    vals.push_back(v);
  };
  for (int i = 0; i < 3; ++i) note(g.add_input(named("x", i)), widths[i]);
  for (int i = 0; i < nodes; ++i) {
    // Prefer recent values (short lifetimes) but sometimes reach far back (long ones).
    auto pick = [&] {
      const int n = static_cast<int>(vals.size());
      std::uniform_int_distribution<int> far(0, n - 1), near(std::max(0, n - 4), n - 1);
      return vals[rng() % 4 == 0 ? far(rng) : near(rng)];
    };
    const ValueId a = pick();
    const int64_t wa = r.width[a];
    const int wi = wa == 3 ? 0 : wa == 8 ? 1 : 2;
    const std::string name = named("n", i);
    ValueId y = kNone;
    switch (rng() % 5) {
      case 0: {
        const int to = static_cast<int>(rng() % 3);
        std::vector<ValueId> in{a};
        // A residual of the output width, if one exists.
        for (int t = 0; t < 6 && in.size() == 1; ++t) {
          const ValueId c = pick();
          if (r.width[c] == widths[to] && c != a) in.push_back(c);
        }
        y = g.add_node(Op::linear, name, in, with_weight(wmat[wi][to]));
        note(y, widths[to]);
        continue;
      }
      case 1: {
        ValueId b = kNone;
        for (int t = 0; t < 8 && b == kNone; ++t) {
          const ValueId c = pick();
          if (r.width[c] == wa) b = c;
        }
        y = g.add_node(Op::add, name, {a, b == kNone ? a : b}, NodeAttrs{});
        break;
      }
      case 2:
        y = g.add_node(Op::activation, name, {a}, with_act(Activation::gelu_tanh));
        break;
      case 3:
        y = g.add_node(Op::layernorm, name, {a}, ln);
        break;
      default:
        y = g.add_node(Op::softmax, name, {a}, NodeAttrs{});
        break;
    }
    note(y, wa);
  }
  // Outputs: the last value and a few random ones.
  g.mark_output(vals.back(), "out");
  for (int i = 0; i < 2; ++i) {
    const ValueId v = vals[3 + rng() % (vals.size() - 3)];
    if (!g.values()[v].is_output) g.mark_output(v, named("out", i));
  }
  return r;
}

}  // namespace

TEST_CASE("planner: on random graphs no two live values overlap, and results are unchanged") {
  std::mt19937 rng(2024);
  size_t total_arena = 0, total_sum = 0;
  int inplace = 0;
  for (int trial = 0; trial < 60; ++trial) {
    RandomGraph rg = random_graph(rng, 5 + trial % 40);
    const Graph& g = *rg.g;
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 9);
    TensorMap in;
    for (int i = 0; i < 3; ++i) in[named("x", i)] = random_tensor({rows, rg.width[i]}, rng);
    GraphSession session(g);
    const MemoryPlan& p = session.plan(in);
    // Independent lifetimes: first writer and last reader (outputs: to the end).
    const int end = static_cast<int>(g.nodes().size());
    std::vector<int> first(g.values().size(), -1), last(g.values().size(), -1);
    for (int i = 0; i < end; ++i)
      for (ValueId v : g.nodes()[i].outputs) first[v] = last[v] = i;
    for (int i = 0; i < end; ++i)
      for (ValueId v : g.nodes()[i].inputs)
        if (first[v] >= 0) last[v] = std::max(last[v], i);
    for (ValueId v : g.outputs()) last[v] = end;
    for (size_t u = 0; u < first.size(); ++u) {
      if (first[u] < 0) continue;
      REQUIRE(p.offset[u] >= 0);
      CHECK(p.offset[u] % static_cast<int64_t>(kArenaAlign) == 0);
      CHECK(static_cast<size_t>(p.offset[u]) + p.bytes[u] <= p.arena_bytes);
      CHECK(p.bytes[u] >= static_cast<size_t>(rows * rg.width[u]) * sizeof(float));
      for (size_t v = u + 1; v < first.size(); ++v) {
        if (first[v] < 0) continue;
        const bool bytes_overlap = p.offset[u] < p.offset[v] + static_cast<int64_t>(p.bytes[v]) &&
                                   p.offset[v] < p.offset[u] + static_cast<int64_t>(p.bytes[u]);
        const int lo = std::max(first[u], first[v]), hi = std::min(last[u], last[v]);
        if (!bytes_overlap || lo > hi) continue;
        // Sharing while both live is allowed only at an in-place hand-over: one dies at the node
        // that writes the other over it.
        const size_t older = first[u] < first[v] ? u : v, newer = older == u ? v : u;
        const Node& n = g.nodes()[first[newer]];
        const int slot = inplace_input(n, 0);
        const bool handover = lo == hi && last[older] == first[newer] && slot >= 0 &&
                              n.outputs[0] == static_cast<ValueId>(newer) &&
                              n.inputs[slot] == static_cast<ValueId>(older);
        INFO("trial " << trial << ": values " << u << " and " << v << " share bytes while live");
        CHECK(handover);
      }
    }
    total_arena += p.arena_bytes;
    total_sum += p.total_bytes;
    inplace += p.inplace_count;
    // The arena run equals running each node alone (one-node graphs, nothing shared).
    RunContext ctx;
    TensorMap got = session.run(in, ctx);
    std::vector<Tensor> ref(g.values().size());
    for (int i = 0; i < 3; ++i) ref[i] = in.at(named("x", i));
    for (const Node& n : g.nodes()) {
      Graph one(rg.ws);
      TensorMap one_in;
      std::vector<ValueId> ins;
      for (size_t j = 0; j < n.inputs.size(); ++j) {
        const std::string name = named("i", j);
        ins.push_back(one.add_input(name));
        one_in[name] = ref[n.inputs[j]];
      }
      one.mark_output(one.add_node(n.op, n.name, ins, n.attrs), "o");
      ref[n.outputs[0]] = execute(one, one_in, ctx).at("o");
    }
    for (ValueId v : g.outputs()) CHECK(max_diff(got.at(g.values()[v].name), ref[v]) == 0);
    // Outputs do not alias the arena: a second run leaves the first run's outputs intact.
    TensorMap in2 = in;
    for (auto& [name, t] : in2) t = random_tensor(t.shape(), rng);
    session.run(in2, ctx);
    for (ValueId v : g.outputs()) CHECK(max_diff(got.at(g.values()[v].name), ref[v]) == 0);
  }
  MESSAGE("60 random graphs: arena " << total_arena << " bytes vs " << total_sum
                                     << " bytes of values, " << inplace << " in place");
  CHECK(total_arena < total_sum);
  CHECK(inplace > 0);
}

TEST_CASE("planner: plans are cached per input shape") {
  std::mt19937 rng(3);
  RandomGraph rg = random_graph(rng, 20);
  GraphSession s(*rg.g);
  auto inputs = [&](int64_t rows) {
    TensorMap in;
    for (int i = 0; i < 3; ++i) in[named("x", i)] = random_tensor({rows, rg.width[i]}, rng);
    return in;
  };
  RunContext ctx;
  s.run(inputs(4), ctx);
  s.run(inputs(4), ctx);
  CHECK(s.cached_plans() == 1);
  const size_t small = s.arena_bytes();
  s.run(inputs(40), ctx);
  CHECK(s.cached_plans() == 2);
  CHECK(s.arena_bytes() > small);
  CHECK(s.plan(inputs(40)).arena_bytes == s.arena_bytes());
}

TEST_CASE("passes: prepack packs [K, N] weights (kn_layout) and a tied table read from its pack") {
  // A GPT-2-like tail: table rows gathered, a Conv1D-style weight stored [K, N], and an LM head
  // tied to the table. Odd sizes (vocab 17, K 7, N 3) exercise the packing tails.
  std::mt19937 rng(12);
  auto ws = std::make_shared<WeightSet>();
  const int table = ws->add("wte", random_tensor({17, 7}, rng));
  const int kn = ws->add("conv", random_tensor({7, 7}, rng));
  ws->at_mut(kn).kn_layout = true;
  const int kn2 = ws->add("conv2", random_tensor({7, 3}, rng));
  ws->at_mut(kn2).kn_layout = true;
  Graph g(ws);
  ValueId ids = g.add_input("ids");
  NodeAttrs ga;
  ga.table = table;
  ValueId x = g.add_node(Op::gather, "wte", {ids}, ga);
  ValueId h = g.add_node(Op::linear, "conv", {x}, with_weight(kn));
  g.mark_output(g.add_node(Op::linear, "conv2", {h}, with_weight(kn2)), "small");
  g.mark_output(g.add_node(Op::linear, "head", {h}, with_weight(table)), "logits");
  g.mark_output(x, "embedded");
  Tensor idt(DType::i64, {2, 3});
  for (int64_t i = 0; i < 6; ++i) idt.data<int64_t>()[i] = (i * 5 + 16) % 17;

  // Plain references: y = x · W for [K, N] weights, logits = h · tableᵀ.
  const float* t = ws->at(table).tensor.data<float>();
  const float* w1 = ws->at(kn).tensor.data<float>();
  const float* w2 = ws->at(kn2).tensor.data<float>();
  std::vector<double> want_h(6 * 7, 0), want_small(6 * 3, 0), want_logits(6 * 17, 0);
  for (int r = 0; r < 6; ++r) {
    const float* row = t + idt.data<int64_t>()[r] * 7;
    for (int n = 0; n < 7; ++n)
      for (int k = 0; k < 7; ++k) want_h[r * 7 + n] += double(row[k]) * w1[k * 7 + n];
    for (int n = 0; n < 3; ++n)
      for (int k = 0; k < 7; ++k) want_small[r * 3 + n] += want_h[r * 7 + k] * w2[k * 3 + n];
    for (int v = 0; v < 17; ++v)
      for (int k = 0; k < 7; ++k) want_logits[r * 17 + v] += want_h[r * 7 + k] * t[v * 7 + k];
  }
  auto check = [&](const TensorMap& out) {
    REQUIRE(out.at("small").shape() == Shape{2, 3, 3});
    REQUIRE(out.at("logits").shape() == Shape{2, 3, 17});
    for (int i = 0; i < 18; ++i)
      CHECK(std::fabs(out.at("small").data<float>()[i] - want_small[i]) < 1e-4);
    for (int i = 0; i < 102; ++i)
      CHECK(std::fabs(out.at("logits").data<float>()[i] - want_logits[i]) < 1e-4);
    for (int r = 0; r < 6; ++r)
      for (int k = 0; k < 7; ++k)
        CHECK(out.at("embedded").data<float>()[r * 7 + k] == t[idt.data<int64_t>()[r] * 7 + k]);
  };
  RunContext ctx;
  const Tensor table_copy = ws->at(table).tensor;  // keeps the rows alive for the references
  check(execute(g, {{"ids", idt}}, ctx));          // f32 weights, packed per call
  CHECK(passes::prepack({&g}) == 3);
  CHECK(ws->at(kn).tensor.empty());
  CHECK(ws->at(kn).packed.n() == 7);
  CHECK(ws->at(kn2).packed.n() == 3);
  CHECK(ws->at(kn2).packed.k() == 7);
  CHECK(ws->at(table).tensor.empty());  // the table is read from the packed head now
  check(execute(g, {{"ids", idt}}, ctx));
  // Out-of-range ids are still rejected when the table is packed.
  idt.data<int64_t>()[0] = 17;
  CHECK_THROWS_AS(execute(g, {{"ids", idt}}, ctx), Error);
}

namespace {

// How the attention graph's q/k/v weights are held: f32 rows of one in_proj matrix; that matrix
// as stored in reduced precision (BF16 bits, or I8 with per-row scales), rows viewed; three
// separately stored matrices (joined by a copy).
enum class Held { f32_rows, stored_rows, stored_parts };

AttnGraph lowp_attention_graph(const Tensor& in_w, const Tensor& in_b, kernels::WeightType type,
                               Held held) {
  const int64_t e = 12, heads = 3;
  AttnGraph r;
  r.ws->gemm_type = type;
  // in_w converted as the checkpoint would store it.
  Tensor stored = in_w, scale;
  if (held != Held::f32_rows) {
    if (type == kernels::WeightType::int8) {
      stored = Tensor(DType::i8, {3 * e, e});
      scale = Tensor(DType::f32, {3 * e});
      kernels::quantize_weights_int8(in_w.data<float>(), 3 * e, e, e, false, stored.data<int8_t>(),
                                     scale.data<float>());
    } else {
      stored = Tensor(DType::bf16, {3 * e, e});
      for (int64_t i = 0; i < in_w.numel(); ++i)
        stored.data<uint16_t>()[i] = kernels::f32_to_bf16(in_w.data<float>()[i]);
    }
  }
  int w[3], b[3];
  for (int i = 0; i < 3; ++i) {
    if (held == Held::stored_parts) {
      w[i] = r.ws->add(named("w", i), stored.slice(i * e, e).reshaped({e, e}), {named("w", i)});
      if (!scale.empty()) r.ws->at_mut(w[i]).scale = scale.slice(i * e, e);
    } else {
      w[i] = r.ws->add_rows(named("w", i), stored, i * e, e, false, scale, {"in_proj"});
    }
    b[i] = r.ws->add_rows(named("b", i), in_b, i * e, e, false);
  }
  r.g = std::make_unique<Graph>(r.ws);
  Graph& g = *r.g;
  ValueId x = g.add_input("x");
  ValueId proj[3];
  for (int i = 0; i < 3; ++i) {
    NodeAttrs a = with_weight(w[i]);
    a.bias = b[i];
    proj[i] = g.add_node(Op::linear, "attn." + std::string(1, "qkv"[i]) + "_proj", {x}, a);
  }
  NodeAttrs a;
  a.heads = heads;
  a.head_dim = e / heads;
  ValueId s = g.add_node(Op::attention_scores, "attn.scores", {proj[0], proj[1], kNone, kNone}, a);
  ValueId p = g.add_node(Op::softmax, "attn.softmax", {s}, NodeAttrs{});
  g.mark_output(g.add_node(Op::attention_context, "attn.context", {p, proj[2]}, a), "y");
  return r;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

}  // namespace

TEST_CASE("passes: bf16 and int8 weights, converted at load or held as stored, fused or not") {
  std::mt19937 rng(21);
  const Tensor in_w = random_tensor({36, 12}, rng), in_b = random_tensor({36}, rng);
  const TensorMap in{{"x", random_tensor({2, 5, 12}, rng)}};
  for (auto type : {kernels::WeightType::bf16, kernels::WeightType::int8}) {
    INFO("type " << kernels::weight_type_name(type));
    // The f32 rows converted by prepack: the reference.
    AttnGraph ref = lowp_attention_graph(in_w, in_b, type, Held::f32_rows);
    passes::run({ref.g.get()});
    RunContext ctx;
    const Tensor want = execute(*ref.g, in, ctx).at("y");
    int packed = 0;
    for (const auto& entry : ref.ws->entries)
      if (!entry.packed.empty()) {
        CHECK(entry.packed.type() == type);
        ++packed;
      }
    CHECK(packed == 1);  // q, k, v fused into one GEMM
    // The same weights as stored: fused as a view of the rows or by a copy, packed directly.
    for (Held held : {Held::stored_rows, Held::stored_parts}) {
      AttnGraph g = lowp_attention_graph(in_w, in_b, type, held);
      passes::run({g.g.get()});
      CHECK(count_op(*g.g, Op::linear) == 1);
      CHECK(same_bits(execute(*g.g, in, ctx).at("y"), want));
    }
    // Without passes: the executor packs each GEMM per call from the data as stored.
    AttnGraph plain = lowp_attention_graph(in_w, in_b, type, Held::stored_rows);
    passes::run({plain.g.get()}, passes::parse("none"));
    CHECK(count_op(*plain.g, Op::linear) == 3);
    CHECK(plain.ws->at(0).tensor.dtype() ==
          (type == kernels::WeightType::int8 ? DType::i8 : DType::bf16));  // no f32 copy
    CHECK(max_diff(execute(*plain.g, in, ctx).at("y"), want) < 1e-5);
  }
}

TEST_CASE("passes: finalize_weights converts BF16 read as f32 and refuses I8 outside a GEMM") {
  std::mt19937 rng(22);
  const Tensor t = random_tensor({5, 4}, rng);
  Tensor bits(DType::bf16, {5, 4}), q(DType::i8, {5, 4}), s(DType::f32, {5});
  for (int64_t i = 0; i < t.numel(); ++i)
    bits.data<uint16_t>()[i] = kernels::f32_to_bf16(t.data<float>()[i]);
  kernels::quantize_weights_int8(t.data<float>(), 5, 4, 4, false, q.data<int8_t>(),
                                 s.data<float>());
  for (bool int8 : {false, true}) {
    auto ws = std::make_shared<WeightSet>();
    ws->gemm_type = int8 ? kernels::WeightType::int8 : kernels::WeightType::bf16;
    NodeAttrs ga;
    ga.table = ws->add("table", int8 ? q : bits, {"table.weight"});
    if (int8) ws->at_mut(ga.table).scale = s;
    Graph g(ws);
    g.mark_output(g.add_node(Op::gather, "table", {g.add_input("ids")}, ga), "y");
    if (int8) {
      const std::string msg = [&] {
        try {
          passes::run({&g});
        } catch (const Error& e) {
          return std::string(e.what());
        }
        return std::string();
      }();
      CHECK(msg.find("'table.weight' is I8") != std::string::npos);
      CHECK(msg.find("not a GEMM weight") != std::string::npos);
    } else {
      passes::run({&g});
      REQUIRE(ws->at(ga.table).tensor.dtype() == DType::f32);
      for (int64_t i = 0; i < t.numel(); ++i)
        CHECK(ws->at(ga.table).tensor.data<float>()[i] ==
              kernels::bf16_to_f32(bits.data<uint16_t>()[i]));
    }
  }
}
