// Shared pieces of the `tessera` command line. Each subcommand lives in its own file
// (tools/cmd_<name>.cpp) and registers itself with add_<name>_command(): it adds its options to
// the app and returns the function that runs it once the arguments are parsed.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/io/limits.h"
#include "engine/io/model_dir.h"
#include "engine/observe/profiler.h"
#include "engine/text/tokenizer.h"
#include "models/model.h"
#include "models/transformer.h"

namespace tessera::cli {

// Exit code for bad input of any kind (a one-line message is printed on stderr).
constexpr int kBadInput = 2;

// Runs the parsed subcommand; returns the process exit code.
using Action = std::function<int()>;

bool verbose();
void set_verbose(bool on);
// Prints "tessera: MSG" on stderr when --verbose is on.
void log_verbose(const std::string& msg);
// Applies --threads (0 = all cores) and logs the ISA and thread count.
void setup_threads(int threads);
// Space-separated token ids (for --ids and --decode): each a non-negative integer, below `vocab`
// when vocab > 0. Throws Error "<where>: '<word>' is not a token id ..." naming the bad word;
// `where` names the option and input (e.g. "--ids: prompt 0"). Empty input gives an empty list.
std::vector<int64_t> parse_token_ids(const std::string& text, const std::string& where,
                                     int64_t vocab = 0);
// The global --dtype (the GEMM weights' type; "" = auto: what the directory holds), checked.
void set_weight_dtype(const std::string& value);
const std::string& weight_dtype();
// Loads a model directory of any supported family (transformer, gpt2, bert, rnn_attention), its
// GEMM weights as --dtype says.
std::unique_ptr<models::Model> load_any_model(const ModelDir& dir);
// "int8" (or "f32", "bf16"): the type the model's GEMM weights run as, for headers and logs.
std::string dtype_of(const models::Model& m);
// The tokenizer.json of a model directory that maps text to an encoder-decoder token model;
// throws Error naming `command` if the model or its directory cannot take text.
CharTokenizer load_text_tokenizer(const std::string& model_dir,
                                  const models::TransformerModel& model, const char* command);

Action add_run_command(CLI::App& app);
Action add_inspect_command(CLI::App& app);
Action add_generate_command(CLI::App& app);
Action add_profile_command(CLI::App& app);
Action add_bench_command(CLI::App& app);
Action add_sysinfo_command(CLI::App& app);
Action add_embed_command(CLI::App& app);
Action add_tokenize_command(CLI::App& app);
Action add_serve_command(CLI::App& app);
Action add_quantize_command(CLI::App& app);

// TESSERA_PROFILE=path: a tracing profiler for any run/generate (null when the variable is not
// set), and writing its Chrome trace to that path at the end (nothing when p is null).
std::unique_ptr<Profiler> env_profiler();
void write_env_trace(const Profiler* p);
Action add_attention_command(CLI::App& app);

}  // namespace tessera::cli
