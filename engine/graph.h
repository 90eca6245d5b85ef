// The graph of operators: named values (inputs, intermediates, outputs) and the nodes that
// compute them, in execution order. Shapes are not stored: they follow from the inputs' shapes
// at run time (batch and sequence lengths vary per call).
//
// Weights live in a WeightSet shared by every graph of a model (forward, encode, decode step);
// a node refers to them by index. This is the structure fusion passes, the memory planner and
// the profiler work on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace tessera {

// Constant weights of a model. Matrices a GEMM reads are kept packed; vectors (biases,
// LayerNorm parameters) and tables (embeddings, positions) as f32 tensors.
struct WeightSet {
  struct Entry {
    std::string name;               // e.g. "encoder.layers.0.linear1.weight"
    Tensor tensor;                  // f32 data (may be a view into the mapped file)
    kernels::PackedWeights packed;  // for GEMM weights: the packed copy (tensor then released)
  };
  std::vector<Entry> entries;

  int add(std::string name, Tensor t);
  int add_packed(std::string name, kernels::PackedWeights p);
  const Entry& at(int i) const { return entries.at(static_cast<size_t>(i)); }
  const float* f32(int i) const { return i < 0 ? nullptr : at(i).tensor.data<float>(); }
};

enum class Op : uint8_t {
  linear,      // y[.., N] = epilogue(x[.., K] · Wᵀ): bias, activation, optional residual input
  attention,   // multi-head scaled dot-product attention with masks (and optionally a KV cache)
  layernorm,   // y = LayerNorm(x) over the last dim
  add,         // y = a + b
  activation,  // y = act(x)
  softmax,     // y = softmax(x) over the last dim
  embedding,   // y[b, t, :] = table[ids[b, t]] * scale + positions[t + offset]
};
const char* op_name(Op op);

using ValueId = int;
constexpr ValueId kNone = -1;

struct Value {
  std::string name;
  bool is_input = false;
  bool optional = false;  // an input that may be absent at run time (masks)
  bool is_output = false;
};

struct NodeAttrs {
  // linear
  int weight = -1;  // WeightSet index of the packed matrix
  int bias = -1;    // WeightSet index of the [N] bias, or -1
  kernels::Activation act = kernels::Activation::none;
  // attention. Inputs: {q_src, kv_src, attn_mask, key_padding_mask}; q at column q_col of
  // q_src, k and v at columns k_col, v_col of kv_src (so a fused [.., 3E] projection is read in
  // place). With cache_slot >= 0 the new k/v rows are appended to that slot of the session's KV
  // cache at position ctx.past_len and the queries attend over everything cached so far.
  int64_t heads = 0, head_dim = 0;
  int64_t q_col = 0, k_col = 0, v_col = 0;
  bool causal = false;
  int cache_slot = -1;
  // layernorm
  int gamma = -1, beta = -1;
  float eps = 1e-5f;
  // embedding: table [vocab, dim], optional positional table [max_positions, dim]
  int table = -1, pos_table = -1;
  float scale = 1.0f;
  bool positions_from_cache = false;  // positions start at ctx.past_len (decode steps)
};

struct Node {
  Op op;
  std::string name;  // e.g. "encoder.layers.0.self_attn"
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  NodeAttrs attrs;
};

class Graph {
 public:
  explicit Graph(std::shared_ptr<const WeightSet> weights) : weights_(std::move(weights)) {}

  ValueId add_input(const std::string& name, bool optional = false);
  ValueId add_node(Op op, const std::string& name, std::vector<ValueId> inputs,
                   const NodeAttrs& attrs, const std::string& output_name = "");
  // Marks a value as a graph output under a public name.
  void mark_output(ValueId v, const std::string& name);

  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<ValueId>& inputs() const { return inputs_; }
  const std::vector<ValueId>& outputs() const { return outputs_; }
  const WeightSet& weights() const { return *weights_; }
  ValueId find(const std::string& name) const;  // kNone if absent

  // One line per node: "name  op  inputs -> outputs".
  std::string to_string() const;

 private:
  std::shared_ptr<const WeightSet> weights_;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> inputs_, outputs_;
};

}  // namespace tessera
