// engine/generate/: owns the decoding strategies (greedy, sampling, beam search).
// May use: engine/io/. Sees only logits and token ids; families implement CausalLM.
//
// Autoregressive generation over any causal language model: greedy, sampling (temperature,
// top-k, top-p, repetition penalty, seeded), beam search (width, length penalty, n-best), with
// stop tokens, stop strings and a token budget, for a batch of ragged prompts where each row
// stops on its own.
//
// A model family plugs in by implementing CausalLM (one generation session over a batch, owning
// its KV cache): models/transformer_lm.h for the `transformer` family, the gpt2 family's own.
// The algorithms here see only logits [B, V] and token ids; the tokenizer is the caller's (stop
// strings are checked on text the caller's `decode_text` callback produces).
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/io/tensor.h"

namespace tessera {

class CausalLM {  // one generation session over a batch; owns its KV cache
 public:
  virtual ~CausalLM() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_positions() const = 0;  // longest prompt + generated length
  // Starts the batch (prompts ragged, each non-empty); returns [B, V] logits of each row's last
  // prompt token.
  virtual Tensor start(const std::vector<std::vector<int64_t>>& prompts) = 0;
  // Appends one token per row; returns [B, V] logits of it.
  virtual Tensor step(const std::vector<int64_t>& tokens) = 0;
  // Keeps/reorders/duplicates rows (beam search): row i of the new batch is old row rows[i].
  virtual void select_rows(const std::vector<int64_t>& rows) = 0;

  // Optional (defaulted, so implementations of the five methods above need not know it): true
  // when a prompt is the prefix of the sequence the model continues (decoder-only models: the
  // prompt counts against max_positions() and towards the repetition penalty's history); false
  // when it is a separate source (encoder-decoder: start() encodes it and starts the target
  // with bos; only the generated tokens count against max_positions(), the source's own limit
  // is start()'s to check).
  virtual bool prompts_are_decoder_prefix() const { return true; }
};

enum class DecodingMethod { greedy, sample, beam };
// Parses "greedy" | "sample" | "beam"; throws Error naming `what` otherwise.
DecodingMethod parse_decoding_method(const std::string& name, const std::string& what);
const char* decoding_method_name(DecodingMethod m);

// EarlyStopping (heuristic, first, never) and FinishReason (eos, stop_string, length) are the
// public API's enums (include/tessera/types.hpp).
EarlyStopping parse_early_stopping(const std::string& name, const std::string& what);

struct GenerationOptions {
  int64_t max_new_tokens = 64;  // tokens generated per sequence at most, eos included
  DecodingMethod method = DecodingMethod::greedy;

  // Logits processing, applied in this order (Hugging Face's order):
  //   1. repetition_penalty (all methods): for every distinct id in the row's history (the
  //      generated ids, plus the prompt when prompts_are_decoder_prefix()), the logit l becomes
  //      l / penalty if l > 0, else l * penalty (CTRL, Keskar et al. 2019; HF's definition).
  //      1 = off. Applied once per id however often it occurred.
  //   2. temperature (sample only): logits / temperature; must be > 0.
  //   3. top_k (sample only): keep the top_k highest logits (ties with the k-th kept too);
  //      0 = off.
  //   4. top_p (sample only): keep the smallest set of most probable tokens (ties broken by
  //      the lower id first) whose probability sums to >= top_p -- token j in descending order
  //      is kept iff the tokens before it sum to < top_p; 1 = off. Always keeps >= 1 token.
  // then softmax over the kept tokens and one draw.
  float repetition_penalty = 1.0f;
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;

  // Sampling PRNG: sample j of prompt p has its own std::mt19937_64 stream, seeded with
  // std::seed_seq{seed_lo, seed_hi, s_lo, s_hi} where s = (row_offset + p) * num_return_sequences
  // + j (64-bit values split in 32-bit halves); a draw is u = (next() >> 11) * 2^-53 in [0, 1),
  // the token the first whose cumulative probability (in id order, summed in double) exceeds
  // u * total. So the same seed gives the same output whatever the thread count, and whatever
  // else is in the batch as long as the logits are the same.
  uint64_t seed = 0;
  // Index of the first prompt in the streams above: lets a caller split a long list of prompts
  // into batches (row_offset = index of the batch's first prompt) and get the same samples.
  int64_t row_offset = 0;

  // Stop conditions (besides max_new_tokens).
  std::vector<int64_t> eos_ids;  // a sequence ends when it generates one (not part of its ids)
  // A sequence ends once its decoded text (decode_text of its generated ids) contains one of
  // these; the token that completed it stays in its ids (Hugging Face's stop_strings).
  std::vector<std::string> stop_strings;
  std::function<std::string(const std::vector<int64_t>&)> decode_text;  // needed for stop_strings
  // Fed to finished rows while others go on (their output is frozen). -1: eos_ids[0], else 0.
  int64_t pad_id = -1;

  // Beam search: num_beams beams per prompt; the 2 * num_beams best continuations of all beams
  // are ranked by summed log-probability, an eos (or stop string) among the first num_beams of
  // them closes a hypothesis, the best num_beams others become the next beams. Hypotheses are
  // scored logprob / length^length_penalty (Hugging Face: length = generated tokens, eos
  // included; > 0 favours longer sequences, < 0 shorter), the best num_beams kept.
  int64_t num_beams = 4;
  float length_penalty = 1.0f;
  EarlyStopping early_stopping = EarlyStopping::heuristic;

  // Sequences returned per prompt: beam search's n best (<= num_beams), or independent samples
  // (sample); greedy returns 1.
  int64_t num_return_sequences = 1;
};

struct GeneratedSequence {
  std::vector<int64_t> ids;  // the new tokens, without the eos that ended it
  FinishReason finish = FinishReason::length;
  // Sum of the log-probabilities of the generated tokens (eos included) under the model's
  // distribution after the repetition penalty (before temperature/top-k/top-p).
  double logprob = 0;
  // Greedy and sample: logprob. Beam: logprob / length^length_penalty (the ranking score).
  double score = 0;
};

struct GenerationResult {                    // one prompt
  std::vector<GeneratedSequence> sequences;  // best first for beam; sample order otherwise
};

struct GenerationStats {
  int64_t new_tokens = 0;    // ids in all returned sequences, plus the eos that ended them
  double prefill_ms = 0;     // CausalLM::start (encoding the prompts)
  double decode_ms = 0;      // CausalLM::step and select_rows
  int64_t decode_steps = 0;  // step() calls
  int64_t decode_rows = 0;   // rows fed through step(), summed over the calls
  double decode_tokens_per_s() const {
    return decode_ms > 0 ? static_cast<double>(decode_rows) * 1000.0 / decode_ms : 0.0;
  }
};

// Called for each token appended to a sequence's ids as soon as it is chosen (greedy and
// sample; not for the eos that ends a sequence). Beam search streams nothing: its sequences are
// only known at the end.
using OnToken = std::function<void(int64_t prompt, int64_t sequence, int64_t token)>;

// Generates for every prompt (ragged, each non-empty). Checks the options and
// prompt + max_new_tokens <= lm.max_positions() for every prompt before running anything
// (Error naming the limit). Finished rows are fed pad_id until every row is done.
// Beam search runs prompts x num_beams rows and reorders them with select_rows each step.
std::vector<GenerationResult> generate(CausalLM& lm,
                                       const std::vector<std::vector<int64_t>>& prompts,
                                       const GenerationOptions& options,
                                       const OnToken& on_token = {},
                                       GenerationStats* stats = nullptr);

// One sequence's choice of tokens, exactly as generate() makes it for a greedy or sample row:
// the repetition penalty over its history, then argmax (greedy) or a draw from its own PRNG
// stream (`stream` as in GenerationOptions::seed). For callers that run their own decode loop
// (the server's scheduler). Options are not checked here (check_generation_options does).
class SequenceSampler {
 public:
  // history: the prompt when it counts for the repetition penalty (decoder-only models).
  SequenceSampler(const GenerationOptions& o, uint64_t stream, std::vector<int64_t> history);
  // The next token from one row of `vocab` logits; adds its log-probability (after the
  // penalty, before temperature/top-k/top-p) to *logprob when given.
  int64_t next(const float* logits, int64_t vocab, double* logprob = nullptr);

 private:
  GenerationOptions o_;
  std::vector<int64_t> history_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<double> logp_, probs_, scratch_;
  std::vector<int64_t> order_;
  std::vector<uint8_t> seen_;
};

// The pieces of the algorithms, public for tests. `logits` is one row of V values.
// Applies the repetition penalty for the distinct ids of `history` in [0, V) in place.
void apply_repetition_penalty(float* logits, int64_t vocab, const std::vector<int64_t>& history,
                              float penalty);
// log-softmax of `logits` (double precision).
std::vector<double> log_softmax(const float* logits, int64_t vocab);
// The sampling distribution after temperature, top-k and top-p (0 for removed tokens; sums to 1).
std::vector<double> sampling_distribution(const float* logits, int64_t vocab, float temperature,
                                          int64_t top_k, float top_p);

}  // namespace tessera
