// `tessera quantize`: a model directory whose GEMM weights are stored converted (bf16, or int8
// per output channel), loaded later without converting anything (docs/quantized-models.md).
//
// Which tensors are GEMM weights is the engine's own knowledge: the model is loaded with every
// graph pass and the target type, and a checkpoint tensor is converted when every weight the
// model reads from it is a GEMM weight packed as that type from its rows exactly (never read as
// f32, never transformed first: models::tensor_uses). Each is converted exactly as loading the
// original with --dtype would (kernels::quantize_weights_int8, kernels::f32_to_bf16), so the two
// give bit-identical results. Everything else is written as stored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace tessera::models {

struct QuantizeReport {
  std::vector<std::string> converted;    // the GEMM weights stored as the new type
  std::vector<std::string> unchanged;    // GEMM weights kept as stored (transformed at load)
  int64_t tensors = 0;                   // tensors written (scales included)
  uint64_t bytes_in = 0, bytes_out = 0;  // weight file bytes
};

// Writes `out`: config.json with "tessera_dtype" added, model.safetensors (one file), and every
// other file of `in` copied. `out` must not exist or be an empty directory; the directory is
// built beside it and renamed into place, so an error leaves nothing behind. type: bf16 or int8.
// Throws Error (an input that is already quantized, a non-finite weight, ...).
QuantizeReport quantize_model_dir(const std::string& in, const std::string& out,
                                  kernels::WeightType type);

}  // namespace tessera::models
