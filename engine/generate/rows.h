// Continuous batching's view of a model: sequences ("rows") join and leave between decode steps,
// each holding its own KV cache, so the logits of a row do not depend on which other rows share
// its steps (a request gives the same output alone or batched with others, bit for bit).
//
//   auto rows = generator.new_rows();            // engine/api/driver.h
//   RowModel::Row r = rows->add(prompt, 32);     // reserves the row's cache, computes nothing
//   Tensor last;
//   while (!rows->prefill(r, &last)) {}          // the prompt, a chunk per call
//   Tensor logits = rows->step({r, s}, {t, u});  // one token for each listed row: [2, V]
//   rows->remove(r);
//
// A family with a batched implementation (gpt2: one GEMM over all rows per layer, attention per
// row over its own cache) provides it; any other CausalLM family runs behind rows_from_sessions(),
// which gives each row a generation session of its own and steps the rows one after another.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/generate/generation.h"
#include "engine/io/tensor.h"

namespace tessera {

class RowModel {
 public:
  using Row = int64_t;
  virtual ~RowModel() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_positions() const = 0;
  // As CausalLM::prompts_are_decoder_prefix(): true when the prompt is the prefix of the
  // sequence (it counts against max_positions() and towards the repetition penalty).
  virtual bool prompts_are_decoder_prefix() const = 0;
  // Tokens of a prompt one prefill() call runs at most (0: the whole prompt in one call).
  virtual int64_t prefill_chunk() const = 0;
  // Bytes of KV cache (and other per-row state) a row of this prompt and budget holds.
  virtual uint64_t row_bytes(int64_t prompt_tokens, int64_t max_new_tokens) const = 0;

  // A new row for `prompt` (non-empty, ids in range) generating at most max_new_tokens: checks
  // the positions and allocates its cache; computes nothing. Throws Error naming the limit.
  virtual Row add(const std::vector<int64_t>& prompt, int64_t max_new_tokens) = 0;
  // Runs the next chunk of the row's prompt. Returns true once the whole prompt has run; the
  // logits [V] of its last token are then written to *last_logits.
  virtual bool prefill(Row row, Tensor* last_logits) = 0;
  // Appends tokens[i] to rows[i] (each prefilled, distinct) and returns their logits [R, V].
  virtual Tensor step(const std::vector<Row>& rows, const std::vector<int64_t>& tokens) = 0;
  // Frees the row (any time after add()).
  virtual void remove(Row row) = 0;
  virtual int64_t rows() const = 0;  // rows added and not removed
};

// The fallback: one CausalLM session of batch 1 per row (start() is the whole prefill), stepped
// one row after another. `new_session(max_new_tokens)` makes a session; `row_bytes_per_position`
// sizes the rows for admission.
std::unique_ptr<RowModel> rows_from_sessions(
    std::function<std::unique_ptr<CausalLM>(int64_t max_new_tokens)> new_session,
    int64_t vocab_size, int64_t max_positions, bool prompts_are_decoder_prefix,
    uint64_t row_bytes_per_position);

}  // namespace tessera
