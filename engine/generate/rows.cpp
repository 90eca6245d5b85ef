#include "engine/generate/rows.h"

#include <algorithm>
#include <map>
#include <string>

namespace tessera {

namespace {

// One CausalLM session of batch 1 per row; start() is the whole prefill.
class SessionRows final : public RowModel {
 public:
  SessionRows(std::function<std::unique_ptr<CausalLM>(int64_t)> new_session, int64_t vocab,
              int64_t max_positions, bool prefix, uint64_t bytes_per_position)
      : new_session_(std::move(new_session)),
        vocab_(vocab),
        max_positions_(max_positions),
        prefix_(prefix),
        bytes_per_position_(bytes_per_position) {}

  int64_t vocab_size() const override { return vocab_; }
  int64_t max_positions() const override { return max_positions_; }
  bool prompts_are_decoder_prefix() const override { return prefix_; }
  int64_t prefill_chunk() const override { return 0; }
  uint64_t row_bytes(int64_t prompt_tokens, int64_t max_new_tokens) const override {
    // Decoder-only: the cache holds prompt and new tokens; encoder-decoder: the new tokens (the
    // source's memory, its keys and values per layer, counted as as many positions).
    const int64_t positions = std::max<int64_t>(0, prompt_tokens + max_new_tokens);
    return bytes_per_position_ * static_cast<uint64_t>(positions);
  }

  Row add(const std::vector<int64_t>& prompt, int64_t max_new_tokens) override {
    if (prompt.empty()) throw Error("the prompt is empty");
    if (max_new_tokens < 1) throw Error("max new tokens must be at least 1");
    for (int64_t id : prompt)
      if (id < 0 || id >= vocab_)
        throw Error("token id " + std::to_string(id) + " is out of range for a vocabulary of " +
                    std::to_string(vocab_));
    const int64_t used = (prefix_ ? static_cast<int64_t>(prompt.size()) : 0) + max_new_tokens;
    if (used > max_positions_)
      throw Error(
          (prefix_ ? "a prompt of " + std::to_string(prompt.size()) + " tokens plus " : "") +
          std::to_string(max_new_tokens) + " new tokens exceeds the model's " +
          std::to_string(max_positions_) + " positions");
    State s;
    s.prompt = prompt;
    s.lm = new_session_(max_new_tokens);
    const Row id = next_id_++;
    rows_.emplace(id, std::move(s));
    return id;
  }

  bool prefill(Row r, Tensor* last) override {
    State& s = get(r);
    if (s.started) throw Error("row " + std::to_string(r) + " is already prefilled");
    Tensor logits = s.lm->start({s.prompt});  // [1, V]
    s.started = true;
    if (last) *last = logits.reshaped({logits.dim(1)});
    return true;
  }

  Tensor step(const std::vector<Row>& rows, const std::vector<int64_t>& tokens) override {
    const int64_t b = static_cast<int64_t>(rows.size());
    if (b == 0 || tokens.size() != rows.size())
      throw Error("step() needs one token for each of at least one row");
    Tensor out(DType::f32, {b, vocab_}, false);
    for (int64_t i = 0; i < b; ++i) {
      State& s = get(rows[i]);
      if (!s.started) throw Error("row " + std::to_string(rows[i]) + " is still prefilling");
      Tensor logits = s.lm->step({tokens[i]});  // [1, V]
      std::copy(logits.data<float>(), logits.data<float>() + vocab_,
                out.data<float>() + i * vocab_);
    }
    return out;
  }

  void remove(Row r) override {
    if (rows_.erase(r) == 0) throw Error("remove(): no row " + std::to_string(r));
  }
  int64_t rows() const override { return static_cast<int64_t>(rows_.size()); }

 private:
  struct State {
    std::vector<int64_t> prompt;
    std::unique_ptr<CausalLM> lm;
    bool started = false;
  };
  State& get(Row r) {
    auto it = rows_.find(r);
    if (it == rows_.end()) throw Error("no row " + std::to_string(r));
    return it->second;
  }

  std::function<std::unique_ptr<CausalLM>(int64_t)> new_session_;
  int64_t vocab_, max_positions_;
  bool prefix_;
  uint64_t bytes_per_position_;
  Row next_id_ = 0;
  std::map<Row, State> rows_;
};

}  // namespace

std::unique_ptr<RowModel> rows_from_sessions(
    std::function<std::unique_ptr<CausalLM>(int64_t max_new_tokens)> new_session,
    int64_t vocab_size, int64_t max_positions, bool prompts_are_decoder_prefix,
    uint64_t row_bytes_per_position) {
  return std::make_unique<SessionRows>(std::move(new_session), vocab_size, max_positions,
                                       prompts_are_decoder_prefix, row_bytes_per_position);
}

}  // namespace tessera
