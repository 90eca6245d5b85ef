// tessera quantize: a model directory with its GEMM weights stored as bf16 or int8
// (models/quantize.h; docs/quantized-models.md).
#include <iostream>

#include "models/quantize.h"
#include "tools/cli.h"

namespace tessera::cli {

Action add_quantize_command(CLI::App& app) {
  struct Options {
    std::string model, out;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "quantize",
      "Write a model directory whose GEMM weights are stored as --dtype bf16 or int8 (loaded "
      "later as they are, bit-identical to converting at load)");
  cmd->add_option("--model", o->model, "Model directory to read (f32, f16 or bf16 weights)")
      ->required();
  cmd->add_option("--out", o->out, "Model directory to write (must not exist, or be empty)")
      ->required();
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  return [o] {
    setup_threads(o->threads);
    const auto type = models::parse_weight_dtype(weight_dtype(), "--dtype");
    if (!type || *type == kernels::WeightType::f32)
      throw Error("tessera quantize needs --dtype bf16 or --dtype int8");
    const auto r = models::quantize_model_dir(o->model, o->out, *type);
    std::cout << "quantize: " << r.converted.size() << " GEMM weights stored as "
              << kernels::weight_type_name(*type) << ", " << r.unchanged.size()
              << " kept as stored (transformed at load), " << r.tensors << " tensors in all; "
              << r.bytes_in << " -> " << r.bytes_out << " weight bytes; wrote " << o->out << "\n";
    for (const auto& n : r.unchanged)
      log_verbose("kept as stored: '" + n + "' (the model transforms it before its GEMM)");
    return 0;
  };
}

}  // namespace tessera::cli
