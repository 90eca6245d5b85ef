// engine/graph/: owns the graph, its passes (passes/), the memory planner and the executor.
// May use: engine/io/, kernels/. Used by engine/observe/, models/, tools/.
//
// The graph of operators: named values (inputs, intermediates, outputs) and the nodes that
// compute them, in execution order. Shapes are not stored: they follow from the inputs' shapes
// at run time (batch and sequence lengths vary per call).
//
// Weights live in a WeightSet shared by every graph of a model (forward, encode, decode step);
// a node refers to them by index. This is the structure fusion passes, the memory planner and
// the profiler work on.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/io/tensor.h"
#include "kernels/kernels.h"

namespace tessera {

// Constant weights of a model. Families register every weight as an f32 tensor (a view into the
// mapped file where the file holds f32); the prepack pass (engine/passes) packs the matrices a
// GEMM reads into the kernel's layout, as `gemm_type` (the model's --dtype), and drops the f32
// original where nothing else reads it. Vectors (biases, LayerNorm parameters) and tables
// (embeddings, positions) stay f32 tensors. A weight the GEMM may take as it is stored in reduced
// precision is registered that way instead, for the packing to read directly: BF16 bits (a bf16
// checkpoint whose GEMMs run bf16) or I8 values with their per-channel scales (a quantized model
// directory); the pipeline's last step (passes::finalize_weights) converts a BF16 one to f32
// where a node reads f32, and refuses an I8 one there.
struct WeightSet {
  struct Entry {
    std::string name;               // e.g. "encoder.layers.0.linear1.weight"
    Tensor tensor;                  // f32 data (may be a view into the mapped file); or BF16 / I8
                                    // as stored (above)
    kernels::PackedWeights packed;  // for GEMM weights: the packed copy (tensor then released)
    bool mapped = false;            // tensor is a view of a read-only file mapping
    // When `tensor` is rows [base_row, base_row + rows) of a larger matrix `base` (q, k, v of
    // one in_proj_weight): passes concatenate consecutive rows of one base without a copy.
    Tensor base;
    int64_t base_row = 0;
    // `tensor` is a GEMM weight stored [K, N] (a Hugging Face Conv1D) instead of [N, K]: packed
    // with kernels::pack_weights_kn.
    bool kn_layout = false;
    // tensor I8: the scale of each output channel, F32 [N] (kernels::quantize_weights_int8);
    // base_scale: those of `base`'s rows.
    Tensor scale, base_scale;
    // The checkpoint tensors (stored names) this weight was read from, for `tessera quantize`
    // and `tessera inspect`. exact: it is their rows, concatenated, input columns permuted at
    // most -- operations that commute with a per-output-channel conversion, so the sources may
    // be stored converted (false: a transformed copy, e.g. scaled).
    std::vector<std::string> sources;
    bool exact = true;
    // How the graphs read it, as passes::finalize_weights found: a linear node's matrix; f32 data
    // (a bias, a norm, a constant, a table gathered from its own rows).
    bool gemm = false, reads_f32 = false;
  };
  std::vector<Entry> entries;
  // Concatenations made by passes (fuse_qkv), by source weights: shared by every graph.
  std::map<std::vector<int>, int> concatenated;
  // The type GEMM weights are packed as (the prepack pass, the executor without it).
  kernels::WeightType gemm_type = kernels::WeightType::f32;

  int add(std::string name, Tensor t, std::vector<std::string> sources = {});
  // A view of a mapped weight file (the prepack pass may madvise its pages away once packed).
  int add_mapped(std::string name, Tensor t, std::vector<std::string> sources = {});
  int add_packed(std::string name, kernels::PackedWeights p, std::vector<std::string> sources = {});
  // Rows [begin, begin + count) of the matrix (or vector) `base`, as a view; an I8 base comes
  // with its scales.
  int add_rows(std::string name, const Tensor& base, int64_t begin, int64_t count, bool mapped,
               const Tensor& base_scale = {}, std::vector<std::string> sources = {});
  // A new weight: the rows of entries `ids` one after the other (a copy, in their dtype; F32 and
  // BF16 parts mixed: f32). Throws Error naming them when they cannot be joined (I8 mixed with
  // others, different widths, the [K, N] layout).
  int add_concat(std::string name, const std::vector<int>& ids);
  Entry& at_mut(int i) { return entries.at(static_cast<size_t>(i)); }
  const Entry& at(int i) const { return entries.at(static_cast<size_t>(i)); }
  const float* f32(int i) const { return i < 0 ? nullptr : at(i).tensor.data<float>(); }
};

// Packs a GEMM weight for the kernels as `type`, from what the entry holds: f32 (converted by
// kernels::pack_weights_as), BF16 bits (as they are for bf16, widened otherwise) or I8 with its
// scales (type int8 only). Throws Error naming the weight (a non-finite weight to quantize, an
// I8 weight asked for another type).
kernels::PackedWeights pack_weight(const WeightSet::Entry& e, kernels::WeightType type);

// Builders emit the plain operators; the passes of engine/passes fuse them into linear (with an
// epilogue), attention, layernorm (with a residual) and embedding. The executor runs both.
enum class Op : uint8_t {
  linear,      // y[.., N] = epilogue(x[.., K] · Wᵀ): bias, activation, optional residual input
  attention,   // multi-head scaled dot-product attention with masks (and optionally a KV cache)
  layernorm,   // y = LayerNorm(x [+ residual]) over the last dim; optional 2nd output: the sum
  add,         // y = a + b
  activation,  // y = act(x)
  softmax,     // y = softmax(x) over the last dim
  embedding,   // y[b, t, :] = table[ids[b, t]] * scale + positions[t + offset]
  // Plain (unfused) operators.
  bias_add,           // y[.., N] = x[.., N] + bias[N]                       (attrs.bias)
  scale,              // y = x * attrs.scale
  gather,             // y[b, t, :] = table[ids[b, t]]                       (attrs.table)
  add_positions,      // y[b, t, :] = x[b, t, :] + pos_table[t + offset]     (attrs.pos_table)
  attention_scores,   // s[B, H, T, S] = Q·Kᵀ / sqrt(head_dim) + masks (-inf where not allowed)
  attention_context,  // y[B, T, H*D] = P[B, H, T, S] · V
  constant,           // y = the weight attrs.weight (no inputs)
  // Operators of the rnn_attention family (models/rnn_attention.cpp), which runs its kernels
  // itself: nodes for the profiler to name, never run by the executor.
  rnn_cell,            // a recurrent cell (GRU/LSTM) step or a layer's whole recurrence
  additive_attention,  // v · tanh(W s + U h_j), masked softmax, context
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
  // linear: weight [N, K] (packed, or an f32 tensor the executor packs per call when the prepack
  // pass is off). constant: the weight it yields.
  int weight = -1;  // WeightSet index of the matrix
  int bias = -1;    // WeightSet index of the [N] bias, or -1
  kernels::Activation act = kernels::Activation::none;
  // attention. Inputs: {q_src, kv_src, attn_mask, key_padding_mask[, v_src]}; q at column q_col
  // of q_src, k and v at columns k_col, v_col of kv_src (so a fused [.., 3E] projection is read
  // in place); v from v_src instead when that optional 5th input is given. With cache_slot >= 0
  // the new k/v rows are appended to that slot of the session's KV cache at position
  // ctx.past_len and the queries attend over everything cached so far.
  // attention_scores. Inputs {q_src, k_src, attn_mask, key_padding_mask}: q_col, k_col, heads,
  //   head_dim, causal, cache_slot (appends k to the cache) as for attention.
  // attention_context. Inputs {probs, v_src}: v_col, heads, head_dim, cache_slot (appends v).
  int64_t heads = 0, head_dim = 0;
  int64_t q_col = 0, k_col = 0, v_col = 0;
  bool causal = false;
  int cache_slot = -1;
  // layernorm
  int gamma = -1, beta = -1;
  float eps = 1e-5f;
  // embedding: table [vocab, dim], optional positional table [max_positions, dim]. A table
  // that is also a linear's weight (a tied LM head) may be read from its packed copy
  // (kernels::packed_rows) once the prepack pass has dropped the f32 original.
  // (gather: table; add_positions: pos_table and positions_from_cache; scale: scale)
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
  // A graph whose passes may add weights (packed, concatenated, folded) to the shared set.
  explicit Graph(std::shared_ptr<WeightSet> weights)
      : weights_(weights), mutable_weights_(std::move(weights)) {}
  // A graph over a set the passes must not change (passes that need to add weights skip).
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

  // For passes: direct access to the nodes and values, and the shared weights (null when the
  // graph was built over a const set).
  std::vector<Node>& mutable_nodes() { return nodes_; }
  Value& value(ValueId v) { return values_.at(static_cast<size_t>(v)); }
  ValueId add_value(const std::string& name);
  WeightSet* mutable_weights() const { return mutable_weights_.get(); }
  // Consumers of each value: (node index, input slot) pairs, in node order.
  std::vector<std::vector<std::pair<int, int>>> consumers() const;

 private:
  std::shared_ptr<const WeightSet> weights_;
  std::shared_ptr<WeightSet> mutable_weights_;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> inputs_, outputs_;
};

}  // namespace tessera
