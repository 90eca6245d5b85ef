// engine/io/: owns tensors, errors (error.h), safetensors files and model directories.
// May use: kernels/ (aligned allocation). Used by every other engine/ folder.
//
// Tensor: a dtype, a shape and a pointer to row-major contiguous data, owned (64-byte aligned)
// or a view that keeps its owner (e.g. a mapped weight file) alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/io/error.h"

namespace tessera {

// DType, dtype_size and dtype_name (safetensors spelling) come from <tessera/types.hpp>.
// Parses a safetensors dtype name; returns false when unknown.
bool parse_dtype(const std::string& name, DType& out);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
// Product of the dims; throws Error on a negative dim or on overflow past 2^62.
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // A new owned tensor, 64-byte aligned, zero-filled unless zero_fill is false.
  Tensor(DType dt, Shape shape, bool zero_fill = true);
  // A view of external memory kept alive by `owner` (may be null for borrowed memory).
  static Tensor view(DType dt, Shape shape, void* data, std::shared_ptr<const void> owner);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || numel_ == 0; }
  bool empty() const { return !owner_ && data_ == nullptr; }

  void* raw() const { return data_; }
  template <class T>
  T* data() const {
    return static_cast<T*>(data_);
  }

  // The same data with another shape of equal numel.
  Tensor reshaped(Shape shape) const;
  // Rows [begin, begin + count) along dim 0, sharing the data (and its owner).
  Tensor slice(int64_t begin, int64_t count) const;
  // A copy converted to f32 (f32, f16, bf16 sources).
  Tensor to_f32() const;

 private:
  DType dtype_ = DType::f32;
  Shape shape_;
  int64_t numel_ = 0;
  void* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);

}  // namespace tessera
