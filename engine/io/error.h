// tessera::Error — the one exception type for bad input (files, configs, tensors, arguments).
// Its message names the file or tensor and what was expected; the CLI prints it on one line and
// exits with code 2, the C API turns it into a status code.
#pragma once

#include <stdexcept>
#include <string>

namespace tessera {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace tessera
