// Small helpers shared by the doctest suites.
#pragma once

#include <functional>
#include <string>

#include "engine/io/error.h"

namespace tessera::test {

// The message of the tessera::Error that f() throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Whether `s` contains `part`.
inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace tessera::test
