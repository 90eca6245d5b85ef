// The `rnn_attention` family: a bidirectional GRU/LSTM encoder, a bridge to the decoder's initial
// state, additive attention (Bahdanau, Cho and Bengio 2015) or none, a one-layer GRU/LSTM decoder
// and a generator. tools/rnn_attention.py (RNNAttention) is the reference: its parameter names
// are the tensor names, its maths is this file's.
//
// config.json: model_type "rnn_attention", cell ("gru" | "lstm"), embed_dim E, hidden_size H,
// num_encoder_layers L, attention_dim A, attention ("additive" | "none"), src_vocab_size,
// tgt_vocab_size, bos_id, eos_id, pad_id, max_length (generated tokens at most).
// Tensors (G = 3 for GRU, 4 for LSTM; PyTorch's nn.GRU / nn.LSTM names and gate orders):
//   src_embed.weight [Vs, E]   tgt_embed.weight [Vt, E]
//   encoder.{weight_ih_l<l>[_reverse] [G*H, E or 2H], weight_hh_l<l>[_reverse] [G*H, H],
//            bias_ih_l<l>[_reverse], bias_hh_l<l>[_reverse] [G*H]}   l < L
//   bridge.{weight [H, 2H], bias [H]}   (LSTM) bridge_c.{weight, bias}
//   (additive) attention.W.weight [A, H], attention.U.weight [A, 2H], attention.v.weight [1, A]
//   decoder.{weight_ih_l0 [G*H, E + 2H], weight_hh_l0 [G*H, H], bias_ih_l0, bias_hh_l0}
//   generator.{weight [Vt, 3H + E], bias [Vt]}
//
// Maths. Sources are right-padded and run as packed sequences: row b has len_b real tokens, the
// forward direction runs t = 0..len_b-1, the backward one t = len_b-1..0, both from zeros; the
// memory h_j = [h_fwd_j ; h_bwd_j] [B, S, 2H] is zero at padding. final = [h_fwd_last ;
// h_bwd_first] of the top layer; s_0 = tanh(bridge(final)) (LSTM: c_0 = tanh(bridge_c([c_fwd_last
// ; c_bwd_first]))). Decoder step i (input y_{i-1}, y_0 = bos): e_ij = v · tanh(W s_{i-1} + U h_j)
// over the real j, alpha_i = softmax(e_i), c_i = sum_j alpha_ij h_j (attention "none": c_i =
// final, alpha_i = 0); s_i = cell([embed(y_{i-1}) ; c_i], s_{i-1}); logits_i = generator([s_i ; c_i
// ; embed(y_{i-1})]). U h is computed once per source.
//
// `tessera run`: src_ids I64 [B, S], tgt_ids I64 [B, T] (the decoder inputs y_0 = bos, y_1, ...),
// optional src_key_padding_mask [B, S] (BOOL/U8/I64/I32, 1 = padding; else padding is src_ids ==
// pad_id); right padding only, every row at least one real token -> logits F32 [B, T, Vt],
// attention F32 [B, T, S].
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/generate/generation.h"
#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "engine/io/model_dir.h"
#include "models/model.h"

namespace tessera::models {

struct RnnAttentionConfig {
  kernels::RnnCell cell = kernels::RnnCell::gru;
  int64_t embed_dim = 0, hidden_size = 0, num_encoder_layers = 0, attention_dim = 0;
  bool additive = true;  // attention "additive" (else "none")
  int64_t src_vocab_size = 0, tgt_vocab_size = 0, bos_id = 0, eos_id = 0, pad_id = 0;
  int64_t max_length = 0;

  bool lstm() const { return cell == kernels::RnnCell::lstm; }
  int64_t gates() const { return lstm() ? 4 : 3; }
  // A decoder row [embed(y_{i-1}) | c_i | s_i]: the decoder input is its first E + 2H floats,
  // the generator reads all of it (its weight's columns permuted at load to this order).
  int64_t row_width() const { return embed_dim + 3 * hidden_size; }
};

class RnnAttentionModel final : public Model {
 public:
  // Reads the config, checks every tensor's presence and shape, packs the weights.
  explicit RnnAttentionModel(const ModelDir& dir, const LoadOptions& o = {});
  ~RnnAttentionModel() override;

  const RnnAttentionConfig& config() const { return cfg_; }
  const char* family() const override { return "rnn_attention"; }
  TensorMap run(const TensorMap& inputs, NodeObserver* observer = nullptr) const override;
  // The run() inputs alone (the family runs its kernels itself, not through the executor).
  const Graph& forward_graph() const override { return *graph_; }
  // One node per operator (encoder GEMMs, recurrences, bridge, attention, decoder projection
  // and cell, generator): what the profiler's records name. Never run by the executor.
  const Graph& operator_graph() const { return *ops_; }
  // Operator events (observer calls) of a teacher-forced run() of t_len target tokens
  // (t_len > 0), or of an encode plus `steps` decode steps (t_len = 0).
  int64_t operator_events(int64_t t_len, int64_t steps) const;
  GraphSession& forward_session() const override;
  const std::vector<passes::Stats>& pass_stats() const override { return pass_stats_; }
  const RnnAttentionModel* rnn_attention() const override { return this; }

  // The encoder's outputs for a batch of sources.
  struct Encoded {
    int64_t batch = 0, src_len = 0;
    std::vector<int64_t> lengths;  // [B] real tokens per row
    Tensor memory;                 // [B, S, 2H], zero at padding
    Tensor keys;                   // [B, S, A] = U h (additive)
    Tensor final;                  // [B, 2H] = [h_fwd_last ; h_bwd_first]
    Tensor s0, c0;                 // [B, H] decoder initial state (c0: LSTM)
    // The encoder's scratch, kept so that encoding again at the same shapes allocates nothing
    // (tensors from 64 KiB up are mapped per allocation: in a VM each first touch of a page
    // is a fault of several microseconds, which made a batch-16 encode several times slower).
    struct Work {
      Tensor x;               // [B, S, E] layer 0 input
      Tensor xf, xb;          // [B, S, G*H] input projections, forward / backward
      Tensor hidden[2];       // [B, S, 2H] outputs of the layers below the last (ping-pong)
      Tensor cf, cb, cfinal;  // LSTM: [B, H] cell states; [B, 2H] final cells
      Tensor directions;      // [2, rnn_layer_workspace(B, H)]
    } work;
  };
  // ids [B, S] right-padded, lengths[b] in [1, S] (checked by the callers).
  Encoded encode(const int64_t* ids, const std::vector<int64_t>& lengths, int64_t batch,
                 int64_t src_len, NodeObserver* observer = nullptr) const;
  // The same into `enc`, reusing every tensor of it (outputs and work) whose shape fits.
  void encode(const int64_t* ids, const std::vector<int64_t>& lengths, int64_t batch,
              int64_t src_len, Encoded& enc, NodeObserver* observer = nullptr) const;

  // The decoder state of a batch of rows (generation): each row attends to source row
  // src_rows[r] of an Encoded. Buffers are sized once per batch size (grown, never per step).
  struct DecoderState {
    int64_t rows = 0;
    std::vector<int64_t> src_rows;  // [rows]
    Tensor io[2];                   // [rows, E + 3H] rows [embed | context | s]; cur = io[cur]
    int cur = 0;
    Tensor c;                        // LSTM cell state [rows, H] (updated in place)
    Tensor gates;                    // [rows, G*H]
    Tensor query;                    // [rows, A]
    Tensor logits;                   // [rows, Vt]
    Tensor alpha;                    // [rows, S]
    std::vector<const float*> ptrs;  // the cell's pointer arrays, 5 x rows
  };
  // Rows r of the state start from the encoder state of src_rows[r].
  void start_decoder(const Encoded& enc, const std::vector<int64_t>& src_rows,
                     DecoderState& st) const;
  // One step: tokens[r] = y_{i-1} of row r (in range: checked by the callers). Writes
  // st.logits [rows, Vt] and st.alpha [rows, S]; advances s (and c).
  void decode_step(const Encoded& enc, DecoderState& st, const int64_t* tokens,
                   NodeObserver* observer = nullptr) const;
  // Keeps/reorders/duplicates rows: new row i is old row rows[i].
  void select_rows(DecoderState& st, const std::vector<int64_t>& rows) const;

  // Sources as token id lists (each non-empty, ids < src_vocab_size; throws Error naming the
  // source otherwise): the right-padded batch [B, S] and its lengths.
  void pad_sources(const std::vector<std::vector<int64_t>>& sources, Tensor& ids,
                   std::vector<int64_t>& lengths) const;

  struct Weights;
  struct Nodes;

 private:
  RnnAttentionConfig cfg_;
  std::shared_ptr<WeightSet> weights_;
  std::unique_ptr<Weights> w_;
  std::unique_ptr<Graph> graph_;  // inputs only
  std::unique_ptr<Graph> ops_;    // one node per operator (the profiler's records name them)
  std::unique_ptr<Nodes> nodes_;
  std::vector<passes::Stats> pass_stats_;
  mutable SessionSet sessions_;
};

// CausalLM (engine/generate/generation.h) over RnnAttentionModel: start() encodes the prompts
// as sources (ragged, right-padded) and runs the first decoder step from bos; step() one step
// (no recomputation: the state is s, c and the encoder's outputs); select_rows() reorders the
// decoder rows (the encoder's outputs are shared through a row map, never copied).
class RnnAttentionLM final : public CausalLM {
 public:
  explicit RnnAttentionLM(const RnnAttentionModel& model, NodeObserver* observer = nullptr);
  int64_t vocab_size() const override { return model_.config().tgt_vocab_size; }
  int64_t max_positions() const override { return model_.config().max_length; }
  bool prompts_are_decoder_prefix() const override { return false; }
  Tensor start(const std::vector<std::vector<int64_t>>& prompts) override;
  Tensor step(const std::vector<int64_t>& tokens) override;
  void select_rows(const std::vector<int64_t>& rows) override;
  // The attention weights [rows, S] of the last step.
  const Tensor& attention() const { return st_.alpha; }
  int64_t source_length() const { return enc_.src_len; }

 private:
  const RnnAttentionModel& model_;
  NodeObserver* observer_;
  RnnAttentionModel::Encoded enc_;
  RnnAttentionModel::DecoderState st_;
  int64_t steps_ = 0;
};

}  // namespace tessera::models
