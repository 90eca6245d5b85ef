// A safetensors inputs file -> `tessera run`'s path (tools/cmd_run.cpp): the file is read and
// validated, every tensor handed to Model::run, which checks names, dtypes, ranks, shapes and
// token ids before the forward pass. The same inputs go to three models: the demo model
// (models/demo-dates, a `transformer` with token embeddings: src_ids, tgt_ids, masks) and the
// tiny gpt2 and bert checkpoints of tests/fuzz/data (input_ids, attention_mask, position_ids,
// token_type_ids).
#include <cstdint>
#include <cstring>
#include <memory>

#include "engine/io/error.h"
#include "engine/io/model_dir.h"
#include "engine/io/safetensors.h"
#include "kernels/kernels.h"
#include "models/model.h"

namespace {

struct Models {
  tessera::ModelDir dirs[3] = {tessera::ModelDir(TESSERA_DEMO_MODEL),
                               tessera::ModelDir(TESSERA_FUZZ_DATA "/gpt2"),
                               tessera::ModelDir(TESSERA_FUZZ_DATA "/bert")};
  std::unique_ptr<tessera::models::Model> models[3] = {tessera::models::load_model(dirs[0]),
                                                       tessera::models::load_model(dirs[1]),
                                                       tessera::models::load_model(dirs[2])};
};

const Models& models() {
  static const Models m;
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tessera::kernels::set_num_threads(1);
  (void)models();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::shared_ptr<uint8_t[]>(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(bytes.get(), data, size);
  try {
    tessera::SafetensorsFile in_file("inputs.safetensors", bytes, bytes.get(), size);
    tessera::TensorMap inputs;
    for (const auto& name : in_file.names()) inputs[name] = in_file.get(name);
    for (const auto& model : models().models) {
      try {
        tessera::TensorMap outputs = model->run(inputs);
        for (const auto& [name, t] : outputs)
          if (!t.defined()) __builtin_trap();
      } catch (const tessera::Error&) {
      }
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
