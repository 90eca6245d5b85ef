// A loaded model of any family, behind one interface: what `tessera run` (and any other caller
// that only needs a forward pass) uses without knowing the family.
//
//   auto model = models::load_model(ModelDir(path));     // dispatches on config.json model_type
//   TensorMap out = model->run(inputs);                   // the DESIGN.md `tessera run` contract
//   if (const auto* g = model->gpt2()) ...                // family-specific APIs (generation, ...)
//
// Also here: the pieces the Hugging Face families share (checkpoint reading with prefixes and
// aliases, Conv1D weight packing, attention-mask parsing).
//
// Every family takes LoadOptions (models/weights.h): the type its GEMM weights are packed as.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "engine/graph/passes/passes.h"
#include "engine/io/model_dir.h"
#include "models/weights.h"

namespace tessera::models {

class TransformerModel;
class Gpt2Model;
class BertModel;
class RnnAttentionModel;

class Model {
 public:
  virtual ~Model() = default;
  // "transformer", "gpt2" or "bert" (config.json model_type).
  virtual const char* family() const = 0;
  // One forward pass on named inputs (names, dtypes and shapes as DESIGN.md's `tessera run`
  // table); throws Error naming the tensor on bad input. `observer` watches every graph node.
  virtual TensorMap run(const TensorMap& inputs, NodeObserver* observer = nullptr) const = 0;
  // The graph run() executes in the plain case (for `inspect --graph`, the profiler).
  virtual const Graph& forward_graph() const = 0;
  // The session (arena, memory plans) that runs forward_graph().
  virtual GraphSession& forward_session() const = 0;
  // Nodes before/after each graph pass over the model's graphs (inspect, --verbose).
  virtual const std::vector<passes::Stats>& pass_stats() const = 0;
  // The family's own class, or null when the model is of another family.
  virtual const TransformerModel* transformer() const { return nullptr; }
  virtual const Gpt2Model* gpt2() const { return nullptr; }
  virtual const BertModel* bert() const { return nullptr; }
  virtual const RnnAttentionModel* rnn_attention() const { return nullptr; }
};

// Reads config.json's model_type ("transformer", "gpt2", "bert") and loads that family, its GEMM
// weights as `o` says (models/weights.h). Throws Error naming config.json for a missing or
// unknown model_type.
std::unique_ptr<Model> load_model(const ModelDir& dir, const LoadOptions& o = {});
// The type the model's GEMM weights were packed as.
inline kernels::WeightType weight_type(const Model& m) {
  return m.forward_graph().weights().gemm_type;
}

namespace hf {

// Reads the tensors of a Hugging Face checkpoint: each name is looked up with the family's
// prefix ("transformer.", "bert.") when the checkpoint uses one, and without; LayerNorm weights
// are also found under their old names (gamma/beta). Every tensor is checked for presence,
// dtype (F32/F16/BF16, converted to f32; GEMM weights as models/weights.h reads them) and shape,
// and marked used (an I8 weight's `.scale` too); check_all_used() then rejects a checkpoint
// holding tensors the model does not know (except those `ignorable` says).
class CheckpointReader {
 public:
  CheckpointReader(const ModelDir& dir, const std::string& prefix, std::string summary);

  const ModelDir& dir() const { return dir_; }
  bool has(const std::string& name) const { return !resolve(name).empty(); }
  // The name as stored in the checkpoint (with the prefix where it has one).
  std::string stored_name(const std::string& name) const;
  // f32 tensor of the expected shape (a view when stored as f32, else a converted copy).
  // *mapped (when given) tells whether it is a view of the mapped file.
  Tensor get(const std::string& name, const Shape& expected, bool* mapped = nullptr);
  // The tensor registered in `ws` as one weight: WeightSet::add_mapped for a view of the file
  // (the prepack pass may release its pages once packed), else WeightSet::add. For GEMM weights
  // and the tables that may be tied to one (read as Want::gemm for ws.gemm_type): kn, stored
  // [K, N] (a Conv1D weight; WeightSet::Entry::kn_layout).
  int add(WeightSet& ws, const std::string& name, const Shape& expected, bool kn = false);
  // A GEMM weight as Want::gemm reads it (BF16 / I8 kept as stored for `gemm_type`).
  StoredWeight read(const std::string& name, const Shape& expected, kernels::WeightType gemm_type,
                    bool kn = false);
  // The tensor registered in `ws` as an owned copy (never a view of the file). For the small
  // tensors read as f32 at run time (biases, LayerNorm parameters, position tables): the file
  // cache may hand out large folios, and touching a view would map a whole folio back into the
  // process, pages of released GEMM weights included.
  int add_copy(WeightSet& ws, const std::string& name, const Shape& expected);
  void check_all_used(const std::function<bool(const std::string&)>& ignorable) const;

 private:
  std::string resolve(const std::string& name) const;  // "" when absent

  const ModelDir& dir_;
  std::string prefix_;  // "" when the checkpoint has no prefixed names
  std::string summary_;
  std::set<std::string> used_;
};

// An `attention_mask` input [B, T] of BOOL, U8, I32, I64 or F32 holding 0/1 (1 = keep): the key
// padding mask [B, T] U8 the attention operator takes (1 = padding). Throws Error naming `name`
// on other dtypes, shapes or values.
Tensor key_padding_from_attention_mask(const Tensor& mask, const std::string& name, int64_t batch,
                                       int64_t len);

// "input 'NAME' must be ..., got DTYPE [shape]" helpers.
std::string describe(const Tensor& t);
// Checks token ids: I64 [B, T] (batch < 0: any), every id in [0, limit).
void check_ids(const Tensor& t, const std::string& name, int64_t batch, int64_t limit,
               const std::string& limit_name);
// Rejects input names other than `allowed`, and missing required ones.
void check_names(const TensorMap& in, const std::vector<std::string>& allowed,
                 const std::vector<std::string>& required);

}  // namespace hf

}  // namespace tessera::models
