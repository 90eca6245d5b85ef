// tessera generate: text (or token ids) in, generated text (or ids) out, with every decoding
// method of engine/generate/generation.h.
//
// Output: one line per generated sequence, prompts in input order, a prompt's sequences
// consecutive (beam search: best first). With a single prompt and a single sequence (greedy or
// sample) the tokens are streamed as they come; otherwise each batch's results are printed when
// the batch is done. --scores appends "\tSCORE\tFINISH" to each line; --jsonl prints one JSON
// object per sequence instead. At the end, one line on stderr:
//   tokens N, prefill X ms, decode Y tokens/s
// (N: generated tokens, eos included; prefill: encoding the prompts; decode: rows fed through
// decode steps per second of decoding, a batch of B rows counting B per step).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "engine/generate/generation.h"
#include "engine/io/limits.h"
#include "engine/text/tokenizer.h"
#include "engine/text/tokenizers.h"
#include "models/gpt2.h"
#include "models/transformer_lm.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

// The model-family specifics of generation: the one place a family (gpt2) is added.
struct Generator {
  // One session per batch; a family may size its KV cache from max_new_tokens.
  std::function<std::unique_ptr<CausalLM>(int64_t max_new_tokens)> new_session;
  int64_t max_positions = 0;  // the sessions' max_positions()
  // KV cache floats per row and position (layers x keys and values x width): sizes the cache a
  // batch needs, checked against memory before any session is made.
  int64_t kv_floats_per_position = 0;
  bool prompts_are_prefix = false;  // the sessions' prompts_are_decoder_prefix()
  std::vector<int64_t> eos_ids;
  bool append_eos_to_text = false;  // the transformer demo's sources end with eos
  // Text in and out (prompts encoded without special tokens; outputs decoded with them written
  // as their strings); null with --ids.
  std::unique_ptr<TextTokenizer> codec;
};

// Throws Error unless every id of `tok` is an id of the model (vocab_size rows of logits).
void check_tokenizer_fits(const TextTokenizer& tok, int64_t model_vocab,
                          const std::string& model_dir) {
  if (tok.vocab_size() > model_vocab)
    throw Error("the tokenizer of '" + model_dir + "' (" + tok.source() + ") has " +
                std::to_string(tok.vocab_size()) + " tokens, more than the model's vocab_size " +
                std::to_string(model_vocab));
}

Generator make_generator(const std::string& model_dir, bool want_text,
                         std::shared_ptr<const models::Model> any, NodeObserver* observer) {
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
    if (c.eos_id >= 0) g.eos_ids = {c.eos_id};
    g.append_eos_to_text = c.eos_id >= 0;
    if (want_text) {
      if (!std::filesystem::exists(model_dir + "/tokenizer.json"))
        throw Error("model directory '" + model_dir +
                    "' has no tokenizer.json to read text with; give token ids with --ids");
      g.codec = std::make_unique<CharTokenizer>(load_text_tokenizer(model_dir, *model, "generate"));
    }
  } else if (const models::Gpt2Model* model = any->gpt2()) {
    const auto& c = model->config();
    g.max_positions = c.n_positions;
    g.prompts_are_prefix = true;
    g.kv_floats_per_position = 2 * c.n_layer * c.n_embd;
    g.new_session = [any, model, observer](int64_t max_new) {
      return model->new_session(max_new, observer);
    };
    std::unique_ptr<TextTokenizer> tok;
    if (want_text) {
      if (!has_tokenizer(model_dir))
        throw Error("model directory '" + model_dir +
                    "' has no tokenizer (tokenizer.json, or vocab.json + merges.txt) to read "
                    "text with; give token ids with --ids");
      tok = load_tokenizer(model_dir);
      check_tokenizer_fits(*tok, c.vocab_size, model_dir);
    }
    // eos: the config's, else the tokenizer's (<|endoftext|>).
    if (c.eos_token_id >= 0)
      g.eos_ids = {c.eos_token_id};
    else if (tok && tok->special().eos && *tok->special().eos < c.vocab_size)
      g.eos_ids = {*tok->special().eos};
    g.codec = std::move(tok);
  } else {
    throw Error(
        "generate needs a token model: a transformer encoder-decoder with embeddings, "
        "or gpt2 (model_type '" +
        std::string(any->family()) + "' has no generation)");
  }
  return g;
}

std::string ids_text(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {  // appended in two steps: g++ 12's -Wrestrict
    if (i) s += ' ';                         // misfires on (i ? " " : "") + std::string
    s += std::to_string(ids[i]);
  }
  return s;
}

// Streams one sequence: prints the text each token completes (a UTF-8 character whose bytes
// are spread over several tokens is held back until its last byte comes), or the ids.
class Streamer {
 public:
  explicit Streamer(const TextTokenizer* codec) : codec_(codec) {
    if (codec_) decoder_.emplace(*codec_);
  }
  void add(int64_t token) {
    if (!decoder_) {
      std::cout << (count_++ > 0 ? " " : "") << token << std::flush;
      return;
    }
    const std::string text = decoder_->push(token);
    if (!text.empty()) std::cout << text << std::flush;
  }
  // What is still held back (a character left incomplete at the end becomes U+FFFD, as
  // decode() writes it): the streamed text then equals decode(ids).
  void finish() {
    if (decoder_) std::cout << decoder_->flush();
  }

 private:
  const TextTokenizer* codec_;
  std::optional<StreamDecoder> decoder_;
  size_t count_ = 0;
};

std::string score_suffix(const GeneratedSequence& s) {
  std::ostringstream os;
  os << '\t' << std::fixed << std::setprecision(4) << s.score << '\t'
     << finish_reason_name(s.finish);
  return os.str();
}

}  // namespace

Action add_generate_command(CLI::App& app) {
  struct Options {
    std::string model, method = "greedy", early_stopping = "heuristic";
    std::vector<std::string> texts, stops;
    int64_t max_new_tokens = 0, batch_size = 64, top_k = 0, num_beams = 4, n_best = 1;
    float temperature = 1.0f, top_p = 1.0f, repetition_penalty = 1.0f, length_penalty = 1.0f;
    uint64_t seed = 0;
    int threads = 0;
    bool ids = false, scores = false, jsonl = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "generate",
      "Generate from prompts: one line per sequence, in input order (streamed for one prompt)");
  cmd->add_option("--model", o->model,
                  "Model directory (with tokenizer files for text: tokenizer.json, or "
                  "vocab.json + merges.txt)")
      ->required();
  auto* max_new =
      cmd->add_option("--max-new-tokens", o->max_new_tokens,
                      "Most tokens generated per sequence, eos included (default: 64, at most what "
                      "the model's positions allow)");
  cmd->add_option("--method", o->method, "greedy (default) | sample | beam");
  auto* temperature = cmd->add_option("--temperature", o->temperature,
                                      "sample: divide the logits by T > 0 (default 1)");
  auto* top_k =
      cmd->add_option("--top-k", o->top_k, "sample: keep the K most likely tokens (0 = off)");
  auto* top_p = cmd->add_option(
      "--top-p", o->top_p, "sample: keep the smallest set of tokens of probability >= P (1 = off)");
  auto* seed = cmd->add_option("--seed", o->seed, "sample: random seed (default 0)");
  cmd->add_option(
      "--repetition-penalty", o->repetition_penalty,
      "Divide positive / multiply negative logits of tokens seen before (CTRL; 1 = off)");
  cmd->add_option("--stop", o->stops,
                  "Stop a sequence once its text contains this string (repeatable; kept in the "
                  "output)")
      ->allow_extra_args(false);  // one value per --stop: the prompts that follow stay prompts
  auto* num_beams =
      cmd->add_option("--num-beams", o->num_beams, "beam: beams per prompt (default 4)");
  auto* length_penalty =
      cmd->add_option("--length-penalty", o->length_penalty,
                      "beam: rank by logprob / length^A (default 1; > 0 favours longer outputs)");
  auto* early = cmd->add_option("--early-stopping", o->early_stopping,
                                "beam: heuristic (default) | first | never (exact)");
  cmd->add_option("--n-best", o->n_best,
                  "Sequences per prompt: beam's N best (<= --num-beams) or N samples (default 1)");
  cmd->add_flag("--scores", o->scores, "Append TAB score TAB finish reason to each line");
  cmd->add_flag("--jsonl", o->jsonl,
                "Print one JSON object per sequence: prompt, rank, text, ids, score, logprob, "
                "finish");
  cmd->add_flag("--ids", o->ids,
                "Prompts are space-separated token ids (taken as they are), outputs are ids");
  cmd->add_option("--batch-size", o->batch_size, "Prompts generated together (default 64)");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_option("texts", o->texts, "Prompts (default: one per line from stdin)");
  return [o, max_new, temperature, top_k, top_p, seed, num_beams, length_penalty, early] {
    GenerationOptions opt;
    opt.method = parse_decoding_method(o->method, "--method");
    auto only_for = [&](CLI::Option* flag, DecodingMethod m) {
      if (flag->count() > 0 && opt.method != m)
        throw Error(flag->get_name() + " applies to --method " + decoding_method_name(m) +
                    " only (this is --method " + decoding_method_name(opt.method) + ")");
    };
    for (auto* f : {temperature, top_k, top_p, seed}) only_for(f, DecodingMethod::sample);
    for (auto* f : {num_beams, length_penalty, early}) only_for(f, DecodingMethod::beam);
    if (o->n_best < 1) throw Error("--n-best must be at least 1");
    if (o->n_best > 1 && opt.method == DecodingMethod::greedy)
      throw Error("--n-best " + std::to_string(o->n_best) +
                  " needs --method sample or beam (greedy has one result)");
    if (opt.method == DecodingMethod::beam && o->num_beams < 1)
      throw Error("--num-beams must be at least 1");
    if (opt.method == DecodingMethod::beam && o->n_best > o->num_beams)
      throw Error("--n-best " + std::to_string(o->n_best) + " is more than --num-beams " +
                  std::to_string(o->num_beams));
    if (o->batch_size < 1) throw Error("--batch-size must be at least 1");
    if (!(o->temperature > 0) || !std::isfinite(o->temperature))
      throw Error("--temperature must be a number > 0");
    if (o->top_k < 0) throw Error("--top-k must be >= 0 (0 = off)");
    if (!(o->top_p > 0 && o->top_p <= 1)) throw Error("--top-p must be in (0, 1] (1 = off)");
    if (!(o->repetition_penalty > 0) || !std::isfinite(o->repetition_penalty))
      throw Error("--repetition-penalty must be a number > 0 (1 = off)");
    if (!std::isfinite(o->length_penalty)) throw Error("--length-penalty must be a finite number");
    if (o->ids && !o->stops.empty()) throw Error("--stop needs text output, not --ids");
    if (max_new->count() > 0 && o->max_new_tokens < 1)
      throw Error("--max-new-tokens must be at least 1");
    opt.temperature = o->temperature;
    opt.top_k = o->top_k;
    opt.top_p = o->top_p;
    opt.seed = o->seed;
    opt.repetition_penalty = o->repetition_penalty;
    opt.num_beams = o->num_beams;
    opt.length_penalty = o->length_penalty;
    opt.early_stopping = parse_early_stopping(o->early_stopping, "--early-stopping");
    opt.num_return_sequences = o->n_best;
    opt.stop_strings = o->stops;

    setup_threads(o->threads);
    ModelDir dir(o->model);
    std::shared_ptr<const models::Model> model = load_any_model(dir);
    auto profiler = env_profiler();  // TESSERA_PROFILE=path: trace every node
    Generator gen = make_generator(o->model, !o->ids, model, profiler.get());
    opt.eos_ids = gen.eos_ids;
    if (gen.codec)
      opt.decode_text = [codec = gen.codec.get()](const std::vector<int64_t>& ids) {
        return codec->decode(ids);
      };

    if (max_new->count() > 0 && o->max_new_tokens > gen.max_positions)
      throw Error("--max-new-tokens " + std::to_string(o->max_new_tokens) +
                  " exceeds the model's maximum of " + std::to_string(gen.max_positions) +
                  " positions");
    std::vector<std::string> texts = o->texts;
    for (size_t i = 0; i < texts.size(); ++i)
      check_text_bytes(texts[i].size(), "prompt " + std::to_string(i));
    if (texts.empty()) {
      std::string line;
      while (getline_limited(std::cin, line, "prompt " + std::to_string(texts.size()), true))
        texts.push_back(line);
    }
    {  // The KV cache of one batch, before tokenizing or allocating anything for it.
      const int64_t per_prompt =
          opt.method == DecodingMethod::beam ? std::max(o->num_beams, o->n_best) : o->n_best;
      const uint64_t prompts_in_batch =
          std::min<uint64_t>(texts.size(), static_cast<uint64_t>(o->batch_size));
      const std::string what = "the KV cache of a batch of " + std::to_string(prompts_in_batch) +
                               " prompts x " + std::to_string(per_prompt) + " rows (--batch-size " +
                               std::to_string(o->batch_size) + ") at up to " +
                               std::to_string(gen.max_positions) + " positions";
      uint64_t bytes = checked_mul(prompts_in_batch, static_cast<uint64_t>(per_prompt), what);
      for (int64_t f : {gen.max_positions, gen.kv_floats_per_position, int64_t{4}})
        bytes = checked_mul(bytes, static_cast<uint64_t>(f), what);
      check_fits_memory(bytes, what);
    }
    std::vector<std::vector<int64_t>> prompts;
    for (size_t i = 0; i < texts.size(); ++i) {
      if (!gen.codec) {
        prompts.push_back(parse_token_ids(texts[i], "--ids: prompt " + std::to_string(i)));
        continue;
      }
      auto ids = gen.codec->encode(texts[i]);
      if (gen.append_eos_to_text) ids.push_back(gen.eos_ids.front());
      prompts.push_back(std::move(ids));
    }
    if (max_new->count() > 0) {
      opt.max_new_tokens = o->max_new_tokens;
    } else {  // 64, or what the positions allow after the longest prompt
      int64_t longest = 0;
      if (gen.prompts_are_prefix)
        for (const auto& p : prompts) longest = std::max<int64_t>(longest, p.size());
      opt.max_new_tokens = std::max<int64_t>(1, std::min<int64_t>(64, gen.max_positions - longest));
    }

    const bool stream =
        prompts.size() == 1 && o->n_best == 1 && opt.method != DecodingMethod::beam && !o->jsonl;
    GenerationStats stats;
    const size_t step = static_cast<size_t>(o->batch_size);
    for (size_t begin = 0; begin < prompts.size(); begin += step) {
      const size_t end = std::min(prompts.size(), begin + step);
      std::vector<std::vector<int64_t>> batch(prompts.begin() + begin, prompts.begin() + end);
      opt.row_offset = static_cast<int64_t>(begin);
      std::unique_ptr<CausalLM> lm = gen.new_session(opt.max_new_tokens);
      Streamer streamer(gen.codec.get());
      TokenCallback on_token;
      if (stream) on_token = [&](int64_t, int64_t, int64_t tok) { streamer.add(tok); };
      const auto results = generate(*lm, batch, opt, on_token, &stats);
      for (size_t p = 0; p < results.size(); ++p) {
        const auto& seqs = results[p].sequences;
        for (size_t r = 0; r < seqs.size(); ++r) {
          const auto& s = seqs[r];
          const std::string text = gen.codec ? gen.codec->decode(s.ids) : ids_text(s.ids);
          if (o->jsonl) {
            nlohmann::json j = {{"prompt", begin + p},  {"rank", r},
                                {"ids", s.ids},         {"score", s.score},
                                {"logprob", s.logprob}, {"finish", finish_reason_name(s.finish)}};
            if (gen.codec) j["text"] = text;
            std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
            continue;
          }
          if (stream)
            streamer.finish();
          else
            std::cout << text;
          std::cout << (o->scores ? score_suffix(s) : "") << '\n';
        }
      }
      std::cout.flush();
    }
    write_env_trace(profiler.get());
    std::fprintf(stderr, "tokens %lld, prefill %.1f ms, decode %.1f tokens/s\n",
                 static_cast<long long>(stats.new_tokens), stats.prefill_ms,
                 stats.decode_tokens_per_s());
    return 0;
  };
}

}  // namespace tessera::cli
