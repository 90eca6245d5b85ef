// config.json text -> each family's config reading (and, when the config is accepted, the
// weight checks against the demo model's weights, models/demo-dates/model.safetensors).
// The first byte picks the reader: 0 TransformerModel, 1 Gpt2Model, 2 BertModel, 3 load_model
// (dispatch on model_type); the rest is config.json.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "engine/io/error.h"
#include "engine/io/model_dir.h"
#include "fuzz_util.h"
#include "kernels/kernels.h"
#include "models/bert.h"
#include "models/gpt2.h"
#include "models/model.h"
#include "models/transformer.h"

namespace {

const tessera::fuzz::ScratchDir& scratch() {
  static const tessera::fuzz::ScratchDir dir;
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tessera::kernels::set_num_threads(1);
  if (::symlink(TESSERA_DEMO_MODEL "/model.safetensors",
                scratch().file("model.safetensors").c_str()) != 0)
    std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& dir = scratch();
  tessera::fuzz::write_file(dir.file("config.json"),
                            std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  try {
    tessera::ModelDir md(dir.path());
    switch (data[0] % 4) {
      case 0:
        tessera::models::TransformerModel{md};
        break;
      case 1:
        tessera::models::Gpt2Model{md};
        break;
      case 2:
        tessera::models::BertModel{md};
        break;
      default:
        (void)tessera::models::load_model(md);
        break;
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
