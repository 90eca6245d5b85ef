#include "models/transformer_lm.h"

#include <cstring>
#include <numeric>
#include <utility>

namespace tessera::models {

namespace {

// Rows `rows` of t [B0, ...] as a new tensor [rows.size(), ...].
Tensor gather_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  Shape shape = t.shape();
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(shape[0]);
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out(t.dtype(), shape, false);
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(static_cast<char*>(out.raw()) + i * row_bytes,
                static_cast<const char*>(t.raw()) + static_cast<size_t>(rows[i]) * row_bytes,
                row_bytes);
  return out;
}

bool is_identity(const std::vector<int64_t>& rows, size_t n) {
  if (rows.size() != n) return false;
  for (size_t i = 0; i < n; ++i)
    if (rows[i] != static_cast<int64_t>(i)) return false;
  return true;
}

}  // namespace

TransformerLM::TransformerLM(const TransformerModel& model, NodeObserver* observer)
    : model_(model), observer_(observer) {
  const auto& c = model.config();
  if (!c.embeddings || !c.has_encoder() || !c.has_decoder() || !model.decode_step_graph())
    throw Error(
        "generation with the transformer family needs an encoder-decoder with token embeddings "
        "(src_embed, tgt_embed, generator); this model has " +
        std::to_string(c.num_encoder_layers) + " encoder and " +
        std::to_string(c.num_decoder_layers) + " decoder layers" +
        (c.embeddings ? "" : " and no token embeddings"));
  if (c.bos_id < 0 || c.bos_id >= c.tgt_vocab_size)
    throw Error("config.json needs a bos_id within the target vocabulary (tgt_vocab_size " +
                std::to_string(c.tgt_vocab_size) + ") to start generating, got " +
                std::to_string(c.bos_id));
}

Tensor TransformerLM::start(const std::vector<std::vector<int64_t>>& prompts) {
  const auto& c = model_.config();
  if (prompts.empty()) throw Error("start: no prompts");
  const int64_t b = static_cast<int64_t>(prompts.size());
  int64_t s_len = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t len = static_cast<int64_t>(prompts[i].size());
    if (len == 0) throw Error("source " + std::to_string(i) + " is empty");
    if (len > c.max_position)
      throw Error("source " + std::to_string(i) + " has " + std::to_string(len) +
                  " tokens, more than the model's max_position " + std::to_string(c.max_position));
    for (int64_t id : prompts[i])
      if (id < 0 || id >= c.src_vocab_size)
        throw Error("source " + std::to_string(i) + ": token id " + std::to_string(id) +
                    " is out of range for src_vocab_size " + std::to_string(c.src_vocab_size));
    s_len = std::max(s_len, len);
  }
  Tensor src(DType::i64, {b, s_len});     // [B, S]
  Tensor padding(DType::u8, {b, s_len});  // [B, S], 1 = padding
  for (int64_t r = 0; r < b; ++r)
    for (int64_t t = 0; t < s_len; ++t) {
      const bool real = t < static_cast<int64_t>(prompts[r].size());
      src.data<int64_t>()[r * s_len + t] = real ? prompts[r][t] : c.pad_id;
      padding.data<uint8_t>()[r * s_len + t] = real ? 0 : 1;
    }
  encoded_ = model_.encode(src, padding, observer_);
  enc_ = encoded_;
  batch_ = b;
  enc_rows_.resize(static_cast<size_t>(b));
  std::iota(enc_rows_.begin(), enc_rows_.end(), int64_t{0});
  enc_built_ = enc_rows_;
  cache_.reset(static_cast<int>(c.num_decoder_layers), b, c.max_position, c.d_model);
  spare_ = KVCache();
  past_ = 0;
  return step(std::vector<int64_t>(static_cast<size_t>(b), c.bos_id));
}

Tensor TransformerLM::step(const std::vector<int64_t>& tokens) {
  const auto& c = model_.config();
  if (batch_ == 0) throw Error("step: start() was not called");
  if (static_cast<int64_t>(tokens.size()) != batch_)
    throw Error("step: " + std::to_string(tokens.size()) + " tokens for a batch of " +
                std::to_string(batch_) + " rows");
  if (past_ >= c.max_position)
    throw Error("step: the target would pass the model's max_position " +
                std::to_string(c.max_position));
  Tensor ids(DType::i64, {batch_, 1});  // [B, 1]
  for (int64_t r = 0; r < batch_; ++r) {
    if (tokens[r] < 0 || tokens[r] >= c.tgt_vocab_size)
      throw Error("step: token id " + std::to_string(tokens[r]) + " of row " + std::to_string(r) +
                  " is out of range for tgt_vocab_size " + std::to_string(c.tgt_vocab_size));
    ids.data<int64_t>()[r] = tokens[r];
  }
  Tensor logits = model_.decode_step(enc_, ids, cache_, past_, observer_);  // [B, 1, V]
  ++past_;
  return logits.reshaped({batch_, c.tgt_vocab_size});
}

void TransformerLM::select_rows(const std::vector<int64_t>& rows) {
  if (batch_ == 0) throw Error("select_rows: start() was not called");
  if (rows.empty()) throw Error("select_rows: no rows");
  for (int64_t r : rows)
    if (r < 0 || r >= batch_)
      throw Error("select_rows: row " + std::to_string(r) + " is out of range for a batch of " +
                  std::to_string(batch_));
  if (is_identity(rows, static_cast<size_t>(batch_))) return;
  const int64_t nb = static_cast<int64_t>(rows.size());
  const int slots = static_cast<int>(cache_.k.size());
  if (spare_.batch != nb || spare_.capacity != cache_.capacity ||
      static_cast<int>(spare_.k.size()) != slots)
    spare_.reset(slots, nb, cache_.capacity, cache_.width);
  // Only the filled positions [0, past_) of each row move.
  const size_t row_stride = static_cast<size_t>(cache_.capacity * cache_.width);
  const size_t bytes = static_cast<size_t>(past_ * cache_.width) * sizeof(float);
  for (int s = 0; s < slots; ++s)
    for (int64_t i = 0; i < nb; ++i) {
      std::memcpy(spare_.k[s].data<float>() + i * row_stride,
                  cache_.k[s].data<float>() + rows[i] * row_stride, bytes);
      std::memcpy(spare_.v[s].data<float>() + i * row_stride,
                  cache_.v[s].data<float>() + rows[i] * row_stride, bytes);
    }
  std::swap(cache_, spare_);
  std::vector<int64_t> enc_rows(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) enc_rows[i] = enc_rows_[rows[i]];
  enc_rows_ = std::move(enc_rows);
  batch_ = nb;
  // Beam search reorders beams within each prompt: the encoder rows stay the same after the
  // first expansion, so they are gathered again only when the mapping changes.
  if (enc_rows_ != enc_built_) gather_encoder_state();
}

void TransformerLM::gather_encoder_state() {
  if (is_identity(enc_rows_, static_cast<size_t>(encoded_.memory_key_padding.dim(0)))) {
    enc_ = encoded_;
  } else {
    enc_.memory_kv.clear();
    for (const auto& [name, t] : encoded_.memory_kv)
      enc_.memory_kv[name] = gather_rows(t, enc_rows_);
    enc_.memory_key_padding = gather_rows(encoded_.memory_key_padding, enc_rows_);
  }
  enc_built_ = enc_rows_;
}

}  // namespace tessera::models
