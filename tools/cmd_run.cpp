// tessera run / inspect: one forward pass with named tensors; a model directory's contents.
#include <algorithm>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "engine/io/safetensors.h"
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
    // The activations of this batch must fit in memory: sized from the input shapes alone
    // (before the model reads any input); other problems are left to the model's checks.
    try {
      model->forward_session().plan(inputs);
    } catch (const LimitError&) {
      throw;
    } catch (const Error&) {
    }
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

namespace {

// Inputs of the given batch and sequence length for every required input of the forward graph
// (ids I64 [B, S], float tensors F32 [B, S, d_model]): what the shapes and the plan need. Shapes
// without storage: the graph is printed, never run, and the plan checks the activations fit.
TensorMap shape_inputs(const models::Model& m, int64_t batch, int64_t seq) {
  TensorMap in;
  const Graph& g = m.forward_graph();
  for (ValueId v : g.inputs()) {
    const Value& val = g.values()[v];
    if (val.optional) continue;
    const bool ids = val.name.size() > 4 && val.name.compare(val.name.size() - 4, 4, "_ids") == 0;
    if (ids) {
      in[val.name] = Tensor::view(DType::i64, {batch, seq}, nullptr, nullptr);
    } else {
      const auto* t = m.transformer();
      if (!t)
        throw Error("inspect --graph: cannot make a shape for input '" + val.name + "' of a " +
                    m.family() + " model");
      in[val.name] = Tensor::view(DType::f32, {batch, seq, t->config().d_model}, nullptr, nullptr);
    }
  }
  return in;
}

std::string dot_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

const char* act_name(kernels::Activation a) {
  switch (a) {
    case kernels::Activation::none:
      return "none";
    case kernels::Activation::relu:
      return "relu";
    case kernels::Activation::gelu_erf:
      return "gelu_erf";
    case kernels::Activation::gelu_tanh:
      return "gelu_tanh";
  }
  return "?";
}

// What a node's attributes fuse: "(bias, gelu_erf, residual)", "(12 heads x 64, q@0 k@768 ...)".
std::string details(const Graph& g, const Node& n) {
  std::vector<std::string> d;
  const auto& a = n.attrs;
  switch (n.op) {
    case Op::linear: {
      const auto& w = g.weights().at(a.weight);
      d.push_back(w.packed.empty()
                      ? std::string(dtype_name(w.tensor.dtype())) + " weight"
                      : std::string("packed ") + kernels::weight_type_name(w.packed.type()));
      if (a.bias >= 0) d.push_back("bias");
      if (a.act != kernels::Activation::none) d.push_back(act_name(a.act));
      if (n.inputs.size() > 1) d.push_back("residual");
      break;
    }
    case Op::attention:
    case Op::attention_scores:
    case Op::attention_context:
      d.push_back(std::to_string(a.heads) + " heads x " + std::to_string(a.head_dim));
      d.push_back("q@" + std::to_string(a.q_col) + " k@" + std::to_string(a.k_col) + " v@" +
                  std::to_string(a.v_col));
      if (a.causal) d.push_back("causal");
      if (a.cache_slot >= 0) d.push_back("kv cache " + std::to_string(a.cache_slot));
      break;
    case Op::layernorm:
      if (n.inputs.size() > 1) d.push_back("+ residual");
      if (n.outputs.size() > 1) d.push_back("stores the sum");
      break;
    case Op::embedding:
      if (a.scale != 1.0f) d.push_back("scale " + std::to_string(a.scale));
      if (a.pos_table >= 0) d.push_back("+ positions");
      break;
    case Op::activation:
      d.push_back(act_name(a.act));
      break;
    default:
      break;
  }
  std::string s;
  for (const auto& x : d) s += (s.empty() ? "  (" : ", ") + x;
  return s.empty() ? s : s + ")";
}

void print_graph(const models::Model& m, int64_t batch, int64_t seq, const std::string& dot_path) {
  const Graph& g = m.forward_graph();
  const TensorMap in = shape_inputs(m, batch, seq);
  const std::vector<Shape> shapes = infer_shapes(g, in);
  const MemoryPlan& plan = m.forward_session().plan(in);
  auto desc = [&](ValueId v) {
    if (v == kNone) return std::string("-");
    const Value& val = g.values()[v];
    const bool absent = val.is_input && !in.count(val.name);
    return val.name + (absent ? " (absent)" : " " + shape_str(shapes[v]));
  };
  for (const auto& s : m.pass_stats())
    std::cout << "pass " << s.pass << ": " << s.nodes_before << " -> " << s.nodes_after
              << " nodes (" << s.rewrites << " rewrites)\n";
  std::cout << "forward graph (batch " << batch << ", seq " << seq << "): " << g.nodes().size()
            << " nodes\n";
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const Node& n = g.nodes()[i];
    std::cout << "  #" << i << "  " << n.name << "  " << op_name(n.op) << details(g, n)
              << "\n      in:  ";
    for (size_t j = 0; j < n.inputs.size(); ++j) std::cout << (j ? ", " : "") << desc(n.inputs[j]);
    std::cout << "\n      out: ";
    for (size_t j = 0; j < n.outputs.size(); ++j) {
      const ValueId v = n.outputs[j];
      std::cout << (j ? ", " : "") << desc(v);
      if (plan.offset[v] >= 0) std::cout << " @" << plan.offset[v];
    }
    std::cout << "\n";
  }
  std::cout << "arena bytes: " << plan.arena_bytes << " (" << std::fixed << std::setprecision(2)
            << static_cast<double>(plan.arena_bytes) / (1 << 20) << " MiB)\n";
  std::cout << "sum of intermediate values: " << plan.total_bytes << " bytes ("
            << static_cast<double>(plan.total_bytes) / (1 << 20) << " MiB), " << plan.inplace_count
            << " written in place\n";
  if (dot_path.empty()) return;
  std::ofstream dot(dot_path);
  if (!dot) throw Error("cannot write --dot file '" + dot_path + "'");
  dot << "digraph tessera {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n";
  for (ValueId v : g.inputs())
    dot << "  v" << v << " [shape=ellipse, label=\"" << dot_escape(desc(v)) << "\"];\n";
  std::vector<int> producer(g.values().size(), -1);
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const Node& n = g.nodes()[i];
    dot << "  n" << i << " [shape=box, label=\"" << dot_escape(n.name) << "\\n"
        << op_name(n.op) << "\"];\n";
    for (ValueId v : n.outputs) producer[v] = static_cast<int>(i);
  }
  for (size_t i = 0; i < g.nodes().size(); ++i)
    for (ValueId v : g.nodes()[i].inputs) {
      if (v == kNone) continue;
      const Value& val = g.values()[v];
      if (val.is_input && !in.count(val.name)) continue;
      dot << "  "
          << (producer[v] >= 0 ? "n" + std::to_string(producer[v]) : "v" + std::to_string(v))
          << " -> n" << i << " [label=\"" << shape_str(shapes[v]) << "\"];\n";
    }
  for (ValueId v : g.outputs()) {
    dot << "  o" << v << " [shape=ellipse, label=\"" << dot_escape(desc(v)) << "\"];\n";
    if (producer[v] >= 0) dot << "  n" << producer[v] << " -> o" << v << ";\n";
  }
  dot << "}\n";
  if (!dot) throw Error("cannot write --dot file '" + dot_path + "'");
}

}  // namespace

Action add_inspect_command(CLI::App& app) {
  struct Options {
    std::string model, dot;
    bool graph = false;
    int64_t batch = 1, seq = 16;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("inspect", "Print a model directory's config and tensors");
  cmd->add_option("--model", o->model, "Model directory")->required();
  cmd->add_flag("--graph", o->graph,
                "Also print the forward graph after the passes (see --passes): nodes, operators, "
                "inputs, outputs, shapes and arena offsets, and the arena size");
  cmd->add_option("--batch", o->batch, "Batch size for --graph shapes (default 1)");
  cmd->add_option("--seq", o->seq, "Sequence length for --graph shapes (default 16)");
  cmd->add_option("--dot", o->dot, "With --graph: also write the graph as Graphviz to this file");
  return [o] {
    if (o->batch < 1 || o->seq < 1) throw Error("--batch and --seq must be at least 1");
    if (!o->dot.empty() && !o->graph) throw Error("--dot needs --graph");
    ModelDir dir(o->model);
    // The model as --dtype loads it: which tensors its GEMMs run in which type. A directory that
    // does not load is still listed (compute "?"), then its error is the command's.
    std::unique_ptr<models::Model> m;
    std::string load_error;
    try {
      m = load_any_model(dir);
    } catch (const Error& e) {
      load_error = e.what();
    }
    const auto uses = m ? models::tensor_uses(m->forward_graph().weights())
                        : std::map<std::string, models::TensorUse>{};
    const auto stored = models::stored_weight_dtype(dir);
    std::cout << "model directory: " << dir.dir() << "\n";
    std::cout << "weights: " << (m ? dtype_of(*m) : std::string("?"))
              << " GEMMs (activations f32); stored: "
              << (stored ? std::string(kernels::weight_type_name(*stored)) +
                               " (config.json tessera_dtype, by tessera quantize)"
                         : std::string("as the checkpoint holds them"))
              << "\n";
    std::cout << "config.json:\n" << dir.config().dump(2) << "\n";
    std::cout << "tensors:\n";
    int64_t params = 0;
    uint64_t bytes = 0;
    size_t width = 4;
    for (const auto& n : dir.names()) width = std::max(width, n.size());
    std::cout << "  " << std::left << std::setw(static_cast<int>(width)) << "name"
              << "  stored  compute  shape\n";
    for (const auto& n : dir.names()) {
      const int64_t numel = shape_numel(dir.shape(n));
      params += numel;
      bytes += static_cast<uint64_t>(numel) * dtype_size(dir.dtype(n));
      auto u = uses.find(n);
      const std::string compute = !m ? "?" : u != uses.end() ? u->second.compute : "f32";
      std::cout << "  " << std::left << std::setw(static_cast<int>(width)) << n << "  "
                << std::setw(6) << dtype_name(dir.dtype(n)) << "  " << std::setw(7) << compute
                << "  " << shape_str(dir.shape(n)) << "\n";
    }
    std::cout << "tensors: " << dir.names().size() << "\n";
    std::cout << "parameters: " << params << "\n";
    std::cout << "tensor bytes: " << bytes << " (" << std::fixed << std::setprecision(2)
              << static_cast<double>(bytes) / (1 << 20) << " MiB)\n";
    std::cout << "file bytes: " << dir.weight_file_bytes() << "\n";
    if (!m) throw Error(load_error);
    if (o->graph) print_graph(*m, o->batch, o->seq, o->dot);
    return 0;
  };
}

}  // namespace tessera::cli
