// tessera::Error — the one exception type for bad input (files, configs, tensors, arguments).
// Its message names the file or tensor and what was expected; the CLI prints it on one line and
// exits with code 2, the C API turns it into a status code.
// The class is the public API's (include/tessera/types.hpp): what the engine throws is what a
// program using the library catches.
#pragma once

#include <tessera/types.hpp>
