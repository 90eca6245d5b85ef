// tessera_e2e: the Tessera side of the end-to-end comparisons in bench/e2e (see README.md there).
//
// A long-lived worker driven by the Python coordinator (bench/e2e/e2e_common.py) over a line
// protocol, like its PyTorch and ONNX Runtime peers (torch_worker.py, ort_worker.js), so that the
// coordinator can interleave the engines' repetitions one by one:
//
//   tessera_e2e --spec SPEC.json --threads N
//   stdout, once loaded:  {"ready": true, "load_s": ..., "threads": N, "isa": "..."}
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
// (causal_lm and bert need the gpt2/bert families; without them the worker answers an error.)
// A failure is answered {"error": "..."} (the coordinator then reports Tessera as n/a).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/io/error.h"
#include "engine/graph/executor.h"
#include "engine/io/model_dir.h"
#include "kernels/kernels.h"
#include "models/transformer.h"

// The gpt2 and bert families (branch `models`): CMakeLists.txt defines TESSERA_E2E_HF_FAMILIES=1
// when their headers exist, so this file builds both before and after that branch is merged (a
// compile definition rather than __has_include, which ccache's direct mode cannot see change).
#ifndef TESSERA_E2E_HF_FAMILIES
#define TESSERA_E2E_HF_FAMILIES 0
#endif
#if TESSERA_E2E_HF_FAMILIES
#include "models/bert.h"
#include "models/gpt2.h"
#include "models/model.h"
#endif

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

int64_t argmax_row(const float* row, int64_t n) {
  return std::max_element(row, row + n) - row;
}

struct Case {
  std::string name;
  TensorMap inputs;
  int64_t steps = 0;
};

// One comparison's Tessera side. Each kind is one function; the gpt2 and bert families are not in
// this build yet, so their functions answer with an error the coordinator reports as n/a.
class Driver {
 public:
  explicit Driver(const json& spec) : kind_(spec.at("kind").get<std::string>()) {
    for (const auto& c : spec.at("cases")) {
      Case k;
      k.name = c.at("name").get<std::string>();
      for (const auto& [name, desc] : c.at("inputs").items()) k.inputs[name] = read_raw(desc);
      k.steps = c.value("steps", int64_t{0});
      cases_.push_back(std::move(k));
    }
    const std::string dir = spec.at("model_dir").get<std::string>();
    if (kind_ == "encoder" || kind_ == "seq2seq") {
      dir_ = std::make_unique<tessera::ModelDir>(dir);
      transformer_ = std::make_unique<tessera::models::TransformerModel>(*dir_);
    } else if (kind_ == "causal_lm" || kind_ == "bert") {
      dir_ = std::make_unique<tessera::ModelDir>(dir);
      load_hf_family();
    } else {
      throw Error("spec: unknown kind '" + kind_ + "' (encoder, seq2seq, causal_lm, bert)");
    }
  }

  json run(size_t index, const std::string& out) const {
    if (index >= cases_.size())
      throw Error("case " + std::to_string(index) + " out of range (" +
                  std::to_string(cases_.size()) + " cases)");
    const Case& c = cases_[index];
    if (kind_ == "encoder") return run_encoder(c, out);
    if (kind_ == "seq2seq") return run_seq2seq(c);
    if (kind_ == "causal_lm") return run_causal_lm(c, out);
    return run_bert(c, out);
  }

 private:
  // nn.TransformerEncoder stack: one forward pass through `tessera run`'s entry point.
  json run_encoder(const Case& c, const std::string& out) const {
    const auto t0 = Clock::now();
    const TensorMap result = transformer_->run(c.inputs);
    const double total = since(t0);
    if (!out.empty()) write_raw(result.at("output"), out);
    return {{"total_s", total}};
  }

  // Encoder once, then exactly `steps` greedy decode steps over the KV cache, starting from bos;
  // eos is not checked, so every engine generates the same number of tokens.
  json run_seq2seq(const Case& c) const {
    const auto& cfg = transformer_->config();
    const Tensor& src = c.inputs.at("src_ids");
    const int64_t batch = src.dim(0), s_len = src.dim(1);
    if (batch != 1) throw Error("seq2seq: batch must be 1");
    const auto t0 = Clock::now();
    Tensor padding(DType::u8, {batch, s_len});  // no padding
    const auto enc = transformer_->encode(src, padding);
    const double prefill = since(t0);
    tessera::KVCache cache;
    cache.reset(static_cast<int>(cfg.num_decoder_layers), batch, c.steps, cfg.d_model);
    Tensor ids(DType::i64, {batch, 1});
    ids.data<int64_t>()[0] = cfg.bos_id;
    std::vector<int64_t> tokens;
    tokens.reserve(static_cast<size_t>(c.steps));
    for (int64_t step = 0; step < c.steps; ++step) {
      const Tensor logits = transformer_->decode_step(enc, ids, cache, step);  // [1, 1, V]
      const int64_t next = argmax_row(logits.data<float>(), logits.dim(2));
      tokens.push_back(next);
      ids.data<int64_t>()[0] = next;
    }
    const double total = since(t0);
    return {{"total_s", total},
            {"prefill_s", prefill},
            {"decode_s", total - prefill},
            {"tokens", tokens}};
  }

  // ---- The Hugging Face families (gpt2, bert) -----------------------------------------------
#if TESSERA_E2E_HF_FAMILIES
  void load_hf_family() {
    hf_ = tessera::models::load_model(*dir_);
    if (kind_ == "causal_lm" && hf_->gpt2() == nullptr)
      throw Error("spec kind causal_lm needs a gpt2 model, '" + dir_->config_path() + "' is " +
                  hf_->family());
    if (kind_ == "bert" && hf_->bert() == nullptr)
      throw Error("spec kind bert needs a bert model, '" + dir_->config_path() + "' is " +
                  hf_->family());
  }

  // Prefill through a CausalLM session (its KV cache sized for prompt + steps, allocated inside
  // the timed prefill as the peers allocate theirs), then `steps` greedy steps of one token.
  json run_causal_lm(const Case& c, const std::string& out) const {
    const Tensor& ids = c.inputs.at("input_ids");  // [1, P]
    if (ids.dim(0) != 1) throw Error("causal_lm: batch must be 1");
    const std::vector<std::vector<int64_t>> prompt{
        std::vector<int64_t>(ids.data<int64_t>(), ids.data<int64_t>() + ids.dim(1))};
    const auto t0 = Clock::now();
    auto session = hf_->gpt2()->new_session(c.steps);
    const Tensor first = session->start(prompt);  // [1, V]
    const int64_t vocab = first.dim(1);
    int64_t next = argmax_row(first.data<float>(), vocab);
    const double prefill = since(t0);
    std::vector<int64_t> tokens{next};
    tokens.reserve(static_cast<size_t>(c.steps) + 1);
    for (int64_t step = 0; step < c.steps; ++step) {
      const Tensor logits = session->step({next});  // [1, V]
      next = argmax_row(logits.data<float>(), vocab);
      tokens.push_back(next);
    }
    const double total = since(t0);
    if (!out.empty()) write_raw(first, out);
    return {{"total_s", total},
            {"prefill_s", prefill},
            {"decode_s", total - prefill},
            {"tokens", tokens}};
  }

  json run_bert(const Case& c, const std::string& out) const {
    const auto t0 = Clock::now();
    const TensorMap result = hf_->run(c.inputs);
    const double total = since(t0);
    if (!out.empty()) write_raw(result.at("last_hidden_state"), out);
    return {{"total_s", total}};
  }

  std::unique_ptr<tessera::models::Model> hf_;
#else
  void load_hf_family() {
    throw Error("model_type '" + dir_->get_string("model_type", "") +
                "' is not in this build of Tessera (the gpt2/bert families are not merged yet)");
  }
  json run_causal_lm(const Case&, const std::string&) const {
    throw Error("gpt2 family not in this build");
  }
  json run_bert(const Case&, const std::string&) const {
    throw Error("bert family not in this build");
  }
#endif

  std::string kind_;
  std::vector<Case> cases_;
  std::unique_ptr<tessera::ModelDir> dir_;
  std::unique_ptr<tessera::models::TransformerModel> transformer_;
};

int usage() {
  std::cerr << "usage: tessera_e2e --spec SPEC.json --threads N  (driven by bench/e2e/*.py)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec_path;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--spec" && i + 1 < argc)
      spec_path = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else
      return usage();
  }
  if (spec_path.empty() || threads < 1) return usage();
  std::unique_ptr<Driver> driver;
  try {
    tessera::kernels::set_num_threads(threads);
    std::ifstream f(spec_path);
    if (!f) throw Error("cannot open spec '" + spec_path + "'");
    const json spec = json::parse(f);
    const auto t0 = Clock::now();
    driver = std::make_unique<Driver>(spec);
    std::cout << json{{"ready", true},
                      {"load_s", since(t0)},
                      {"threads", tessera::kernels::num_threads()},
                      {"isa", tessera::kernels::isa_name(tessera::kernels::active_isa())}}
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
