#include "models/weights.h"

#include <cmath>
#include <cstring>
#include <sstream>

namespace tessera::models {

namespace k = kernels;

std::optional<k::WeightType> parse_weight_dtype(const std::string& value, const std::string& what) {
  if (value.empty() || value == "auto") return std::nullopt;
  if (value == "f32") return k::WeightType::f32;
  if (value == "bf16") return k::WeightType::bf16;
  if (value == "int8") return k::WeightType::int8;
  throw Error(what + ": unknown weight dtype '" + value +
              "' (expected f32, bf16 or int8; auto or nothing: what the model directory holds)");
}

std::optional<k::WeightType> stored_weight_dtype(const ModelDir& dir) {
  const std::string v = dir.get_string("tessera_dtype", "");
  if (v.empty()) return std::nullopt;
  if (v == "bf16") return k::WeightType::bf16;
  if (v == "int8") return k::WeightType::int8;
  throw Error("'" + dir.config_path() + "': tessera_dtype '" + v +
              "' is not a stored weight type (bf16 or int8, as tessera quantize writes)");
}

k::WeightType resolve_weight_type(const ModelDir& dir, const LoadOptions& o) {
  const auto stored = stored_weight_dtype(dir);
  if (!o.dtype) return stored.value_or(k::WeightType::f32);
  if (stored == k::WeightType::int8 && *o.dtype != k::WeightType::int8)
    throw Error("model directory '" + dir.dir() +
                "' holds int8 weights (config.json tessera_dtype \"int8\"): it loads as int8 only, "
                "not as " +
                k::weight_type_name(*o.dtype) +
                " (its f32 weights are gone; load the model it was quantized from)");
  return *o.dtype;
}

namespace {

std::string where(const ModelDir& dir, const std::string& name) {
  return "'" + dir.file_of(name) + "': tensor '" + name + "'";
}

// The scales of I8 weight `stored` [N] (N output channels), checked, as an owned F32 copy.
Tensor read_scales(const ModelDir& dir, const std::string& stored, int64_t n) {
  const std::string s = scale_name(stored);
  if (!dir.has(s))
    throw Error(where(dir, stored) + " is I8 (int8 weights) but the model directory has no '" + s +
                "' (its F32 [" + std::to_string(n) + "] per-output-channel scales)");
  if (dir.dtype(s) != DType::f32)
    throw Error(where(dir, s) + " has dtype " + dtype_name(dir.dtype(s)) +
                ", expected F32 (the scales of I8 '" + stored + "')");
  if (dir.shape(s) != Shape{n})
    throw Error(where(dir, s) + " has shape " + shape_str(dir.shape(s)) + ", expected [" +
                std::to_string(n) + "] (one scale per output channel of '" + stored + "' " +
                shape_str(dir.shape(stored)) + ")");
  const Tensor view = dir.get(s);
  Tensor t(DType::f32, {n}, false);
  std::memcpy(t.raw(), view.raw(), t.nbytes());
  const float* p = t.data<float>();
  for (int64_t j = 0; j < n; ++j)
    if (!std::isfinite(p[j]) || !(p[j] > 0.0f)) {
      std::ostringstream v;
      v << p[j];
      throw Error(where(dir, s) + ": the scale of output channel " + std::to_string(j) + " is " +
                  v.str() + " (must be finite and > 0)");
    }
  return t;
}

}  // namespace

StoredWeight read_weight(const ModelDir& dir, const std::string& stored, const Shape& expected,
                         const std::string& summary, Want want, k::WeightType gemm_type, bool kn) {
  const DType dt = dir.dtype(stored);
  const bool i8 = dt == DType::i8;
  if (i8 && want == Want::f32)
    throw Error(where(dir, stored) +
                " is I8 (int8 weights), but it is not a GEMM weight of this model: only the "
                "matrices of its linear layers may be stored int8");
  if (dt != DType::f32 && dt != DType::f16 && dt != DType::bf16 && !i8)
    throw Error(where(dir, stored) + " has dtype " + dtype_name(dt) +
                ", expected F32, F16 or BF16");
  if (dir.shape(stored) != expected)
    throw Error(where(dir, stored) + " has shape " + shape_str(dir.shape(stored)) + ", expected " +
                shape_str(expected) + " from config.json (" + summary + ")");
  if (i8 && gemm_type != k::WeightType::int8)
    throw Error(where(dir, stored) + " is I8 (int8 weights): the model loads as " +
                k::weight_type_name(gemm_type) +
                "; load it with --dtype int8 (config.json of a directory written by tessera "
                "quantize says \"tessera_dtype\": \"int8\")");
  if (i8 && expected.size() != 2)
    throw Error(where(dir, stored) + " is I8 (int8 weights), but it is not a matrix");
  StoredWeight w;
  Tensor t = dir.get(stored);
  // A view returns the same bytes each time; a copy (unaligned data) does not.
  const bool view = dir.get(stored).raw() == t.raw();
  const bool keep = dt == DType::f32 || i8 ||
                    (dt == DType::bf16 && want == Want::gemm && gemm_type == k::WeightType::bf16);
  w.mapped = keep && view;
  w.tensor = keep ? t : t.to_f32();
  if (i8) w.scale = read_scales(dir, stored, expected[kn ? 1 : 0]);
  return w;
}

int add_weight(WeightSet& ws, const std::string& name, StoredWeight w, const std::string& stored,
               bool kn) {
  const int i = w.mapped ? ws.add_mapped(name, std::move(w.tensor), {stored})
                         : ws.add(name, std::move(w.tensor), {stored});
  auto& e = ws.at_mut(i);
  e.scale = std::move(w.scale);
  e.kn_layout = kn;
  return i;
}

std::map<std::string, TensorUse> tensor_uses(const WeightSet& ws) {
  std::map<std::string, TensorUse> out;
  std::map<std::string, int> convertible, used;  // entries per source
  for (const auto& e : ws.entries) {
    if (e.sources.empty()) continue;
    const bool packed = !e.packed.empty();
    const k::WeightType type = e.gemm   ? ws.gemm_type
                               : packed ? e.packed.type()
                                        : k::WeightType::f32;
    const bool uses = e.gemm || e.reads_f32 || packed;
    const bool conv = type != k::WeightType::f32 && type == ws.gemm_type && e.exact &&
                      !e.reads_f32 && !(e.sources.size() > 1 && e.kn_layout);
    for (const auto& s : e.sources) {
      TensorUse& u = out[s];
      if (u.compute.empty() || type != k::WeightType::f32) u.compute = k::weight_type_name(type);
      u.kn = u.kn || e.kn_layout;
      used[s] += uses ? 1 : 0;
      convertible[s] += uses && conv ? 1 : 0;
    }
  }
  for (auto& [s, u] : out) u.convertible = used[s] > 0 && convertible[s] == used[s];
  return out;
}

}  // namespace tessera::models
