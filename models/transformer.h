// The `transformer` family: PyTorch nn.Transformer exactly (and its bare encoder or decoder
// stacks), optionally with token embeddings, sinusoidal positions and an output projection.
//
// Weights are read under nn.Transformer.state_dict() names. Three graphs are built at load:
//   forward      one full pass, the `tessera run` contract (masks as nn.Transformer.forward)
//   encode       src_ids -> every decoder layer's cross-attention keys and values
//
// The builders emit plain operators; engine/passes fuses them (see passes.h) at load.
//   decode_step  new target ids -> logits, self-attention keys/values appended to a KV cache
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "engine/graph/passes/passes.h"
#include "engine/io/model_dir.h"
#include "models/weights.h"

namespace tessera::models {

struct TransformerConfig {
  int64_t d_model = 0, nhead = 0, num_encoder_layers = 0, num_decoder_layers = 0;
  int64_t dim_feedforward = 0;
  kernels::Activation activation = kernels::Activation::relu;
  float layer_norm_eps = 1e-5f;
  bool norm_first = false;
  // Token models (all present or all absent).
  bool embeddings = false;
  int64_t src_vocab_size = 0, tgt_vocab_size = 0, max_position = 0;
  bool scale_embedding = false;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;
  // Present in the checkpoint?
  bool encoder_norm = false, decoder_norm = false;

  int64_t head_dim() const { return d_model / nhead; }
  bool has_encoder() const { return num_encoder_layers > 0; }
  bool has_decoder() const { return num_decoder_layers > 0; }
};

class TransformerModel {
 public:
  // Reads the config, checks every tensor's presence and shape, packs the GEMM weights.
  explicit TransformerModel(const ModelDir& dir, const LoadOptions& o = {});

  const TransformerConfig& config() const { return cfg_; }
  const Graph& forward_graph() const { return *forward_; }
  const Graph* encode_graph() const { return encode_.get(); }
  const Graph* decode_step_graph() const { return step_.get(); }
  const WeightSet& weights() const { return *weights_; }
  // What the graph passes did at load (passes::defaults() chose which ran).
  const std::vector<passes::Stats>& pass_stats() const { return pass_stats_; }
  // The session (arena, memory plans) that runs the forward graph.
  GraphSession& forward_session() const { return session(*forward_); }

  // `tessera run`: validates the named inputs (names, dtypes, ranks, shapes, token ids) against
  // the contract of DESIGN.md, then runs the forward graph. Throws Error naming the tensor.
  // `observer` (optional) watches every node (profiler, attention maps).
  TensorMap run(const TensorMap& inputs, NodeObserver* observer = nullptr) const;

  // Greedy decoding of a batch of ragged sources (token ids, eos appended by the caller as the
  // model expects). Each row stops at eos_id or after max_new_tokens; the returned rows hold the
  // generated ids without bos and without eos.
  std::vector<std::vector<int64_t>> greedy(const std::vector<std::vector<int64_t>>& sources,
                                           int64_t max_new_tokens,
                                           NodeObserver* observer = nullptr) const;

  // Building blocks of greedy(), public for tests: encode a padded batch, then run decode steps.
  // encode() removes the padding: when src_key_padding marks any position, only the real tokens
  // run through the encoder layers (packed into one sequence, attention per source), and the
  // memory keys/values come back in the padded layout with ZEROS at padded positions (the
  // decoder's cross-attention masks them, so they are never read). `tessera run` stays dense.
  struct EncoderState {
    TensorMap memory_kv;        // "memory_k.L", "memory_v.L": [B, S, E] cross-attention keys/values
    Tensor memory_key_padding;  // [B, S] u8
  };
  EncoderState encode(const Tensor& src_ids, const Tensor& src_key_padding,
                      NodeObserver* observer = nullptr) const;
  // Runs one step over `tgt_ids` [B, T_new] at positions [past_len, past_len + T_new): appends
  // their keys/values to `cache` and returns logits [B, T_new, V].
  Tensor decode_step(const EncoderState& enc, const Tensor& tgt_ids, KVCache& cache,
                     int64_t past_len, NodeObserver* observer = nullptr) const;

 private:
  TransformerConfig cfg_;
  std::shared_ptr<WeightSet> weights_;
  std::unique_ptr<Graph> forward_, encode_, step_;
  std::vector<passes::Stats> pass_stats_;
  // Padding removal in encode(): enc_embed_ embeds the padded batch; enc_segments_[0] gives
  // layer 0's fused q|k|v projection, enc_segments_[l] (l >= 1) the rest of layer l-1 and layer
  // l's q|k|v (the last: the final norm and each decoder layer's cross-attention k|v), over the
  // real tokens packed into one sequence; attention runs per source between them.
  std::unique_ptr<Graph> enc_embed_;
  std::vector<std::unique_ptr<Graph>> enc_segments_;
  // The graph sessions (arenas, memory plans) of callers that bind no SessionSet of their own
  // (engine/graph/executor.h); session(g) is the one a run of g on this thread uses.
  mutable SessionSet sessions_;
  GraphSession& session(const Graph& g) const { return SessionSet::current_or(sessions_).get(g); }

  TensorMap encode_packed(const Tensor& src_ids, const Tensor& src_key_padding,
                          NodeObserver* observer) const;
};

}  // namespace tessera::models
