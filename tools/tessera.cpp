// `tessera`: the command line. Each subcommand is in tools/cmd_<name>.cpp.
// Bad input of any kind prints one line on stderr and exits with code 2.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/graph/passes/passes.h"
#include "kernels/kernels.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {
bool g_verbose = false;
std::string g_dtype;
}  // namespace

void set_weight_dtype(const std::string& value) {
  models::parse_weight_dtype(value, "--dtype");  // an unknown value: one line naming the choices
  g_dtype = value;
}
const std::string& weight_dtype() {
  return g_dtype;
}

std::string dtype_of(const models::Model& m) {
  return kernels::weight_type_name(models::weight_type(m));
}

bool verbose() {
  return g_verbose;
}
void set_verbose(bool on) {
  g_verbose = on;
}

void log_verbose(const std::string& msg) {
  if (g_verbose) std::cerr << "tessera: " << msg << '\n';
}

void setup_threads(int threads) {
  if (threads < 0) throw Error("--threads must be at least 1");
  if (threads > 0) kernels::set_num_threads(threads);
  log_verbose(std::string("ISA ") + kernels::isa_name(kernels::active_isa()) +
              (kernels::isa_from_environment() ? " (set by TESSERA_ISA)" : "") + ", " +
              std::to_string(kernels::num_threads()) + " threads");
}

std::vector<int64_t> parse_token_ids(const std::string& text, const std::string& where,
                                     int64_t vocab) {
  std::vector<int64_t> ids;
  std::istringstream in(text);
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
      throw Error(where + ": '" + word +
                  "' is not a token id (token ids are space-separated non-negative integers)");
    if (vocab > 0 && id >= vocab)
      throw Error(where + ": token id " + word + " is out of range for the model's vocabulary of " +
                  std::to_string(vocab));
    ids.push_back(id);
  }
  return ids;
}

std::unique_ptr<models::Model> load_any_model(const ModelDir& dir) {
  models::LoadOptions o;
  o.dtype = models::parse_weight_dtype(g_dtype, "--dtype");
  auto m = models::load_model(dir, o);
  log_verbose("weights: " + dtype_of(*m) + " GEMMs");
  return m;
}

CharTokenizer load_text_tokenizer(const std::string& model_dir,
                                  const models::TransformerModel& model, const char* command) {
  const std::string path = model_dir + "/tokenizer.json";
  if (!std::filesystem::exists(path))
    throw Error("model directory '" + model_dir + "' has no tokenizer.json to read text with");
  const auto& c = model.config();
  if (!c.embeddings || !c.has_encoder() || !c.has_decoder())
    throw Error(std::string(command) +
                " needs an encoder-decoder transformer with token embeddings");
  return CharTokenizer(path);
}

}  // namespace tessera::cli

namespace {
std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  CLI::App app{"Tessera: a SIMD-optimized CPU inference engine for transformer models"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose,
               "Log the ISA, threads, what is written and each graph pass's node counts");
  std::string passes_spec;
  std::string pass_list;
  for (const auto& n : passes::names()) pass_list += (pass_list.empty() ? "" : ", ") + n;
  app.add_option("--passes", passes_spec,
                 "Graph passes run at load: 'all' (default), 'none', a comma list of passes to "
                 "skip ('-fuse_qkv,-fuse_attention') or of the only passes to run "
                 "('fuse_epilogue,prepack'). Default from env TESSERA_PASSES. Passes, in order: " +
                     pass_list);

  std::string dtype_spec;
  app.add_option("--dtype", dtype_spec,
                 "GEMM weights of the model a command loads: f32, bf16 or int8 (per output "
                 "channel; activations stay f32). Default: what the model directory holds (f32, "
                 "or the type `tessera quantize` stored)");

  app.fallthrough();  // global options (--passes, --dtype, -v) also after the subcommand
  std::vector<std::pair<CLI::App*, cli::Action>> commands;
  auto add = [&](cli::Action (*adder)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    cli::Action action = adder(app);
    commands.emplace_back(app.get_subcommands({}).at(before), std::move(action));
  };
  add(cli::add_run_command);
  add(cli::add_inspect_command);
  add(cli::add_generate_command);
  add(cli::add_profile_command);
  add(cli::add_bench_command);
  add(cli::add_sysinfo_command);
  add(cli::add_attention_command);
  add(cli::add_embed_command);
  add(cli::add_tokenize_command);
  add(cli::add_serve_command);
  add(cli::add_quantize_command);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "tessera: error: " << one_line(e.what()) << " (see --help)\n";
    return cli::kBadInput;
  }
  cli::set_verbose(verbose);

  try {
    if (!passes_spec.empty()) passes::set_default(passes::parse(passes_spec));
    cli::set_weight_dtype(dtype_spec);
    passes::defaults();  // a bad TESSERA_PASSES is reported here, before any work
    if (verbose) passes::set_logger([](const std::string& m) { cli::log_verbose(m); });
    for (auto& [sub, action] : commands)
      if (sub->parsed()) return action();
  } catch (const Error& e) {
    std::cerr << "tessera: error: " << one_line(e.what()) << '\n';
    return cli::kBadInput;
  } catch (const std::bad_alloc&) {
    std::cerr << "tessera: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tessera: error: " << one_line(e.what()) << '\n';
    return cli::kBadInput;
  }
  return 0;
}
