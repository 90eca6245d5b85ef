// tessera generate: text (or token ids) in, generated text (or ids) out, with every decoding
// method of engine/generation.h.
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
#include <sstream>

#include "engine/generation.h"
#include "engine/tokenizer.h"
#include "models/gpt2.h"
#include "models/transformer_lm.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

// What generate needs of a tokenizer. Today the demo's char tokenizer backs it; another
// tokenizer (GPT-2 BPE) plugs in here.
class TextCodec {
 public:
  virtual ~TextCodec() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
};

class CharCodec final : public TextCodec {
 public:
  explicit CharCodec(CharTokenizer tok) : tok_(std::move(tok)) {}
  std::vector<int64_t> encode(const std::string& text) const override { return tok_.encode(text); }
  std::string decode(const std::vector<int64_t>& ids) const override { return tok_.decode(ids); }

 private:
  CharTokenizer tok_;
};

// The model-family specifics of generation: the one place a family (gpt2) is added.
struct Generator {
  // One session per batch; a family may size its KV cache from max_new_tokens.
  std::function<std::unique_ptr<CausalLM>(int64_t max_new_tokens)> new_session;
  int64_t max_positions = 0;        // the sessions' max_positions()
  bool prompts_are_prefix = false;  // the sessions' prompts_are_decoder_prefix()
  std::vector<int64_t> eos_ids;
  bool append_eos_to_text = false;   // the transformer demo's sources end with eos
  std::unique_ptr<TextCodec> codec;  // null with --ids
};

Generator make_generator(const std::string& model_dir, bool want_text,
                         std::shared_ptr<const models::Model> any, NodeObserver* observer) {
  Generator g;
  if (const models::TransformerModel* model = any->transformer()) {
    const auto& c = model->config();
    // Checks the family can generate at all (throws naming what is missing).
    models::TransformerLM probe(*model);
    g.max_positions = probe.max_positions();
    g.prompts_are_prefix = probe.prompts_are_decoder_prefix();
    g.new_session = [any, model, observer](int64_t) {
      return std::make_unique<models::TransformerLM>(*model, observer);
    };
    if (c.eos_id >= 0) g.eos_ids = {c.eos_id};
    g.append_eos_to_text = c.eos_id >= 0;
    if (want_text) {
      if (!std::filesystem::exists(model_dir + "/tokenizer.json"))
        throw Error("model directory '" + model_dir +
                    "' has no tokenizer.json to read text with; give token ids with --ids");
      g.codec = std::make_unique<CharCodec>(load_text_tokenizer(model_dir, *model, "generate"));
    }
  } else if (const models::Gpt2Model* model = any->gpt2()) {
    const auto& c = model->config();
    g.max_positions = c.n_positions;
    g.prompts_are_prefix = true;
    g.new_session = [any, model, observer](int64_t max_new) {
      return model->new_session(max_new, observer);
    };
    if (c.eos_token_id >= 0) g.eos_ids = {c.eos_token_id};
    // The GPT-2 BPE tokenizer plugs in here (a TextCodec over vocab.json + merges.txt).
    if (want_text)
      throw Error(
          "generate cannot read text for a gpt2 model yet (no GPT-2 tokenizer in this "
          "build); give token ids with --ids");
  } else {
    throw Error(
        "generate needs a token model: a transformer encoder-decoder with embeddings, "
        "or gpt2 (model_type '" +
        std::string(any->family()) + "' has no generation)");
  }
  return g;
}

std::vector<int64_t> parse_ids(const std::string& line, size_t index) {
  std::vector<int64_t> ids;
  std::istringstream in(line);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    int64_t id = -1;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || id < 0)
      throw Error("--ids: '" + word + "' in prompt " + std::to_string(index) +
                  " is not a token id (prompts are space-separated non-negative integers)");
    ids.push_back(id);
  }
  return ids;
}

std::string ids_text(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

// Bytes of `s` up to the start of an incomplete UTF-8 sequence at its end (held back while
// streaming, until the next token completes it).
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size(), back = 0;
  while (i > 0 && back < 4) {
    const auto c = static_cast<unsigned char>(s[i - 1]);
    ++back;
    if ((c & 0xC0) != 0x80) {  // a lead byte (or ASCII)
      const size_t need = c < 0x80           ? 1
                          : (c >> 5) == 0x6  ? 2
                          : (c >> 4) == 0xE  ? 3
                          : (c >> 3) == 0x1E ? 4
                                             : 1;
      return back >= need ? s.size() : i - 1;
    }
    --i;
  }
  return s.size();
}

// Streams one sequence: prints the new part of its decoded text after each token.
class Streamer {
 public:
  explicit Streamer(const TextCodec* codec) : codec_(codec) {}
  void add(int64_t token) {
    ids_.push_back(token);
    if (!codec_) {
      std::cout << (ids_.size() > 1 ? " " : "") << token << std::flush;
      return;
    }
    const std::string text = codec_->decode(ids_);
    if (text.compare(0, printed_, shown_) != 0) return;  // an earlier part changed: wait
    size_t upto = complete_utf8_prefix(text);
    // A lossy decoder shows a character cut between tokens as U+FFFD until the next token
    // completes it: hold trailing ones back too, so what was printed stays a prefix.
    static const std::string kReplacement = "\xEF\xBF\xBD";
    while (upto >= printed_ + kReplacement.size() &&
           text.compare(upto - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
      upto -= kReplacement.size();
    if (upto > printed_) {
      std::cout << text.substr(printed_, upto - printed_) << std::flush;
      shown_ = text.substr(0, upto);
      printed_ = upto;
    }
  }
  // The rest of the final text (what a token-by-token view could not show yet).
  void finish(const std::vector<int64_t>& ids) {
    if (!codec_) return;
    const std::string text = codec_->decode(ids);
    if (text.size() > printed_ && text.compare(0, printed_, shown_) == 0)
      std::cout << text.substr(printed_);
  }

 private:
  const TextCodec* codec_;
  std::vector<int64_t> ids_;
  std::string shown_;
  size_t printed_ = 0;
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
  cmd->add_option("--model", o->model, "Model directory (with tokenizer.json for text)")
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

    std::vector<std::string> texts = o->texts;
    if (texts.empty()) {
      std::string line;
      while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        texts.push_back(line);
      }
    }
    std::vector<std::vector<int64_t>> prompts;
    for (size_t i = 0; i < texts.size(); ++i) {
      if (!gen.codec) {
        prompts.push_back(parse_ids(texts[i], i));
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
            streamer.finish(s.ids);
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
