// tessera embed: pooled (optionally L2-normalized) vectors of texts from a `bert` model, one JSON
// line per input:
//   {"index": 0, "tokens": 7, "embedding": [0.0123, ...]}
//
// Pooling (--pooling): cls (default: last_hidden_state of the first token, [CLS]), mean (average
// of last_hidden_state over the real tokens) or pooler (pooler_output: tanh(dense(CLS)), needs
// the checkpoint's pooler). --normalize divides each vector by its L2 norm.
// Inputs are texts (tokenized by the model directory's tokenizer, [CLS] and [SEP] added), or with
// --ids strings of token ids ("101 7592 102", special tokens included); with none given, one
// input per line of stdin. Inputs are batched (--batch-size)
// with padding, which the model removes before the dense layers. At the end one line on stderr:
// inputs, tokens, milliseconds.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "engine/api/driver.h"
#include "engine/text/tokenizers.h"
#include "models/bert.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

std::string format_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

}  // namespace

Action add_embed_command(CLI::App& app) {
  struct Options {
    std::string model, pooling = "cls";
    std::vector<std::string> inputs;
    bool ids = false, normalize = false;
    int64_t batch_size = 32;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("embed", "Pooled vectors of texts from a bert model (JSON lines)");
  cmd->add_option("--model", o->model, "Model directory (model_type bert)")->required();
  cmd->add_option("--pooling", o->pooling, "cls (default), mean or pooler")
      ->check(CLI::IsMember({"cls", "mean", "pooler"}));
  cmd->add_flag("--normalize", o->normalize, "L2-normalize each vector");
  cmd->add_flag("--ids", o->ids,
                "Inputs are token ids separated by spaces (special tokens included)");
  cmd->add_option("--batch-size", o->batch_size, "Inputs run together (default 32)");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_option("inputs", o->inputs, "Texts (or id strings with --ids); default: stdin lines");
  return [o] {
    setup_threads(o->threads);
    if (o->batch_size < 1) throw Error("--batch-size must be at least 1");
    ModelDir dir(o->model);
    auto model = load_any_model(dir);
    const models::BertModel* bert = model->bert();
    if (!bert)
      throw Error("embed needs a bert model; '" + dir.config_path() + "' has model_type '" +
                  model->family() + "'");
    if (o->pooling == "pooler" && !bert->config().pooler)
      throw Error("--pooling pooler: model directory '" + o->model +
                  "' has no pooler.dense weights (use cls or mean)");
    std::vector<std::string> inputs = o->inputs;
    for (size_t i = 0; i < inputs.size(); ++i)
      check_text_bytes(inputs[i].size(), "input " + std::to_string(i));
    if (inputs.empty()) {
      std::string line;
      while (getline_limited(std::cin, line, "input " + std::to_string(inputs.size())))
        inputs.push_back(line);
    }
    std::vector<std::vector<int64_t>> seqs;
    if (o->ids) {
      for (size_t i = 0; i < inputs.size(); ++i) {
        const std::string where = "embed --ids: input " + std::to_string(i);
        seqs.push_back(parse_token_ids(inputs[i], where));
        if (seqs.back().empty()) throw Error(where + " has no token ids");
      }
    } else if (!inputs.empty()) {
      seqs = api::tokenize_for_embedding(*load_tokenizer(o->model), inputs);
    }

    const auto t0 = std::chrono::steady_clock::now();
    int64_t tokens = 0;
    const Pooling pooling = api::parse_pooling(o->pooling, "--pooling");
    const size_t step = static_cast<size_t>(o->batch_size);
    for (size_t first = 0; first < seqs.size(); first += step) {  // printed batch by batch
      const std::vector<std::vector<int64_t>> batch(
          seqs.begin() + first, seqs.begin() + std::min(seqs.size(), first + step));
      const Tensor vectors = api::embed(*model, batch, pooling, o->normalize, o->batch_size);
      const int64_t h = vectors.dim(1);
      for (size_t i = 0; i < batch.size(); ++i) {
        const int64_t n = static_cast<int64_t>(batch[i].size());
        tokens += n;
        const float* v = vectors.data<float>() + static_cast<int64_t>(i) * h;
        std::string line = "{\"index\": " + std::to_string(first + i) +
                           ", \"tokens\": " + std::to_string(n) + ", \"embedding\": [";
        for (int64_t j = 0; j < h; ++j) line += (j ? ", " : "") + format_float(v[j]);
        line += "]}\n";
        std::cout << line;
      }
      std::cout.flush();
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    char buf[160];
    std::snprintf(buf, sizeof buf, "tessera embed: %zu inputs, %lld tokens, %.1f ms\n", seqs.size(),
                  static_cast<long long>(tokens), ms);
    std::cerr << buf;
    return 0;
  };
}

}  // namespace tessera::cli
