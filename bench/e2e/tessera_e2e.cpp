// tessera_e2e: the Tessera side of the end-to-end comparisons in bench/e2e (see README.md there).
//
// A long-lived worker driven by the Python coordinator (bench/e2e/e2e_common.py) over a line
// protocol, like its PyTorch and ONNX Runtime peers (torch_worker.py, ort_worker.js), so that the
// coordinator can interleave the engines' repetitions one by one:
//
//   tessera_e2e --spec SPEC.json --threads N [--dtype f32|bf16|int8]
//   stdout, once loaded:  {"ready": true, "load_s": ..., "threads": N, "isa": "...", "dtype": D}
//   stdin:  {"cmd": "run", "case": I [, "out": PATH]}   ->  stdout: one JSON line
//           {"cmd": "quit"}
//
// SPEC.json (written by the coordinator): {"kind": K, "model_dir": DIR, "cases": [...]}, each
// case {"name": ..., "inputs": {NAME: {"path": raw file, "dtype": "f32"|"i64", "shape": [...]}},
// "steps": N (generation)}. Kinds:
//   encoder    transformer family without embeddings, input `src` [B,S,E]; one forward pass;
//              reply {"total_s"}; with "out", `output` is written there as raw f32.
//   seq2seq    transformer family with embeddings, input `src_ids` [1,S]; encode, then exactly
//              `steps` greedy decode steps from bos (no eos stop); reply {"total_s", "prefill_s",
//              "decode_s", "tokens"}.
//   causal_lm  gpt2 family: a CausalLM session; start() on `input_ids` [1,P] + argmax (prefill_s),
//              then `steps` greedy step() calls (decode_s); reply {"prefill_s", "decode_s",
//              "total_s", "tokens" (steps + 1)}; with "out", the prefill's last logits as raw f32.
//   bert       bert family: one forward pass of `input_ids`, `attention_mask`, `token_type_ids`
//              [B,S]; reply {"total_s"}; with "out", `last_hidden_state` as raw f32.
// The generation loops are models::greedy_fixed_steps (models/workload.h), which `tessera bench
// --generate` runs too; what stays here is what the CLI does not do: this line protocol (so the
// coordinator interleaves engines rep by rep with one load), inputs given as raw files, and the
// outputs (tokens, logits, hidden states) written back for the coordinator's comparison.
// A failure is answered {"error": "..."} (the coordinator then reports Tessera as n/a).
// --dtype (default f32): the precision of the model's weights and GEMMs; the coordinator's
// --tessera-dtypes starts one worker per dtype (engines tessera, tessera-bf16, tessera-int8). Only
// f32 is wired to the engine so far: bf16 and int8 are answered {"ready": false, "error": ...}
// (see Driver's constructor, where the model is loaded).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/io/error.h"
#include "engine/io/model_dir.h"
#include "kernels/kernels.h"
#include "models/model.h"
#include "models/workload.h"

namespace {

using tessera::DType;
using tessera::Error;
using tessera::Tensor;
using tessera::TensorMap;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A raw little-endian tensor file written by the coordinator (numpy tofile()).
Tensor read_raw(const json& desc) {
  const std::string path = desc.at("path").get<std::string>();
  const std::string dt = desc.at("dtype").get<std::string>();
  DType dtype;
  if (dt == "f32")
    dtype = DType::f32;
  else if (dt == "i64")
    dtype = DType::i64;
  else
    throw Error("input '" + path + "': dtype '" + dt + "' is not supported (f32, i64)");
  Tensor t(dtype, desc.at("shape").get<tessera::Shape>(), false);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open input '" + path + "'");
  f.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  if (static_cast<size_t>(f.gcount()) != t.nbytes())
    throw Error("input '" + path + "': expected " + std::to_string(t.nbytes()) + " bytes for " +
                tessera::shape_str(t.shape()));
  return t;
}

void write_raw(const Tensor& t, const std::string& path) {
  const Tensor f = t.dtype() == DType::f32 ? t : t.to_f32();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(f.raw()), static_cast<std::streamsize>(f.nbytes()));
  if (!out) throw Error("cannot write output '" + path + "'");
}

struct Case {
  std::string name;
  TensorMap inputs;
  int64_t steps = 0;
};

// One comparison's Tessera side: one model of the kind's family, and the cases' inputs.
class Driver {
 public:
  Driver(const json& spec, std::string dtype)
      : kind_(spec.at("kind").get<std::string>()), dtype_(std::move(dtype)) {
    for (const auto& c : spec.at("cases")) {
      Case k;
      k.name = c.at("name").get<std::string>();
      for (const auto& [name, desc] : c.at("inputs").items()) k.inputs[name] = read_raw(desc);
      k.steps = c.value("steps", int64_t{0});
      cases_.push_back(std::move(k));
    }
    const char* family = kind_ == "encoder" || kind_ == "seq2seq" ? "transformer"
                         : kind_ == "causal_lm"                   ? "gpt2"
                         : kind_ == "bert"                        ? "bert"
                                                                  : nullptr;
    if (family == nullptr)
      throw Error("spec: unknown kind '" + kind_ + "' (encoder, seq2seq, causal_lm, bert)");
    dir_ = std::make_unique<tessera::ModelDir>(spec.at("model_dir").get<std::string>());
    // The GEMM weights packed as dtype_ (f32, bf16, int8) at load, as `tessera --dtype` does.
    tessera::models::LoadOptions load;
    load.dtype = tessera::models::parse_weight_dtype(dtype_);
    model_ = tessera::models::load_model(*dir_, load);
    if (std::string(model_->family()) != family)
      throw Error("spec kind " + kind_ + " needs a " + family + " model, '" + dir_->config_path() +
                  "' is " + model_->family());
  }

  json run(size_t index, const std::string& out) const {
    if (index >= cases_.size())
      throw Error("case " + std::to_string(index) + " out of range (" +
                  std::to_string(cases_.size()) + " cases)");
    const Case& c = cases_[index];
    if (kind_ == "encoder") return run_forward(c, "output", out);
    if (kind_ == "seq2seq") return run_generate(c, "src_ids", "");
    if (kind_ == "causal_lm") return run_generate(c, "input_ids", out);
    return run_forward(c, "last_hidden_state", out);
  }

 private:
  // encoder (nn.TransformerEncoder stack), bert: one forward pass through `tessera run`'s entry
  // point; with `out`, the output `output_name` written there.
  json run_forward(const Case& c, const char* output_name, const std::string& out) const {
    const auto t0 = Clock::now();
    const TensorMap result = model_->run(c.inputs);
    const double total = since(t0);
    if (!out.empty()) write_raw(result.at(output_name), out);
    return {{"total_s", total}};
  }

  // seq2seq: encode, then exactly `steps` greedy decode steps from bos. causal_lm: a generation
  // session (its KV cache sized for prompt + steps, allocated inside the timed prefill as the
  // peers allocate theirs) runs the prompt and takes the argmax of its last logits, then `steps`
  // greedy steps of one token; with `out`, the prefill's last logits written there. eos is not
  // checked, so every engine generates the same number of tokens. Batch 1.
  json run_generate(const Case& c, const char* input, const std::string& out) const {
    const Tensor& ids = c.inputs.at(input);
    if (ids.rank() != 2 || ids.dim(0) != 1) throw Error(kind_ + ": batch must be 1");
    const auto g = tessera::models::greedy_fixed_steps(*model_, ids, c.steps);
    if (!out.empty()) write_raw(g.first_logits, out);
    return {{"total_s", g.total_s},
            {"prefill_s", g.prefill_s},
            {"decode_s", g.total_s - g.prefill_s},
            {"tokens", g.tokens.at(0)}};
  }

  std::string kind_;
  std::string dtype_;
  std::vector<Case> cases_;
  std::unique_ptr<tessera::ModelDir> dir_;
  std::unique_ptr<tessera::models::Model> model_;
};

int usage() {
  std::cerr << "usage: tessera_e2e --spec SPEC.json --threads N [--dtype f32|bf16|int8]  (driven "
               "by bench/e2e/*.py)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec_path;
  int threads = 0;
  std::string dtype = "f32";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--spec" && i + 1 < argc)
      spec_path = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (a == "--dtype" && i + 1 < argc)
      dtype = argv[++i];
    else
      return usage();
  }
  if (spec_path.empty() || threads < 1) return usage();
  if (dtype != "f32" && dtype != "bf16" && dtype != "int8") {
    std::cerr << "tessera_e2e: --dtype '" << dtype << "' is not one of f32, bf16, int8\n";
    return usage();
  }
  std::unique_ptr<Driver> driver;
  try {
    tessera::kernels::set_num_threads(threads);
    std::ifstream f(spec_path);
    if (!f) throw Error("cannot open spec '" + spec_path + "'");
    const json spec = json::parse(f);
    const auto t0 = Clock::now();
    driver = std::make_unique<Driver>(spec, dtype);
    std::cout << json{{"ready", true},
                      {"load_s", since(t0)},
                      {"threads", tessera::kernels::num_threads()},
                      {"isa", tessera::kernels::isa_name(tessera::kernels::active_isa())},
                      {"dtype", dtype}}
                     .dump()
              << std::endl;
  } catch (const std::exception& e) {
    std::cout << json{{"ready", false}, {"error", e.what()}}.dump() << std::endl;
    return 2;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    json reply;
    try {
      const json cmd = json::parse(line);
      const std::string what = cmd.at("cmd").get<std::string>();
      if (what == "quit") break;
      if (what != "run") throw Error("unknown command '" + what + "' (run, quit)");
      reply = driver->run(cmd.at("case").get<size_t>(), cmd.value("out", std::string()));
    } catch (const std::exception& e) {
      reply = {{"error", e.what()}};
    }
    std::cout << reply.dump() << std::endl;
  }
  return 0;
}
