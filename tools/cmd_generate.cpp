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

#include "engine/api/driver.h"
#include "engine/generate/generation.h"
#include "engine/io/limits.h"
#include "engine/text/tokenizers.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

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
    api::check_generation_options(opt, o->batch_size, !o->ids, api::OptionStyle::cli);

    setup_threads(o->threads);
    ModelDir dir(o->model);
    std::shared_ptr<const models::Model> model = load_any_model(dir);
    auto profiler = env_profiler();  // TESSERA_PROFILE=path: trace every node
    api::Generator gen =
        api::make_generator(o->model, !o->ids, model, api::OptionStyle::cli, profiler.get());
    opt.eos_ids = gen.eos_ids;
    if (gen.codec)
      opt.decode_text = [codec = gen.codec.get()](const std::vector<int64_t>& ids) {
        return codec->decode(ids);
      };

    if (max_new->count() > 0) api::check_max_new_tokens(gen, o->max_new_tokens, "--max-new-tokens");
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
      api::check_kv_cache_fits(
          gen, std::min<uint64_t>(texts.size(), static_cast<uint64_t>(o->batch_size)), per_prompt,
          "--batch-size " + std::to_string(o->batch_size));
    }
    std::vector<std::vector<int64_t>> prompts;
    if (gen.codec) {
      prompts = api::encode_prompts(gen, texts);
    } else {
      for (size_t i = 0; i < texts.size(); ++i)
        prompts.push_back(parse_token_ids(texts[i], "--ids: prompt " + std::to_string(i)));
    }
    opt.max_new_tokens =
        max_new->count() > 0 ? o->max_new_tokens : api::default_max_new_tokens(gen, prompts);

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
      OnToken on_token;
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
