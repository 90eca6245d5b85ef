// What one repetition of a measurement runs, for a model of any family: the inputs of
// `tessera bench` and `tessera profile` (random ones of a --batch x --seq shape, or given ones),
// how one repetition runs them, and which graph nodes it runs (the profiler's cross-check of
// the events it recorded). bench/e2e's worker shares greedy_fixed_steps().
//
//   auto w = models::Workload::random(*model, batch, seq, generate);  // throws naming the option
//   for (...) { auto t = w.run(&profiler); ... t.total, t.prefill, t.decode }
//
// Per family (the one place a family is added: a make_<family>() in workload.cpp):
//   transformer  forward: src/src_ids, tgt/tgt_ids (and memory for a bare decoder) [B, S];
//                generate: encode a source of S random ids, then N decode steps from bos.
//   gpt2         forward: input_ids [B, S]; generate: a prompt of S random ids (the prefill,
//                whose last logits give the first new token), then N decode steps.
//   bert         forward: input_ids [B, S], attention_mask all ones, token_type_ids zeros;
//                no generation.
// Random token ids are uniform in [min(4, V-1), V) (ids 0..3 are the demo's special tokens),
// float inputs N(0, 1), all from a fixed seed: every run of a shape sees the same inputs.
// Generation is greedy with exactly N decode steps (eos is not checked), so every repetition
// does the same work.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/graph/executor.h"
#include "engine/io/tensor.h"
#include "models/model.h"

namespace tessera::models {

// Greedy decoding of a fixed length: the prefill, then exactly `steps` decode steps of one token
// per row (eos not checked).
//   transformer (encoder-decoder token model): ids [B, S] are the sources (no padding); the
//     prefill encodes them; the steps start from bos and each yields a token (`steps` tokens).
//   gpt2: ids [B, S] are the prompts; the prefill runs them through a generation session sized
//     for S + steps positions and takes the argmax of their last logits (a first token); each
//     step feeds the previous token (`steps` + 1 tokens in all).
// Throws Error for other families, or when the model cannot hold S + steps positions.
struct FixedGreedy {
  double prefill_s = 0, total_s = 0;
  std::vector<std::vector<int64_t>> tokens;  // per row, in order
  Tensor first_logits;                       // [B, V]: the logits that chose each row's first token
};
// What a caller may keep between greedy_fixed_steps() calls so that repeating one shape
// allocates nothing, as a transformer's arena does (today: the rnn_attention family's encoder
// outputs and scratch, and its decoder state). One per thread: a call writes into it, and a
// result's first_logits may share its memory (valid until the next call with these buffers).
struct GreedyBuffers;
FixedGreedy greedy_fixed_steps(const Model& model, const Tensor& ids, int64_t steps,
                               NodeObserver* observer = nullptr, GreedyBuffers* reuse = nullptr);

class Workload {
 public:
  // Random inputs of shape [batch, seq]; generate > 0: a source/prompt of `seq` random ids, then
  // exactly `generate` greedy decode steps. Throws Error naming the option (--batch, --seq,
  // --generate) and the model limit it breaks, or saying why the family cannot generate.
  static Workload random(const Model& model, int64_t batch, int64_t seq, int64_t generate);
  // Given inputs (names as `tessera run` takes them): one forward pass per repetition; batch
  // and seq are read from the first token or sequence input. Checked when first run.
  static Workload given(const Model& model, TensorMap inputs);

  struct Times {
    double total = 0, prefill = 0, decode = 0;  // seconds; prefill + decode = total (generate)
  };
  Times run(NodeObserver* observer = nullptr) const;

  const Model& model() const { return *model_; }
  int64_t batch() const { return batch_; }
  int64_t seq() const { return seq_; }
  int64_t generate() const { return generate_; }
  // Per repetition: B·S per forward pass; with generate, every token generated (B·N for the
  // transformer, B·(N + 1) for gpt2, whose prefill yields the first).
  int64_t tokens() const { return tokens_; }
  // Per repetition, with generate: the tokens of the N decode steps, B·N.
  int64_t decode_tokens() const { return batch_ * generate_; }
  // Nodes one repetition runs, counted from the graphs; -1 when not known (given inputs: the
  // path, e.g. bert's padding removal, depends on them).
  int64_t graph_nodes() const { return graph_nodes_; }
  // What the prefill is, for messages: "encode" or "prompt" (empty without generate).
  const std::string& prefill_name() const { return prefill_name_; }
  const TensorMap& inputs() const { return inputs_; }

 private:
  const Model* model_ = nullptr;
  int64_t batch_ = 0, seq_ = 0, generate_ = 0, tokens_ = 0, graph_nodes_ = -1;
  std::string prefill_name_;
  TensorMap inputs_;  // forward pass
  Tensor ids_;        // generate: sources / prompts [B, S]
  // generate: kept between repetitions (run() is not to be called from two threads at once).
  mutable std::shared_ptr<GreedyBuffers> buffers_;

  friend struct WorkloadBuilder;
};

}  // namespace tessera::models
