#include "engine/api/driver.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/io/limits.h"
#include "engine/text/tokenizer.h"
#include "models/bert.h"
#include "models/gpt2.h"
#include "models/rnn_attention.h"
#include "models/transformer_lm.h"

namespace tessera::api {

namespace {

// Throws Error unless every id of `tok` is an id of the model (vocab_size rows of logits).
void check_tokenizer_fits(const TextTokenizer& tok, int64_t model_vocab,
                          const std::string& model_dir) {
  if (tok.vocab_size() > model_vocab)
    throw Error("the tokenizer of '" + model_dir + "' (" + tok.source() + ") has " +
                std::to_string(tok.vocab_size()) + " tokens, more than the model's vocab_size " +
                std::to_string(model_vocab));
}

}  // namespace

Generator make_generator(const std::string& model_dir, bool want_text,
                         std::shared_ptr<const models::Model> any, OptionStyle style,
                         NodeObserver* observer) {
  const std::string use_ids =
      style == OptionStyle::cli ? "give token ids with --ids" : "give token ids (generate_ids)";
  Generator g;
  if (const models::TransformerModel* model = any->transformer()) {
    const auto& c = model->config();
    // Checks the family can generate at all (throws naming what is missing).
    models::TransformerLM probe(*model);
    g.max_positions = probe.max_positions();
    g.prompts_are_prefix = probe.prompts_are_decoder_prefix();
    g.kv_floats_per_position = 2 * c.num_decoder_layers * c.d_model;
    g.new_session = [any, model, observer](int64_t) {
      return std::make_unique<models::TransformerLM>(*model, observer);
    };
    // Continuous batching: a session per row (the demo-sized family has no batched rows).
    g.new_rows = [new_session = g.new_session, vocab = c.tgt_vocab_size, max = g.max_positions,
                  bytes = 4 * static_cast<uint64_t>(g.kv_floats_per_position)](int64_t) {
      return rows_from_sessions(new_session, vocab, max, false, bytes);
    };
    if (c.eos_id >= 0) g.eos_ids = {c.eos_id};
    g.append_eos_to_text = c.eos_id >= 0;
    if (want_text) {
      const std::string path = model_dir + "/tokenizer.json";
      if (!std::filesystem::exists(path))
        throw Error("model directory '" + model_dir +
                    "' has no tokenizer.json to read text with; " + use_ids);
      auto tok = std::make_shared<CharTokenizer>(path);
      check_tokenizer_fits(*tok, c.tgt_vocab_size, model_dir);
      g.codec = std::move(tok);
    }
  } else if (const models::Gpt2Model* model = any->gpt2()) {
    const auto& c = model->config();
    g.max_positions = c.n_positions;
    g.prompts_are_prefix = true;
    g.kv_floats_per_position = 2 * c.n_layer * c.n_embd;
    g.new_session = [any, model, observer](int64_t max_new) {
      return model->new_session(max_new, observer);
    };
    g.new_rows = [any, model, observer](int64_t prefill_chunk) {
      return model->new_rows(prefill_chunk, observer);
    };
    std::shared_ptr<const TextTokenizer> tok;
    if (want_text) {
      if (!has_tokenizer(model_dir))
        throw Error("model directory '" + model_dir +
                    "' has no tokenizer (tokenizer.json, or vocab.json + merges.txt) to read "
                    "text with; " +
                    use_ids);
      tok = load_tokenizer(model_dir);
      check_tokenizer_fits(*tok, c.vocab_size, model_dir);
    }
    // eos: the config's, else the tokenizer's (<|endoftext|>).
    if (c.eos_token_id >= 0)
      g.eos_ids = {c.eos_token_id};
    else if (tok && tok->special().eos && *tok->special().eos < c.vocab_size)
      g.eos_ids = {*tok->special().eos};
    g.codec = std::move(tok);
  } else if (const models::RnnAttentionModel* model = any->rnn_attention()) {
    const auto& c = model->config();
    g.max_positions = c.max_length;
    g.prompts_are_prefix = false;
    // No KV cache: a row's decoder state is s (and c), plus its share of the encoder's memory
    // and keys, sized by the source, not the positions.
    g.kv_floats_per_position = 0;
    g.new_session = [any, model, observer](int64_t) {
      return std::make_unique<models::RnnAttentionLM>(*model, observer);
    };
    g.new_rows = [new_session = g.new_session, vocab = c.tgt_vocab_size, max = g.max_positions](
                     int64_t) { return rows_from_sessions(new_session, vocab, max, false, 0); };
    g.eos_ids = {c.eos_id};
    // A text source ends with eos, as for the transformer family: tools/tessera_torch.py's
    // CharTokenizer.encode (what the demos are trained on) appends it. --ids sources are taken
    // as given.
    g.append_eos_to_text = c.eos_id >= 0;
    if (want_text) {
      const std::string path = model_dir + "/tokenizer.json";
      if (!std::filesystem::exists(path))
        throw Error("model directory '" + model_dir +
                    "' has no tokenizer.json to read text with; " + use_ids);
      auto tok = std::make_shared<CharTokenizer>(path);
      check_tokenizer_fits(*tok, std::min(c.src_vocab_size, c.tgt_vocab_size), model_dir);
      g.codec = std::move(tok);
    }
  } else {
    throw Error(std::string(style == OptionStyle::cli ? "generate" : "generation") +
                " needs a token model: a transformer encoder-decoder with embeddings, "
                "gpt2 or rnn_attention (model_type '" +
                std::string(any->family()) + "' has no generation)");
  }
  return g;
}

std::string option_name(const char* key, OptionStyle style) {
  if (style == OptionStyle::api) return key;
  std::string s = std::string("--") + key;
  std::replace(s.begin(), s.end(), '_', '-');
  return s;
}

void check_generation_options(const GenerationOptions& o, int64_t batch_size, bool text,
                              OptionStyle style) {
  auto name = [style](const char* key) { return option_name(key, style); };
  const std::string n_best = style == OptionStyle::cli ? "--n-best" : "num_return_sequences";
  if (o.num_return_sequences < 1) throw Error(n_best + " must be at least 1");
  if (o.num_return_sequences > 1 && o.method == DecodingMethod::greedy)
    throw Error(n_best + " " + std::to_string(o.num_return_sequences) + " needs " + name("method") +
                " sample or beam (greedy has one result)");
  if (o.method == DecodingMethod::beam && o.num_beams < 1)
    throw Error(name("num_beams") + " must be at least 1");
  if (o.method == DecodingMethod::beam && o.num_return_sequences > o.num_beams)
    throw Error(n_best + " " + std::to_string(o.num_return_sequences) + " is more than " +
                name("num_beams") + " " + std::to_string(o.num_beams));
  if (batch_size < 1) throw Error(name("batch_size") + " must be at least 1");
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    throw Error(name("temperature") + " must be a number > 0");
  if (o.top_k < 0) throw Error(name("top_k") + " must be >= 0 (0 = off)");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw Error(name("top_p") + " must be in (0, 1] (1 = off)");
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    throw Error(name("repetition_penalty") + " must be a number > 0 (1 = off)");
  if (!std::isfinite(o.length_penalty))
    throw Error(name("length_penalty") + " must be a finite number");
  if (!text && !o.stop_strings.empty())
    throw Error(name("stop") + (style == OptionStyle::cli ? " needs text output, not --ids"
                                                          : " needs text prompts, not token ids"));
}

void check_kv_cache_fits(const Generator& g, uint64_t prompts, int64_t rows_per_prompt,
                         const std::string& what_request) {
  const std::string what = "the KV cache of a batch of " + std::to_string(prompts) + " prompts x " +
                           std::to_string(rows_per_prompt) + " rows (" + what_request +
                           ") at up to " + std::to_string(g.max_positions) + " positions";
  uint64_t bytes = checked_mul(prompts, static_cast<uint64_t>(rows_per_prompt), what);
  for (int64_t f : {g.max_positions, g.kv_floats_per_position, int64_t{4}})
    bytes = checked_mul(bytes, static_cast<uint64_t>(f), what);
  check_fits_memory(bytes, what);
}

std::vector<std::vector<int64_t>> encode_prompts(const Generator& g,
                                                 const std::vector<std::string>& texts) {
  if (!g.codec) throw Error("this generator reads token ids, not text");
  std::vector<std::vector<int64_t>> prompts;
  prompts.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    check_text_bytes(texts[i].size(), "prompt " + std::to_string(i));
    auto ids = g.codec->encode(texts[i]);
    if (g.append_eos_to_text) ids.push_back(g.eos_ids.front());
    prompts.push_back(std::move(ids));
  }
  return prompts;
}

int64_t default_max_new_tokens(const Generator& g,
                               const std::vector<std::vector<int64_t>>& prompts) {
  int64_t longest = 0;
  if (g.prompts_are_prefix)
    for (const auto& p : prompts) longest = std::max<int64_t>(longest, p.size());
  return std::max<int64_t>(1, std::min<int64_t>(64, g.max_positions - longest));
}

void check_max_new_tokens(const Generator& g, int64_t max_new_tokens, const std::string& name) {
  if (max_new_tokens < 1) throw Error(name + " must be at least 1");
  if (max_new_tokens > g.max_positions)
    throw Error(name + " " + std::to_string(max_new_tokens) + " exceeds the model's maximum of " +
                std::to_string(g.max_positions) + " positions");
}

Pooling parse_pooling(const std::string& name, const std::string& what) {
  if (name == "cls") return Pooling::cls;
  if (name == "mean") return Pooling::mean;
  if (name == "pooler") return Pooling::pooler;
  throw Error(what + ": '" + name + "' is not a pooling (cls, mean or pooler)");
}

std::vector<std::vector<int64_t>> tokenize_for_embedding(const TextTokenizer& tok,
                                                         const std::vector<std::string>& texts) {
  std::vector<std::vector<int64_t>> out;
  out.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    check_text_bytes(texts[i].size(), "input " + std::to_string(i));
    out.push_back(tok.encode(texts[i], /*add_special=*/true));
  }
  return out;
}

Tensor embed(const models::Model& model, const std::vector<std::vector<int64_t>>& seqs,
             Pooling pooling, bool normalize, int64_t batch_size) {
  const models::BertModel* bert = model.bert();
  if (!bert)
    throw Error(std::string("embedding needs a bert model; this one has model_type '") +
                model.family() + "'");
  if (pooling == Pooling::pooler && !bert->config().pooler)
    throw Error("pooling 'pooler' needs the checkpoint's pooler.dense weights (use cls or mean)");
  if (batch_size < 1) throw Error("the embedding batch size must be at least 1");
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seqs[i].empty()) throw Error("input " + std::to_string(i) + " has no token ids");
  const int64_t h = bert->config().hidden_size;
  Tensor result(DType::f32, {static_cast<int64_t>(seqs.size()), h}, false);
  const size_t step = static_cast<size_t>(batch_size);
  for (size_t first = 0; first < seqs.size(); first += step) {
    const size_t last = std::min(seqs.size(), first + step);
    const int64_t batch = static_cast<int64_t>(last - first);
    int64_t len = 1;
    for (size_t i = first; i < last; ++i)
      len = std::max<int64_t>(len, static_cast<int64_t>(seqs[i].size()));
    Tensor ids(DType::i64, {batch, len}), mask(DType::i64, {batch, len});
    for (int64_t b = 0; b < batch; ++b) {
      const auto& s = seqs[first + b];
      for (size_t t = 0; t < s.size(); ++t) {
        ids.data<int64_t>()[b * len + static_cast<int64_t>(t)] = s[t];
        mask.data<int64_t>()[b * len + static_cast<int64_t>(t)] = 1;
      }
    }
    TensorMap out = model.run({{"input_ids", ids}, {"attention_mask", mask}});
    const Tensor& hidden = out.at("last_hidden_state");  // [B, T, H]
    std::vector<double> v(static_cast<size_t>(h));
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t n = static_cast<int64_t>(seqs[first + b].size());
      std::fill(v.begin(), v.end(), 0.0);
      if (pooling == Pooling::pooler) {
        const float* p = out.at("pooler_output").data<float>() + b * h;
        for (int64_t j = 0; j < h; ++j) v[j] = p[j];
      } else if (pooling == Pooling::cls) {
        const float* p = hidden.data<float>() + b * len * h;
        for (int64_t j = 0; j < h; ++j) v[j] = p[j];
      } else {
        for (int64_t t = 0; t < n; ++t) {
          const float* p = hidden.data<float>() + (b * len + t) * h;
          for (int64_t j = 0; j < h; ++j) v[j] += p[j];
        }
        for (auto& x : v) x /= static_cast<double>(n);
      }
      if (normalize) {
        double norm = 0;
        for (double x : v) norm += x * x;
        norm = std::sqrt(norm);
        if (norm > 0)
          for (auto& x : v) x /= norm;
      }
      float* dst = result.data<float>() + (static_cast<int64_t>(first) + b) * h;
      for (int64_t j = 0; j < h; ++j) dst[j] = static_cast<float>(v[j]);
    }
  }
  return result;
}

}  // namespace tessera::api
