#include "engine/io/limits.h"

#include <unistd.h>

#include <cstdio>

namespace tessera {

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw LimitError(what + " overflows 64 bits (" + std::to_string(a) + " x " + std::to_string(b) +
                     ")");
  return r;
}

uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw LimitError(what + " overflows 64 bits (" + std::to_string(a) + " + " + std::to_string(b) +
                     ")");
  return r;
}

uint64_t physical_memory_bytes() {
  static const uint64_t bytes = [] {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return ~uint64_t{0};  // unknown: no limit
    uint64_t r = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(pages), static_cast<uint64_t>(page), &r))
      return ~uint64_t{0};
    return r;
  }();
  return bytes;
}

std::string bytes_text(uint64_t bytes) {
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  std::string s = std::to_string(bytes) + " bytes";
  if (u >= 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " (%.1f %s)", v, units[u]);
    s += buf;
  }
  return s;
}

void check_fits_memory(uint64_t bytes, const std::string& what) {
  const uint64_t phys = physical_memory_bytes();
  if (bytes > phys)
    throw LimitError(what + " would need " + bytes_text(bytes) +
                     ", more than this machine's physical memory (" + bytes_text(phys) + ")");
}

void ParamCount::add(const std::string& keys, std::initializer_list<int64_t> factors) {
  std::string values;
  for (int64_t f : factors) values += (values.empty() ? "" : " x ") + std::to_string(f);
  const std::string what = "'" + path_ + "': the parameter count of " + keys + " (" + values + ")";
  uint64_t n = 1;
  for (int64_t f : factors) n = checked_mul(n, static_cast<uint64_t>(f < 0 ? 0 : f), what);
  total_ = checked_add(total_, n, "'" + path_ + "': the parameter count");
  if (n >= largest_) {
    largest_ = n;
    largest_keys_ = keys + " (" + values + ")";
  }
}

void ParamCount::check_fits_memory() const {
  const std::string what = "'" + path_ + "': the total parameter count (" + std::to_string(total_) +
                           ", largest part " + largest_keys_ + ")";
  const uint64_t bytes = checked_mul(total_, 4, what + " in bytes");
  tessera::check_fits_memory(bytes, "'" + path_ + "': the weights (" + std::to_string(total_) +
                                        " parameters x 4 bytes; largest part " + largest_keys_ +
                                        ")");
}

void check_text_bytes(uint64_t bytes, const std::string& what) {
  if (bytes > kMaxTextBytes)
    throw LimitError(what + " is " + std::to_string(bytes) +
                     " bytes, more than the input text limit of 16 MiB (" +
                     std::to_string(kMaxTextBytes) + " bytes)");
}

bool getline_limited(std::istream& in, std::string& line, const std::string& what, bool strip_cr) {
  line.clear();
  std::streambuf* sb = in.rdbuf();
  bool any = false;
  for (;;) {
    const int c = sb->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      in.setstate(std::ios::eofbit);
      break;
    }
    any = true;
    if (c == '\n') break;
    line.push_back(static_cast<char>(c));
    if (line.size() > kMaxTextBytes)
      throw LimitError(what + " is longer than the input text limit of 16 MiB (" +
                       std::to_string(kMaxTextBytes) + " bytes)");
  }
  if (strip_cr && !line.empty() && line.back() == '\r') line.pop_back();
  if (!any) in.setstate(std::ios::failbit);
  return any;
}

}  // namespace tessera
