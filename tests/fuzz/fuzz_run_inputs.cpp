// A safetensors inputs file -> `tessera run`'s path (tools/cmd_run.cpp): the file is read and
// validated, every tensor handed to Model::run of the demo model (models/demo-dates, a
// `transformer` with token embeddings: src_ids, tgt_ids and optional masks), which checks names,
// dtypes, ranks, shapes and token ids before the forward pass.
#include <cstdint>
#include <cstring>
#include <memory>

#include "engine/io/error.h"
#include "engine/io/model_dir.h"
#include "engine/io/safetensors.h"
#include "kernels/kernels.h"
#include "models/model.h"

namespace {

const tessera::models::Model& model() {
  static const tessera::ModelDir dir(TESSERA_DEMO_MODEL);
  static const std::unique_ptr<tessera::models::Model> m = tessera::models::load_model(dir);
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tessera::kernels::set_num_threads(1);
  (void)model();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::shared_ptr<uint8_t[]>(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(bytes.get(), data, size);
  try {
    tessera::SafetensorsFile in_file("inputs.safetensors", bytes, bytes.get(), size);
    tessera::TensorMap inputs;
    for (const auto& name : in_file.names()) inputs[name] = in_file.get(name);
    tessera::TensorMap outputs = model().run(inputs);
    for (const auto& [name, t] : outputs)
      if (!t.defined()) __builtin_trap();
  } catch (const tessera::Error&) {
  }
  return 0;
}
