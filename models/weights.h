// The weight type of a model's GEMMs (--dtype) and how a family reads a stored tensor for it.
//
// Every GEMM weight is packed as one WeightType (kernels/kernels.h): f32, bf16 or int8 (per
// output channel); activations, attention, norms, embedding tables and recurrent weights stay
// f32. The type is chosen at load (LoadOptions::dtype) or, left unset, is what the model
// directory says it holds: config.json's "tessera_dtype" ("bf16" or "int8", written by `tessera
// quantize`), else f32. A quantized directory stores each GEMM weight converted under its own
// name, shape and layout: BF16 bits, or I8 values (kernels::quantize_weights_int8) with an F32
// tensor "<name>.scale" [N] of per-output-channel scales (docs/quantized-models.md).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/graph/graph.h"
#include "engine/io/model_dir.h"

namespace tessera::models {

// Options every family's loader takes.
struct LoadOptions {
  // The type of the GEMM weights; unset: the directory's tessera_dtype, else f32.
  std::optional<kernels::WeightType> dtype;
};

// A --dtype value: "f32", "bf16" or "int8"; "" and "auto" leave it unset. Throws Error naming
// `what` and the accepted values.
std::optional<kernels::WeightType> parse_weight_dtype(const std::string& value,
                                                      const std::string& what = "--dtype");
// config.json's "tessera_dtype": unset for an ordinary checkpoint, bf16 or int8 for a quantized
// directory (Error naming config.json for any other value).
std::optional<kernels::WeightType> stored_weight_dtype(const ModelDir& dir);
// The type the GEMM weights of `dir` are packed as under `o`. An int8 directory loads as int8
// only (Error otherwise: its f32 weights are gone); a bf16 one widens exactly to f32 or is
// quantized from its bf16 values as asked.
kernels::WeightType resolve_weight_type(const ModelDir& dir, const LoadOptions& o);

// The scales tensor of an I8 weight.
inline std::string scale_name(const std::string& weight) {
  return weight + ".scale";
}

// One stored tensor as a model's WeightSet keeps it.
struct StoredWeight {
  Tensor tensor;        // F32; or, read for a GEMM, BF16 / I8 as stored
  Tensor scale;         // tensor I8: F32 [N], checked (finite, > 0), an owned copy
  bool mapped = false;  // tensor is a view of the mapped file
};
// How a loader wants a tensor: as f32 data (vectors, tables it gathers itself, weights it
// transforms), or as a GEMM weight, or a table that may be tied to one: BF16 kept as stored when
// `gemm_type` is bf16, I8 accepted (with `<name>.scale`, its N = shape[kn ? 1 : 0]) when it is
// int8.
enum class Want { f32, gemm };
// Reads tensor `stored` (present in `dir`) of the shape `expected`; errors name the file, the
// tensor and `summary` (the config keys the shape comes from).
StoredWeight read_weight(const ModelDir& dir, const std::string& stored, const Shape& expected,
                         const std::string& summary, Want want, kernels::WeightType gemm_type,
                         bool kn = false);
// Registers a read tensor in `ws` (a mapped view: add_mapped) with `stored` as its source.
int add_weight(WeightSet& ws, const std::string& name, StoredWeight w, const std::string& stored,
               bool kn = false);

// A loaded model's GEMM weights by checkpoint tensor: what `tessera quantize` converts and
// `tessera inspect` shows. For each stored name some weight of the model was read from: the type
// its GEMMs run it as (f32 when nothing packs it), and whether a quantized directory may store it
// converted (every weight read from it is a GEMM weight packed as the model's type, from its
// rows exactly, never read as f32). `kn`: stored [K, N].
struct TensorUse {
  std::string compute;  // "f32", "bf16", "int8"
  bool convertible = false;
  bool kn = false;
};
std::map<std::string, TensorUse> tensor_uses(const WeightSet& ws);

}  // namespace tessera::models
