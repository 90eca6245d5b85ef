#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace tessera {

namespace {

// The safetensors reference implementation rejects headers above 100 MB; so do we, so that a
// corrupt length can never make us allocate or parse gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string errno_text() {
  return std::strerror(errno);
}

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) munmap(addr, size);
  }
};

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string where = "safetensors file '" + path + "'";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + where + ": " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat " + where + ": " + errno_text());
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(where + " is not a regular file");
  }
  file_size_ = static_cast<uint64_t>(st.st_size);
  if (file_size_ < 8) {
    ::close(fd);
    throw Error(where + " is " + std::to_string(file_size_) +
                " bytes: too short to hold the 8-byte header length");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = file_size_;
  mapping->addr = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping->addr == MAP_FAILED) {
    mapping->addr = nullptr;
    throw Error("cannot map " + where + ": " + errno_text());
  }
  const auto* bytes = static_cast<const uint8_t*>(mapping->addr);
  mapping_ = std::shared_ptr<const void>(mapping, mapping->addr);
  parse(bytes);
}

SafetensorsFile::SafetensorsFile(const std::string& name, std::shared_ptr<const void> owner,
                                 const uint8_t* data, uint64_t size)
    : path_(name), mapping_(std::move(owner)), file_size_(size) {
  if (file_size_ < 8)
    throw Error("safetensors file '" + name + "' is " + std::to_string(file_size_) +
                " bytes: too short to hold the 8-byte header length");
  parse(data);
}

void SafetensorsFile::parse(const uint8_t* bytes) {
  const std::string where = "safetensors file '" + path_ + "'";
  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > kMaxHeaderBytes)
    throw Error(where + ": header length " + std::to_string(header_len) +
                " bytes exceeds the 100 MB limit (corrupt or not a safetensors file)");
  if (header_len > file_size_ - 8)
    throw Error(where + ": header length " + std::to_string(header_len) +
                " runs past the end of the file (" + std::to_string(file_size_) + " bytes)");
  const uint64_t data_size = file_size_ - 8 - header_len;
  data_section_ = bytes + 8 + header_len;

  // Parse, rejecting duplicate keys at the top level (nlohmann would keep the last silently).
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json::parser_callback_t check_duplicates =
      [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (depth == 1 && event == nlohmann::json::parse_event_t::key) {
          const auto& key = parsed.get_ref<const std::string&>();
          if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
        }
        return true;
      };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len, check_duplicates);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) throw Error(where + ": duplicate tensor name '" + duplicate + "'");
  if (!header.is_object()) throw Error(where + ": header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(where + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error(where + ": __metadata__ value '" + m.key() + "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = where + ", tensor '" + name + "'";
    if (!v.is_object()) throw Error(what + ": entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string())
      throw Error(what + ": missing string field 'dtype'");
    Entry e{};
    const auto dt = v["dtype"].get<std::string>();
    if (!parse_dtype(dt, e.dtype))
      throw Error(what + ": unknown dtype '" + dt +
                  "' (expected one of F32, F16, BF16, I64, I32, U8, BOOL, I8)");
    if (!v.contains("shape") || !v["shape"].is_array())
      throw Error(what + ": missing array field 'shape'");
    // Element and byte counts in checked 64-bit arithmetic: a shape whose count overflows is
    // refused here, naming the limit, before anything is sized from it.
    uint64_t count = 1;
    std::string dims;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw Error(what + ": shape holds a non-integer or negative");
      const uint64_t dim = d.get<uint64_t>();
      dims += (dims.empty() ? "" : ", ") + std::to_string(dim);
      if (__builtin_mul_overflow(count, dim, &count))
        throw Error(what + ": the element count of shape [" + dims +
                    ", ...] is too large: it overflows 64 bits (limit 2^62 elements)");
      e.shape.push_back(static_cast<int64_t>(std::min<uint64_t>(dim, 1ull << 62)));
    }
    if (count > (1ull << 62))
      throw Error(what + ": shape [" + dims + "] has " + std::to_string(count) +
                  " elements: too large (limit 2^62)");
    uint64_t byte_count = 0;
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(e.dtype)), &byte_count))
      throw Error(what + ": the byte count of " + dt + " [" + dims +
                  "] is too large: it overflows 64 bits (" + std::to_string(count) +
                  " elements x " + std::to_string(dtype_size(e.dtype)) + " bytes)");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2 || !v["data_offsets"][0].is_number_unsigned() ||
        !v["data_offsets"][1].is_number_unsigned())
      throw Error(what + ": 'data_offsets' must be two non-negative integers");
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.begin > e.end)
      throw Error(what + ": data_offsets [" + std::to_string(e.begin) + ", " +
                  std::to_string(e.end) + "] end before they begin");
    if (e.end > data_size)
      throw Error(what + ": data_offsets [" + std::to_string(e.begin) + ", " +
                  std::to_string(e.end) + "] run past the data section (" +
                  std::to_string(data_size) + " bytes)");
    const uint64_t expected = byte_count;
    if (expected != e.end - e.begin)
      throw Error(what + ": " + dt + " " + shape_str(e.shape) + " needs " +
                  std::to_string(expected) + " bytes but its span holds " +
                  std::to_string(e.end - e.begin));
    entries_.emplace(name, std::move(e));
  }

  // Spans must not overlap (empty tensors occupy nothing).
  std::vector<std::pair<uint64_t, const std::string*>> spans;
  for (const auto& [name, e] : entries_) spans.emplace_back(e.begin, &name);
  std::sort(spans.begin(), spans.end(), [&](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : *a.second < *b.second;
  });
  const std::string* prev = nullptr;
  for (const auto& [begin, name] : spans) {
    const Entry& e = entries_.at(*name);
    order_.push_back(*name);
    if (e.begin == e.end) continue;
    if (prev && entries_.at(*prev).end > e.begin)
      throw Error(where + ": tensors '" + *prev + "' and '" + *name + "' have overlapping spans");
    prev = name;
  }
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw Error("safetensors file '" + path_ + "' has no tensor '" + name + "'");
  return it->second;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const Entry& e = entry(name);
  const uint8_t* p = data_section_ + e.begin;
  const size_t elem = dtype_size(e.dtype);
  if (reinterpret_cast<uintptr_t>(p) % elem == 0)
    return Tensor::view(e.dtype, e.shape, const_cast<uint8_t*>(p), mapping_);
  Tensor copy(e.dtype, e.shape);
  std::memcpy(copy.raw(), p, copy.nbytes());
  return copy;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (!names.insert(name).second) throw Error("duplicate output tensor name '" + name + "'");
    nlohmann::ordered_json e;
    e["dtype"] = dtype_name(t.dtype());
    e["shape"] = t.shape();
    e["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = std::move(e);
    offset += t.nbytes();
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write '" + tmp + "': " + errno_text());
    uint8_t len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : tensors)
      out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error("failed writing '" + tmp + "'");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = errno_text();
    std::remove(tmp.c_str());
    throw Error("cannot move '" + tmp + "' to '" + path + "': " + err);
  }
}

}  // namespace tessera
