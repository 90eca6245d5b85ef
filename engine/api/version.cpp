// tessera::version() and tessera_version(): the version the library was built as.
#include <tessera/tessera.h>
#include <tessera/tessera.hpp>

namespace tessera {

const char* version() {
  return TESSERA_VERSION_STRING;
}

}  // namespace tessera

extern "C" const char* tessera_version(void) {
  return TESSERA_VERSION_STRING;
}
