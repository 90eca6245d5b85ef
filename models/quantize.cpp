#include "models/quantize.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "engine/graph/passes/passes.h"
#include "engine/io/model_dir.h"
#include "engine/io/safetensors.h"
#include "models/model.h"

namespace tessera::models {

namespace fs = std::filesystem;
namespace k = kernels;

namespace {

// Tensor `name` of `dir` (a GEMM weight, [N, K], or [K, N] when kn) converted to `type`: the
// bytes loading it with --dtype would pack. int8: {q, scales}; bf16: {bits}.
std::vector<std::pair<std::string, Tensor>> convert(const ModelDir& dir, const std::string& name,
                                                    bool kn, k::WeightType type) {
  const Tensor src = dir.get(name);
  const Shape& shape = src.shape();
  if (shape.size() != 2)
    throw Error("'" + dir.file_of(name) + "': GEMM weight '" + name + "' is not a matrix");
  const int64_t n = kn ? shape[1] : shape[0], kk = kn ? shape[0] : shape[1];
  if (type == k::WeightType::bf16) {
    if (src.dtype() == DType::bf16) return {{name, src}};  // already the bits the GEMM takes
    const Tensor f = src.dtype() == DType::f32 ? src : src.to_f32();
    Tensor bits(DType::bf16, shape, false);
    const float* p = f.data<float>();
    uint16_t* b = bits.data<uint16_t>();
    for (int64_t i = 0; i < f.numel(); ++i) b[i] = k::f32_to_bf16(p[i]);
    return {{name, bits}};
  }
  const Tensor f = src.dtype() == DType::f32 ? src : src.to_f32();
  Tensor q(DType::i8, shape, false), scales(DType::f32, {n}, false);
  try {
    k::quantize_weights_int8(f.data<float>(), n, kk, kn ? n : kk, kn, q.data<int8_t>(),
                             scales.data<float>());
  } catch (const std::invalid_argument& e) {
    throw Error("'" + dir.file_of(name) + "': tensor '" + name + "': " + e.what());
  }
  return {{name, q}, {scale_name(name), scales}};
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw Error("cannot write '" + path + "'");
}

}  // namespace

QuantizeReport quantize_model_dir(const std::string& in_path, const std::string& out_path,
                                  k::WeightType type) {
  if (type == k::WeightType::f32)
    throw Error("tessera quantize: --dtype must be bf16 or int8 (f32 is what checkpoints hold)");
  const char* type_name = k::weight_type_name(type);
  const ModelDir in(in_path);
  if (const auto stored = stored_weight_dtype(in))
    throw Error("model directory '" + in_path + "' already holds " + k::weight_type_name(*stored) +
                " weights (config.json tessera_dtype); quantize the model it was made from");
  {
    std::error_code ec;
    if (fs::exists(out_path, ec) &&
        (!fs::is_directory(out_path, ec) || !fs::is_empty(out_path, ec)))
      throw Error("--out '" + out_path + "' exists and is not an empty directory");
  }

  // The model as --dtype TYPE loads it, every pass on: which stored tensors its GEMMs take.
  std::map<std::string, TensorUse> uses;
  {
    const passes::Scoped all(passes::Options{});
    LoadOptions o;
    o.dtype = type;
    const auto model = load_model(in, o);
    uses = tensor_uses(model->forward_graph().weights());
  }

  QuantizeReport report;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& name : in.names()) {
    auto u = uses.find(name);
    const bool gemm = u != uses.end() && u->second.compute == type_name;
    if (gemm && u->second.convertible) {
      if (type == k::WeightType::int8 && in.has(scale_name(name)))
        throw Error("'" + in.file_of(name) + "': tensor '" + scale_name(name) +
                    "' already exists; the int8 scales of '" + name + "' would take its name");
      for (auto& t : convert(in, name, u->second.kn, type)) tensors.push_back(std::move(t));
      report.converted.push_back(name);
    } else {
      if (gemm) report.unchanged.push_back(name);
      tensors.emplace_back(name, in.get(name));
    }
  }
  // Widest elements first: every tensor stays aligned to its element size (mappable in place).
  std::stable_sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second.dtype()) > dtype_size(b.second.dtype());
  });
  report.tensors = static_cast<int64_t>(tensors.size());
  report.bytes_in = in.weight_file_bytes();

  nlohmann::json config = in.config();
  config["tessera_dtype"] = type_name;
  const auto weight_files = in.weight_files();
  const fs::path out(out_path);
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  try {
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    // Tokenizer files and whatever else the directory holds, as they are.
    for (const auto& f : fs::directory_iterator(in_path)) {
      if (!f.is_regular_file()) continue;
      const std::string base = f.path().filename().string();
      bool weights = base == "config.json";
      for (const auto& w : weight_files) weights = weights || fs::path(w).filename() == base;
      if (!weights) fs::copy_file(f.path(), tmp / base);
    }
    write_safetensors((tmp / "model.safetensors").string(), tensors,
                      {{"format", "pt"}, {"tessera_dtype", type_name}});
    write_text((tmp / "config.json").string(), config.dump(2) + "\n");
    report.bytes_out = fs::file_size(tmp / "model.safetensors");
    std::error_code ec;
    if (fs::exists(out, ec)) fs::remove(out);  // an empty directory (checked above)
    fs::rename(tmp, out);
  } catch (const fs::filesystem_error& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw Error("tessera quantize: cannot write '" + out_path + "': " + e.code().message() + " (" +
                e.path1().string() + ")");
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  return report;
}

}  // namespace tessera::models
