// tessera generate: greedy decoding of texts with an encoder-decoder token model.
#include <filesystem>
#include <iostream>

#include "engine/tokenizer.h"
#include "tools/cli.h"

namespace tessera::cli {

Action add_generate_command(CLI::App& app) {
  struct Options {
    std::string model;
    std::vector<std::string> texts;
    int64_t max_new_tokens = 0, batch_size = 64;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("generate", "Greedy decoding of texts (one result per line)");
  cmd->add_option("--model", o->model, "Model directory with tokenizer.json")->required();
  cmd->add_option("--max-new-tokens", o->max_new_tokens,
                  "Most tokens generated per input (default: 64, at most max_position)");
  cmd->add_option("--batch-size", o->batch_size, "Inputs decoded together (default 64)");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_option("texts", o->texts, "Input texts (default: one per line from stdin)");
  return [o] {
    setup_threads(o->threads);
    ModelDir dir(o->model);
    auto model = load_model(dir);
    const CharTokenizer tok = load_text_tokenizer(o->model, *model, "generate");
    const auto& c = model->config();
    int64_t max_new = o->max_new_tokens;
    if (max_new <= 0) max_new = std::min<int64_t>(64, c.max_position);
    if (o->batch_size < 1) throw Error("--batch-size must be at least 1");
    std::vector<std::string> texts = o->texts;
    if (texts.empty()) {
      std::string line;
      while (std::getline(std::cin, line)) texts.push_back(line);
    }
    const size_t step = static_cast<size_t>(o->batch_size);
    auto profiler = env_profiler();  // TESSERA_PROFILE=path: trace every node
    for (size_t begin = 0; begin < texts.size(); begin += step) {
      const size_t end = std::min(texts.size(), begin + step);
      std::vector<std::vector<int64_t>> sources;
      for (size_t i = begin; i < end; ++i) {
        auto ids = tok.encode(texts[i]);
        ids.push_back(c.eos_id);
        sources.push_back(std::move(ids));
      }
      for (const auto& out : model->greedy(sources, max_new, profiler.get()))
        std::cout << tok.decode(out) << '\n';
      std::cout.flush();
    }
    write_env_trace(profiler.get());
    return 0;
  };
}

}  // namespace tessera::cli
