// config.json text -> each family's config reading, then (when the config is accepted) the
// weight checks and graph building against real weights beside it. data[0] % 3 picks the
// weights: 0 the demo transformer (models/demo-dates), 1 and 2 the tiny random gpt2 and bert
// checkpoints of tests/fuzz/data (make_corpus.py); data[0] / 3 % 2 the reader: 0 that family's
// constructor, 1 load_model (dispatch on model_type). The rest of the input is config.json.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
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

// One scratch model directory per family: a link to its weights; config.json is the input.
struct Dirs {
  tessera::fuzz::ScratchDir dir[3];
  Dirs() {
    const std::string weights[3] = {TESSERA_DEMO_MODEL "/model.safetensors",
                                    TESSERA_FUZZ_DATA "/gpt2/model.safetensors",
                                    TESSERA_FUZZ_DATA "/bert/model.safetensors"};
    for (int i = 0; i < 3; ++i)
      if (::symlink(weights[i].c_str(), dir[i].file("model.safetensors").c_str()) != 0)
        std::abort();
  }
};

const Dirs& dirs() {
  static const Dirs d;
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tessera::kernels::set_num_threads(1);
  (void)dirs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int family = data[0] % 3;
  const bool dispatch = (data[0] / 3) % 2 != 0;
  const auto& dir = dirs().dir[family];
  tessera::fuzz::write_file(dir.file("config.json"),
                            std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  try {
    tessera::ModelDir md(dir.path());
    if (dispatch) {
      (void)tessera::models::load_model(md);
    } else if (family == 0) {
      tessera::models::TransformerModel{md};
    } else if (family == 1) {
      tessera::models::Gpt2Model{md};
    } else {
      tessera::models::BertModel{md};
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
