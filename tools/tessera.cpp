// `tessera`: the command line.
//   tessera run       one forward pass, named tensors in and out (DESIGN.md's contract)
//   tessera inspect   a model directory's config and tensors
//   tessera generate  greedy decoding of text with a demo (character-level) model
// Bad input of any kind prints one line on stderr and exits with code 2.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "engine/model_dir.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"
#include "kernels/kernels.h"
#include "models/transformer.h"

namespace {

using namespace tessera;

constexpr int kBadInput = 2;

bool g_verbose = false;

void log_verbose(const std::string& msg) {
  if (g_verbose) std::cerr << "tessera: " << msg << '\n';
}

void setup_threads(int threads) {
  if (threads < 0) throw Error("--threads must be at least 1");
  if (threads > 0) kernels::set_num_threads(threads);
  log_verbose(std::string("ISA ") + kernels::isa_name(kernels::active_isa()) + ", " +
              std::to_string(kernels::num_threads()) + " threads");
}

std::unique_ptr<models::TransformerModel> load_model(const ModelDir& dir) {
  const std::string type = dir.get_string("model_type", "");
  if (type != "transformer")
    throw Error("'" + dir.config_path() + "': model_type '" + type +
                "' is not supported (supported: transformer)");
  return std::make_unique<models::TransformerModel>(dir);
}

int cmd_run(const std::string& model_dir, const std::string& inputs_path,
            const std::string& outputs_path, int threads) {
  setup_threads(threads);
  ModelDir dir(model_dir);
  auto model = load_model(dir);
  SafetensorsFile in_file(inputs_path);
  TensorMap inputs;
  for (const auto& name : in_file.names()) inputs[name] = in_file.get(name);
  TensorMap outputs = model->run(inputs);
  std::vector<std::pair<std::string, Tensor>> list(outputs.begin(), outputs.end());
  write_safetensors(outputs_path, list);
  for (const auto& [name, t] : list)
    log_verbose("wrote '" + name + "' " + dtype_name(t.dtype()) + " " + shape_str(t.shape()));
  return 0;
}

int cmd_inspect(const std::string& model_dir) {
  ModelDir dir(model_dir);
  std::cout << "model directory: " << dir.dir() << "\n";
  std::cout << "config.json:\n" << dir.config().dump(2) << "\n";
  std::cout << "tensors:\n";
  int64_t params = 0;
  uint64_t bytes = 0;
  size_t width = 4;
  for (const auto& n : dir.names()) width = std::max(width, n.size());
  for (const auto& n : dir.names()) {
    const int64_t numel = shape_numel(dir.shape(n));
    params += numel;
    bytes += static_cast<uint64_t>(numel) * dtype_size(dir.dtype(n));
    std::cout << "  " << std::left << std::setw(static_cast<int>(width)) << n << "  "
              << std::setw(5) << dtype_name(dir.dtype(n)) << "  " << shape_str(dir.shape(n))
              << "\n";
  }
  std::cout << "tensors: " << dir.names().size() << "\n";
  std::cout << "parameters: " << params << "\n";
  std::cout << "tensor bytes: " << bytes << " (" << std::fixed << std::setprecision(2)
            << static_cast<double>(bytes) / (1 << 20) << " MiB)\n";
  std::cout << "file bytes: " << dir.weight_file_bytes() << "\n";
  return 0;
}

int cmd_generate(const std::string& model_dir, std::vector<std::string> texts,
                 int64_t max_new_tokens, int64_t batch_size, int threads) {
  setup_threads(threads);
  ModelDir dir(model_dir);
  auto model = load_model(dir);
  const std::string tok_path = model_dir + "/tokenizer.json";
  if (!std::filesystem::exists(tok_path))
    throw Error("model directory '" + model_dir + "' has no tokenizer.json to read text with");
  CharTokenizer tok(tok_path);
  const auto& c = model->config();
  if (!c.embeddings || !c.has_encoder() || !c.has_decoder())
    throw Error("generate needs an encoder-decoder transformer with token embeddings");
  if (max_new_tokens <= 0) max_new_tokens = std::min<int64_t>(64, c.max_position);
  if (texts.empty()) {
    std::string line;
    while (std::getline(std::cin, line)) texts.push_back(line);
  }
  if (batch_size < 1) throw Error("--batch-size must be at least 1");
  for (size_t begin = 0; begin < texts.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(texts.size(), begin + static_cast<size_t>(batch_size));
    std::vector<std::vector<int64_t>> sources;
    for (size_t i = begin; i < end; ++i) {
      auto ids = tok.encode(texts[i]);
      ids.push_back(c.eos_id);
      sources.push_back(std::move(ids));
    }
    for (const auto& out : model->greedy(sources, max_new_tokens))
      std::cout << tok.decode(out) << '\n';
    std::cout.flush();
  }
  return 0;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tessera: a SIMD-optimized CPU inference engine for transformer models"};
  app.require_subcommand(1);
  app.add_flag("-v,--verbose", g_verbose, "Log the ISA, threads and what is written");

  std::string model, inputs, outputs;
  int threads = 0;
  int64_t max_new = 0, batch_size = 64;
  std::vector<std::string> texts;

  auto* run = app.add_subcommand("run", "One forward pass: named tensors in, named tensors out");
  run->add_option("--model", model, "Model directory (config.json + model.safetensors)")
      ->required();
  run->add_option("--inputs", inputs, "Input tensors (.safetensors)")->required();
  run->add_option("--outputs", outputs, "Where to write the output tensors (.safetensors)")
      ->required();
  run->add_option("--threads", threads, "Threads (default: all cores)");

  auto* inspect = app.add_subcommand("inspect", "Print a model directory's config and tensors");
  inspect->add_option("--model", model, "Model directory")->required();

  auto* gen = app.add_subcommand("generate", "Greedy decoding of texts (one result per line)");
  gen->add_option("--model", model, "Model directory with tokenizer.json")->required();
  gen->add_option("--max-new-tokens", max_new, "Most tokens generated per input (default 64)");
  gen->add_option("--batch-size", batch_size, "Inputs decoded together (default 64)");
  gen->add_option("--threads", threads, "Threads (default: all cores)");
  gen->add_option("texts", texts, "Input texts (default: one per line from stdin)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "tessera: error: " << one_line(e.what()) << " (see --help)\n";
    return kBadInput;
  }

  try {
    if (*run) return cmd_run(model, inputs, outputs, threads);
    if (*inspect) return cmd_inspect(model);
    if (*gen) return cmd_generate(model, texts, max_new, batch_size, threads);
  } catch (const Error& e) {
    std::cerr << "tessera: error: " << one_line(e.what()) << '\n';
    return kBadInput;
  } catch (const std::bad_alloc&) {
    std::cerr << "tessera: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tessera: error: " << one_line(e.what()) << '\n';
    return kBadInput;
  }
  return 0;
}
