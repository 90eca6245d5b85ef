// tessera tokenize: text to token ids and back with a model directory's tokenizer
// (engine/text/tokenizers.h: tokenizer.json, vocab.json + merges.txt, or vocab.txt; no config.json
// or weights needed).
//
//   tessera tokenize --model DIR "text" ...        one line of space-separated ids per text
//                                                  (no texts: one text per line of stdin)
//   tessera tokenize --model DIR --decode 15496 995         the text of these ids
//   tessera tokenize --model DIR --decode < ids.txt          one text per line of ids
//   tessera tokenize --model DIR --jsonl < in.jsonl          {"text": ...} -> {"ids": [...]}
//   tessera tokenize --model DIR --jsonl --decode < in.jsonl {"ids": [...]} -> {"text": ...}
//
// --special: encoding adds the model's special tokens ([CLS] ... [SEP] for BERT) and recognises
// special tokens written in the text; decoding keeps special tokens (dropped without it).
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/text/tokenizers.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

void print_ids(const std::vector<int64_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  line += '\n';
  std::cout << line;
}

// Runs f, prefixing the message of an Error with `where`.
template <class F>
auto at(const std::string& where, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

// Space-separated ids; `where` names the argument or line in messages.
std::string dump_line(const nlohmann::json& j) {
  // Invalid UTF-8 cannot reach here (decode repairs it), but replace rather than throw anyway.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

Action add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string model;
    std::vector<std::string> args;
    bool decode = false, jsonl = false, special = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("tokenize", "Token ids of texts (or texts of ids, --decode)");
  cmd->add_option("--model", o->model,
                  "Directory with tokenizer.json, vocab.json + merges.txt, or vocab.txt")
      ->required();
  cmd->add_flag("--decode", o->decode, "Turn ids back into text");
  cmd->add_flag("--jsonl", o->jsonl,
                "Read JSON lines from stdin: {\"text\": ...} -> {\"ids\": [...]} "
                "(with --decode: {\"ids\": [...]} -> {\"text\": ...})");
  cmd->add_flag("--special", o->special,
                "Encoding: add special tokens and recognise them in the text; decoding: keep them");
  cmd->add_option("texts", o->args, "Texts (with --decode: ids); none: one per line from stdin");
  return [o] {
    const auto tok = load_tokenizer(o->model);
    log_verbose(std::string("tokenizer: ") + tok->kind() + ", " +
                std::to_string(tok->vocab_size()) + " ids, from " + tok->source());
    const bool keep_special = o->special;
    if (o->jsonl) {
      if (!o->args.empty())
        throw Error("--jsonl reads stdin; got arguments too ('" + o->args.front() + "')");
      std::string line;
      for (int64_t n = 1; getline_limited(std::cin, line, "stdin line " + std::to_string(n)); ++n) {
        const std::string where = "stdin line " + std::to_string(n);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw Error(where + " is not valid JSON (" + e.what() + ")");
        }
        if (o->decode) {
          if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array())
            throw Error(where + ": expected {\"ids\": [...]}");
          std::vector<int64_t> ids;
          for (const auto& v : j["ids"]) {
            if (!v.is_number_integer())
              throw Error(where + ": every id must be an integer, got " + v.dump());
            ids.push_back(v.get<int64_t>());
          }
          const std::string text = at(where, [&] { return tok->decode(ids, !keep_special); });
          std::cout << dump_line({{"text", text}}) << std::flush;
        } else {
          if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
            throw Error(where + ": expected {\"text\": \"...\"}");
          const std::string text = j["text"].get<std::string>();
          const auto ids = at(where, [&] { return tok->encode(text, o->special); });
          std::cout << dump_line({{"ids", ids}}) << std::flush;
        }
      }
      return 0;
    }
    if (o->decode) {
      if (!o->args.empty()) {
        for (size_t i = 0; i < o->args.size(); ++i)
          check_text_bytes(o->args[i].size(), "argument " + std::to_string(i + 1));
        std::vector<int64_t> ids;
        for (size_t i = 0; i < o->args.size(); ++i)
          for (int64_t id : parse_token_ids(o->args[i], "argument " + std::to_string(i + 1)))
            ids.push_back(id);
        std::cout << tok->decode(ids, !keep_special) << '\n';
        return 0;
      }
      std::string line;
      for (int64_t n = 1; getline_limited(std::cin, line, "stdin line " + std::to_string(n)); ++n) {
        const std::string where = "stdin line " + std::to_string(n);
        std::vector<int64_t> ids;
        for (int64_t id : parse_token_ids(line, where)) ids.push_back(id);
        std::cout << at(where, [&] { return tok->decode(ids, !keep_special); }) << '\n'
                  << std::flush;
      }
      return 0;
    }
    if (!o->args.empty()) {
      for (size_t i = 0; i < o->args.size(); ++i)
        check_text_bytes(o->args[i].size(), "argument " + std::to_string(i + 1));
      for (size_t i = 0; i < o->args.size(); ++i)
        print_ids(at("argument " + std::to_string(i + 1),
                     [&] { return tok->encode(o->args[i], o->special); }));
      return 0;
    }
    std::string line;
    for (int64_t n = 1; getline_limited(std::cin, line, "stdin line " + std::to_string(n)); ++n) {
      print_ids(
          at("stdin line " + std::to_string(n), [&] { return tok->encode(line, o->special); }));
      std::cout.flush();
    }
    return 0;
  };
}

}  // namespace tessera::cli
