// Whole safetensors file bytes -> the reader's header and span validation, then every tensor's
// view or copy (reading its bytes, so a span past the data would be caught by ASan).
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/io/error.h"
#include "engine/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, so ASan reports any read past the end of the "file".
  auto bytes = std::shared_ptr<uint8_t[]>(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(bytes.get(), data, size);
  try {
    tessera::SafetensorsFile f("fuzz.safetensors", bytes, bytes.get(), size);
    volatile uint8_t sink = 0;
    for (const auto& name : f.names()) {
      tessera::Tensor t = f.get(name);
      const auto* p = static_cast<const uint8_t*>(t.raw());
      for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ p[i];
    }
    for (const auto& [k, v] : f.metadata()) sink = sink ^ static_cast<uint8_t>(k.size() + v.size());
    (void)sink;
  } catch (const tessera::Error&) {
  }
  return 0;
}
