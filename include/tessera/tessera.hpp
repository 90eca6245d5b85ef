// Tessera's C++ API. Include as <tessera/tessera.hpp>; link with -ltessera.
#pragma once

#include <tessera/version.h>

// Marks a function or class the shared library exports (engine/api/tessera.map lists them).
#ifndef TESSERA_API
#define TESSERA_API __attribute__((visibility("default")))
#endif

namespace tessera {

// The library's version, "MAJOR.MINOR.PATCH" (TESSERA_VERSION_STRING of the build that made the
// library). Static storage.
TESSERA_API const char* version();

}  // namespace tessera
