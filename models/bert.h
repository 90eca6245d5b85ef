// The `bert` family: a Hugging Face BertModel checkpoint as exported.
//
// config.json: vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
// intermediate_size, hidden_act (gelu -> erf GELU, gelu_new | gelu_pytorch_tanh -> tanh GELU,
// relu), max_position_embeddings, type_vocab_size, layer_norm_eps, position_embedding_type
// ("absolute" only).
// Tensors, with or without the "bert." prefix (LayerNorm.weight/bias also as the old
// LayerNorm.gamma/beta); Linear weights are [out, in]:
//   embeddings.{word_embeddings [V, H], position_embeddings [P, H], token_type_embeddings
//   [TV, H], LayerNorm}
//   encoder.layer.N.attention.self.{query,key,value}.{weight [H, H], bias}
//   encoder.layer.N.attention.output.{dense, LayerNorm}
//   encoder.layer.N.intermediate.dense [I, H]   encoder.layer.N.output.{dense [H, I], LayerNorm}
//   pooler.dense [H, H] (optional: no pooler_output without it)
// Ignored: embeddings.position_ids (a buffer) and the task heads of BertFor* checkpoints (cls.*,
// classifier.*, qa_outputs.*).
//
// Block (post-LN):  x = LN(x + attn_out(attn(x)));  x = LN(x + out(act(intermediate(x))))
// Pooler: pooler_output = tanh(dense(x[:, 0])).
//
// `tessera run`: input_ids I64 [B, T], optional attention_mask [B, T] (1 = token, 0 = padding),
// token_type_ids I64 [B, T] (default 0), position_ids I64 [B, T] (default 0..T-1 in every row,
// as HF) -> last_hidden_state F32 [B, T, H], pooler_output F32 [B, H].
//
// Padding removal: when attention_mask holds padding, the real tokens of the batch are packed
// into one sequence, the dense layers run on it alone, attention runs per row over that row's
// tokens, and the result is scattered back. A padded position of last_hidden_state therefore
// holds ZEROS (Hugging Face computes a value there that no real token depends on); the pooler
// reads position 0 of each row as HF does (with left padding that is a padded position, and its
// pooler_output is tanh(pooler bias)). Without padding the plain batched graph runs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "engine/io/model_dir.h"
#include "models/model.h"

namespace tessera::models {

struct BertConfig {
  int64_t vocab_size = 0, hidden_size = 0, num_hidden_layers = 0, num_attention_heads = 0;
  int64_t intermediate_size = 0, max_position_embeddings = 0, type_vocab_size = 0;
  kernels::Activation hidden_act = kernels::Activation::gelu_erf;
  float layer_norm_eps = 1e-12f;
  int64_t pad_token_id = 0;
  bool pooler = false;  // pooler.dense present in the checkpoint

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

class BertModel final : public Model {
 public:
  // Reads the config, checks every tensor's presence and shape, builds the graphs and runs the
  // graph passes (which pack the GEMM weights).
  explicit BertModel(const ModelDir& dir, const LoadOptions& o = {});

  const BertConfig& config() const { return cfg_; }
  const char* family() const override { return "bert"; }
  TensorMap run(const TensorMap& inputs, NodeObserver* observer = nullptr) const override;
  const Graph& forward_graph() const override { return *forward_; }
  // The session (arena, memory plans) that runs the forward graph.
  GraphSession& forward_session() const override { return session(*forward_); }
  const std::vector<passes::Stats>& pass_stats() const override { return pass_stats_; }
  const BertModel* bert() const override { return this; }
  // The pooler run() runs after the encoder (null without pooler.dense weights).
  const Graph* pooler_graph() const { return pooler_.get(); }

  // run() without padding removal (the batched graph with a key padding mask), for tests and
  // benchmarks of padding removal. Same inputs and outputs.
  TensorMap run_padded(const TensorMap& inputs, NodeObserver* observer = nullptr) const;

 private:
  struct Prepared;
  Prepared prepare(const TensorMap& inputs) const;
  TensorMap run_batched(const Prepared& p, NodeObserver* observer) const;
  TensorMap run_packed(const Prepared& p, NodeObserver* observer) const;
  void pool(TensorMap& out, NodeObserver* observer) const;

  BertConfig cfg_;
  std::shared_ptr<WeightSet> weights_;
  // forward_: the whole encoder on a padded batch. segments_[0]: embeddings and layer 0's q/k/v
  // projection; segments_[l] (l >= 1): the rest of layer l-1 and layer l's q/k/v projection (the
  // last one ends with last_hidden_state): the packed path runs attention between them.
  std::unique_ptr<Graph> forward_, pooler_;
  std::vector<std::unique_ptr<Graph>> segments_;
  std::vector<passes::Stats> pass_stats_;
  // The graph sessions (arenas, memory plans) of callers that bind no SessionSet of their own
  // (engine/graph/executor.h); session(g) is the one a run of g on this thread uses.
  mutable SessionSet sessions_;
  GraphSession& session(const Graph& g) const { return SessionSet::current_or(sessions_).get(g); }
};

}  // namespace tessera::models
