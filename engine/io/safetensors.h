// Safetensors reading (memory-mapped, validated, zero-copy) and writing (atomic).
//
// Format: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data section; offsets are relative to its start (byte 8 + N).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/io/tensor.h"

namespace tessera {

class SafetensorsFile {
 public:
  // Maps `path` and validates the whole header before anything is used: the header length
  // against the file size, well-formed JSON, known dtypes, shape x dtype size == byte span,
  // spans inside the data section and not overlapping, no duplicate names. Throws Error naming
  // the file (and the tensor) on any violation.
  explicit SafetensorsFile(const std::string& path);
  // The same validation on bytes already in memory (`size` bytes at `data`, kept alive by
  // `owner`); `name` stands for the path in messages. Used by the fuzz targets.
  SafetensorsFile(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                  uint64_t size);

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // Tensor names in file order (by data offset).
  const std::vector<std::string>& names() const { return order_; }
  DType dtype(const std::string& name) const { return entry(name).dtype; }
  const Shape& shape(const std::string& name) const { return entry(name).shape; }
  // A zero-copy view into the mapping (kept alive by the view); a copy when the data is not
  // aligned to its element size. Throws Error if the name is absent.
  Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return file_size_; }

 private:
  struct Entry {
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  const Entry& entry(const std::string& name) const;
  // Validates the header of the file_size_ bytes at `bytes` (mapping_ keeps them alive).
  void parse(const uint8_t* bytes);

  std::string path_;
  std::shared_ptr<const void> mapping_;  // unmaps when the last view goes
  const uint8_t* data_section_ = nullptr;
  uint64_t file_size_ = 0;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (in the given order) to `path` atomically: a temporary file beside it is
// renamed over `path` only once everything is written, so a failure leaves nothing behind.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace tessera
