// tessera run / inspect: one forward pass with named tensors; a model directory's contents.
#include <algorithm>
#include <iomanip>
#include <iostream>

#include "engine/safetensors.h"
#include "tools/cli.h"

namespace tessera::cli {

Action add_run_command(CLI::App& app) {
  struct Options {
    std::string model, inputs, outputs;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("run", "One forward pass: named tensors in, named tensors out");
  cmd->add_option("--model", o->model, "Model directory (config.json + model.safetensors)")
      ->required();
  cmd->add_option("--inputs", o->inputs, "Input tensors (.safetensors)")->required();
  cmd->add_option("--outputs", o->outputs, "Where to write the output tensors (.safetensors)")
      ->required();
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  return [o] {
    setup_threads(o->threads);
    ModelDir dir(o->model);
    auto model = load_any_model(dir);
    SafetensorsFile in_file(o->inputs);
    TensorMap inputs;
    for (const auto& name : in_file.names()) inputs[name] = in_file.get(name);
    auto profiler = env_profiler();  // TESSERA_PROFILE=path: trace every node
    TensorMap outputs = model->run(inputs, profiler.get());
    write_env_trace(profiler.get());
    std::vector<std::pair<std::string, Tensor>> list(outputs.begin(), outputs.end());
    write_safetensors(o->outputs, list);
    for (const auto& [name, t] : list)
      log_verbose("wrote '" + name + "' " + dtype_name(t.dtype()) + " " + shape_str(t.shape()));
    return 0;
  };
}

Action add_inspect_command(CLI::App& app) {
  struct Options {
    std::string model;
    bool graph = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("inspect", "Print a model directory's config and tensors");
  cmd->add_option("--model", o->model, "Model directory")->required();
  cmd->add_flag("--graph", o->graph, "Also print the forward graph, one node per line");
  return [o] {
    ModelDir dir(o->model);
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
    if (o->graph) {
      auto m = load_model(dir);
      const Graph& g = m->forward_graph();
      std::cout << "forward graph: " << g.nodes().size() << " nodes\n" << g.to_string();
    }
    return 0;
  };
}

}  // namespace tessera::cli
