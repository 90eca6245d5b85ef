// Graph passes: small rewrites run in a fixed pipeline after a model family has built its
// graphs. Builders emit plain operators (linear without epilogue, bias_add, activation, add,
// layernorm, attention_scores -> softmax -> attention_context, gather -> scale ->
// add_positions); the passes fuse them into the operators the kernels run best and the
// executor runs either form. Each pass can be turned off by name (--passes / TESSERA_PASSES).
//
// Pipeline (in this order):
//   fold_constants      nodes that depend only on weights are evaluated once, become constants
//   fuse_embedding      gather [-> scale] [-> add_positions]            -> embedding
//   fuse_epilogue       linear -> bias_add [-> activation]              -> linear(bias, act)
//   fuse_qkv            q/k/v linears of one attention over one input   -> one linear [.., 3E]
//                       (k/v over the memory for cross-attention        -> one linear [.., 2E])
//   fuse_residual       add(linear(x), r)                                -> linear(x, residual r)
//   fuse_add_layernorm  layernorm(add(a, b))                             -> layernorm(a, b)
//                       (the sum is a second output where others read it: pre-LN)
//   fuse_attention      attention_scores -> softmax -> attention_context -> attention
//   dce                 nodes whose outputs nobody reads
//   prepack             GEMM weights packed into the kernel layout; the f32 originals dropped
//                       (and their mapped pages released) where nothing else reads them
#pragma once

#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "engine/graph/graph.h"

namespace tessera::passes {

// Pass names in pipeline order.
const std::vector<std::string>& names();

struct Options {
  std::set<std::string> disabled;
  bool enabled(const std::string& pass) const { return !disabled.count(pass); }
};

// Parses a --passes / TESSERA_PASSES value:
//   "all" (or empty)     every pass
//   "none"               no pass (the graph as the builder emitted it)
//   "-a,-b"              every pass except a and b
//   "a,b"                only a and b
// Throws Error on an unknown pass name (listing the valid ones) or on mixing the two list forms.
Options parse(const std::string& spec, const std::string& what = "--passes");
// The options the model families use: the innermost Scoped of this thread (a library model's
// load option), else the process-wide set_default() (the CLI's --passes), else TESSERA_PASSES,
// else all.
const Options& defaults();
void set_default(const Options& o);
class Scoped {
 public:
  explicit Scoped(const Options& o);
  ~Scoped();
  Scoped(const Scoped&) = delete;
  Scoped& operator=(const Scoped&) = delete;

 private:
  Options options_;
  const Options* previous_;
};
// Where per-pass counts go (the CLI's --verbose); none by default.
void set_logger(std::function<void(const std::string&)> log);

struct Stats {
  std::string pass;
  size_t nodes_before = 0, nodes_after = 0;  // over all the graphs of the call
  int rewrites = 0;
};

// Runs the pipeline on the graphs of one model (they share one WeightSet; prepack considers
// every graph's readers before dropping a weight's f32 original).
std::vector<Stats> run(const std::vector<Graph*>& graphs, const Options& o = defaults());

// The individual passes; each returns how many rewrites it made.
int fold_constants(Graph& g);
int fuse_embedding(Graph& g);
int fuse_epilogue(Graph& g);
int fuse_qkv(Graph& g);
int fuse_residual(Graph& g);
int fuse_add_layernorm(Graph& g);
int fuse_attention(Graph& g);
int dce(Graph& g);
// Packs the linear weights of all `graphs` (as WeightSet::gemm_type) and releases what nothing
// else reads. Returns how many weights it packed.
int prepack(const std::vector<Graph*>& graphs);
// Run by run() after the passes, whatever the options: weights still held as stored in reduced
// precision (WeightSet) meet their readers. BF16 read as f32 (a bias, a table) is converted to
// f32; I8 must be a GEMM weight (a table tied to one is packed, its rows read from the packed
// copy), else Error naming the tensor.
void finalize_weights(const std::vector<Graph*>& graphs);

// Helpers shared by the passes (engine/graph/passes/rewrite.cpp).
namespace detail {
// Removes the nodes flagged dead (order of the others kept).
void erase_nodes(Graph& g, const std::vector<bool>& dead);
// Number of node inputs reading v, plus one if v is a graph output.
int use_count(const Graph& g, ValueId v);
bool is_output(const Graph& g, ValueId v);
// Index of the node writing v, or -1.
int producer(const Graph& g, ValueId v);
// Names the outputs of a fused node after it ("<node>:out", a second one "<node>:sum"), except
// graph outputs, whose names are public.
void name_outputs(Graph& g, const Node& n);

// Pattern matching and rewriting, shared by the fusions.
// The node reading v when v has exactly one use (one node input, not a graph output) and it is
// input `slot` of that node; else -1. With `op`: only when that node is an `op`.
int sole_reader(const Graph& g, ValueId v, int slot = 0);
int sole_reader(const Graph& g, ValueId v, Op op, int slot = 0);
// The chain from node `from` through the sole readers (at input 0) of each node's first output,
// which must be `ops` in this order: their indices, or empty where the chain breaks.
std::vector<int> follow(const Graph& g, int from, std::initializer_list<Op> ops);
// Puts `fused` at node `at` (its outputs named after it) and erases the nodes `folded` into it
// (their indices, or a flag per node).
void replace(Graph& g, int at, Node fused, std::initializer_list<int> folded);
void replace(Graph& g, int at, Node fused, const std::vector<bool>& folded);
// Runs a fusion to its fixed point: `rewrite_at(g, i)` on nodes i = 0, 1, ... until it rewrites
// the graph at one (returns true), then again from node 0, until a whole sweep rewrites nothing.
// Returns how many rewrites it made.
int rewrite_all(Graph& g, bool (*rewrite_at)(Graph& g, int node));
}  // namespace detail

}  // namespace tessera::passes
