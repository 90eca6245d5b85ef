// Size limits: absurd sizes are refused, with a one-line Error naming the limit, before anything
// is allocated. One place for the checked arithmetic, the machine's physical memory and the
// limit on input text.
//
//   uint64_t n = checked_mul(a, b, "vocab_size x n_embd");  // throws Error on 64-bit overflow
//   check_fits_memory(bytes, "the KV cache (...)");            // throws if bytes > physical memory
//   check_text_bytes(text.size(), "prompt 3");                 // throws above kMaxTextBytes
//   while (getline_limited(std::cin, line, "stdin line")) ...  // never reads past the limit
#pragma once

#include <cstdint>
#include <initializer_list>
#include <istream>
#include <string>

#include "engine/io/error.h"

namespace tessera {

// What every check here throws: an Error (the CLI's one line, exit code 2) that callers can tell
// apart from other bad input, e.g. to size a batch before the model's own input checks run.
class LimitError : public Error {
 public:
  using Error::Error;
};

// The most bytes one input text (a prompt, a line of stdin, a text argument) may hold: 16 MiB.
// Refused before tokenizing.
constexpr uint64_t kMaxTextBytes = uint64_t{16} << 20;

// a * b, or Error "<what> overflows 64 bits (a x b)".
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what);
// a + b, or Error "<what> overflows 64 bits (a + b)".
uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what);

// The machine's physical memory in bytes (sysconf(_SC_PHYS_PAGES) * page size).
uint64_t physical_memory_bytes();
// "123456789 bytes (117.7 MiB)".
std::string bytes_text(uint64_t bytes);
// Throws Error "<what> need(s) N bytes (...), more than this machine's physical memory (M bytes
// (...))" when bytes exceeds physical memory.
void check_fits_memory(uint64_t bytes, const std::string& what);

// The parameters a model config asks for, summed in checked arithmetic while the config is read
// (before any weight is allocated). Each term names the config keys it comes from:
//   ParamCount p(cfg_path);
//   p.add("vocab_size x n_embd", {vocab, embd});
//   p.check_fits_memory();  // 4 bytes per parameter (f32 once loaded) vs physical memory
class ParamCount {
 public:
  explicit ParamCount(std::string config_path) : path_(std::move(config_path)) {}
  // Adds the product of `factors` (each >= 0); Error naming `keys` on a 64-bit overflow.
  void add(const std::string& keys, std::initializer_list<int64_t> factors);
  uint64_t total() const { return total_; }
  // Error "'<config>': the weights need N bytes (P parameters x 4 bytes; the largest part
  // <keys> (<values>) ...), more than this machine's physical memory (M bytes)".
  void check_fits_memory() const;

 private:
  std::string path_;
  uint64_t total_ = 0, largest_ = 0;
  std::string largest_keys_;
};

// Throws Error "<what> is N bytes, more than the input text limit of 16 MiB" above kMaxTextBytes.
void check_text_bytes(uint64_t bytes, const std::string& what);
// std::getline that stops with Error (via check_text_bytes) once a line passes kMaxTextBytes,
// without reading the rest of it. Strips a trailing '\r' when strip_cr. Returns false at the end
// of the stream when nothing was read.
bool getline_limited(std::istream& in, std::string& line, const std::string& what,
                     bool strip_cr = false);

}  // namespace tessera
