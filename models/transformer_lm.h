// CausalLM (engine/generate/generation.h) for the `transformer` family's encoder-decoder token
// models: generate() with every decoding method over TransformerModel::encode / decode_step.
//
//   models::TransformerLM lm(model);
//   auto results = generate(lm, sources, options);
//
// start(prompts) encodes the prompts as sources (ragged: padded with pad_id under a key padding
// mask, as TransformerModel::greedy() does; pass them as the model expects, e.g. with eos
// appended) and starts every target with bos_id. step() runs one decode step over the KV cache.
// select_rows() reorders the KV cache rows and the encoder state rows.
//
// Decoder-only stacks of this family (num_encoder_layers 0) are nn.TransformerDecoder: their
// layers cross-attend to a memory the caller supplies, so they have no language model to
// continue a prompt with; the constructor rejects them (and stacks without token embeddings).
#pragma once

#include <vector>

#include "engine/generate/generation.h"
#include "models/transformer.h"

namespace tessera::models {

class TransformerLM final : public CausalLM {
 public:
  // `model` must outlive this object; `observer` (optional) watches every graph node.
  explicit TransformerLM(const TransformerModel& model, NodeObserver* observer = nullptr);

  int64_t vocab_size() const override { return model_.config().tgt_vocab_size; }
  // Target positions: bos plus the generated tokens but the last (never fed back) fit in
  // max_position, so up to max_position tokens can be generated; sources are checked against
  // max_position by start().
  int64_t max_positions() const override { return model_.config().max_position; }
  bool prompts_are_decoder_prefix() const override { return false; }

  // Returns [B, V] logits of the first target position (after bos). The returned tensors are
  // the model's outputs, owned by the caller.
  Tensor start(const std::vector<std::vector<int64_t>>& prompts) override;
  Tensor step(const std::vector<int64_t>& tokens) override;
  void select_rows(const std::vector<int64_t>& rows) override;

  int64_t batch() const { return batch_; }
  int64_t length() const { return past_; }  // target positions in the KV cache

 private:
  void gather_encoder_state();

  const TransformerModel& model_;
  NodeObserver* observer_;
  int64_t batch_ = 0, past_ = 0;
  TransformerModel::EncoderState encoded_;  // [B0, ...] as start() encoded it
  std::vector<int64_t> enc_rows_;           // row i of the batch is row enc_rows_[i] of encoded_
  std::vector<int64_t> enc_built_;          // the mapping `enc_` was gathered for
  TransformerModel::EncoderState enc_;      // [batch_, ...] rows the decode steps attend to
  KVCache cache_, spare_;                   // spare_: select_rows' target, swapped in
};

}  // namespace tessera::models
