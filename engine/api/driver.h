// engine/api/: the library layer, the top of engine (it may use models/). The public API
// (include/tessera/, engine/api/api.cpp) and the `tessera` CLI both drive the models through
// the pieces here, so a generation or an embedding runs the same code whichever way it is asked.
//
//   Generator g = make_generator(dir, /*want_text=*/true, model);
//   check_generation_options(opt, batch_size, per_prompt, OptionStyle::cli);
//   auto prompts = encode_prompts(g, texts);
//   check_kv_cache_fits(g, prompts.size(), rows_per_prompt, "--batch-size 64");
//   std::unique_ptr<CausalLM> lm = g.new_session(max_new_tokens);
//   generate(*lm, prompts, opt, ...);                    // engine/generate/generation.h
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/generate/generation.h"
#include "engine/generate/rows.h"
#include "engine/graph/executor.h"
#include "engine/text/tokenizers.h"
#include "models/model.h"

namespace tessera::api {

// The model-family specifics of generation: the one place a family is added.
struct Generator {
  // One generation session per batch; a family may size its KV cache from max_new_tokens.
  std::function<std::unique_ptr<CausalLM>(int64_t max_new_tokens)> new_session;
  // Continuous batching (engine/generate/rows.h): rows with caches of their own, prompts
  // prefilled `prefill_chunk` tokens per call where the family chunks them.
  std::function<std::unique_ptr<RowModel>(int64_t prefill_chunk)> new_rows;
  int64_t max_positions = 0;  // the sessions' max_positions()
  // KV cache floats per row and position (layers x keys and values x width).
  int64_t kv_floats_per_position = 0;
  bool prompts_are_prefix = false;  // the sessions' prompts_are_decoder_prefix()
  std::vector<int64_t> eos_ids;
  bool append_eos_to_text = false;  // the transformer demo's sources end with eos
  // Text in and out (prompts encoded without special tokens, outputs decoded with them written
  // as their strings); null when made without text.
  std::shared_ptr<const TextTokenizer> codec;
};

// Throws Error naming what is missing when the model cannot generate (not a token model), or,
// with want_text, has no tokenizer that fits it. `observer` (optional) watches every node.
// How option names are written in error messages: "--top-k" (the CLI) or "top_k" (the API).
enum class OptionStyle { cli, api };

Generator make_generator(const std::string& model_dir, bool want_text,
                         std::shared_ptr<const models::Model> model, OptionStyle style,
                         NodeObserver* observer = nullptr);
std::string option_name(const char* key, OptionStyle style);  // key as in the API: "top_k"

// The checks of every option value of a generation (the CLI's and the API's): temperature > 0,
// top_k >= 0, 0 < top_p <= 1, penalties, beams, n-best against the method, batch size >= 1,
// stop strings only with text. Throws Error naming the option in `style`.
void check_generation_options(const GenerationOptions& opt, int64_t batch_size, bool text,
                              OptionStyle style);

// The KV cache of one batch of `prompts` prompts x `rows_per_prompt` rows at the generator's
// longest length, checked against physical memory before anything is allocated; `what` names
// the request ("--batch-size 64").
void check_kv_cache_fits(const Generator& g, uint64_t prompts, int64_t rows_per_prompt,
                         const std::string& what);

// Text prompts to token ids with the generator's codec (eos appended where the family's sources
// end with it); each text is checked against the input text limit first.
std::vector<std::vector<int64_t>> encode_prompts(const Generator& g,
                                                 const std::vector<std::string>& texts);

// max_new_tokens when none is asked for: 64, or what the positions allow after the longest prompt.
int64_t default_max_new_tokens(const Generator& g,
                               const std::vector<std::vector<int64_t>>& prompts);
// Throws Error unless 1 <= max_new_tokens <= the model's positions (`name`: the option).
void check_max_new_tokens(const Generator& g, int64_t max_new_tokens, const std::string& name);

// --- embeddings ---------------------------------------------------------------------------------
// Pooling (cls, mean, pooler) is the public API's enum (include/tessera/types.hpp).
Pooling parse_pooling(const std::string& name, const std::string& what);

// Pooled vectors F32 [n, hidden_size] of token id sequences through a bert model, batch_size at
// a time (padded, the padding removed inside the model). Throws Error when the model is not
// bert, has no pooler for Pooling::pooler, or a sequence is empty.
Tensor embed(const models::Model& model, const std::vector<std::vector<int64_t>>& seqs,
             Pooling pooling, bool normalize, int64_t batch_size);

// The tokenizer of a bert model directory: [CLS] ... [SEP] added.
std::vector<std::vector<int64_t>> tokenize_for_embedding(const TextTokenizer& tok,
                                                         const std::vector<std::string>& texts);

}  // namespace tessera::api
