#include "engine/io/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "kernels/kernels.h"

namespace tessera {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::i64:
      return 8;
    case DType::i32:
      return 4;
    case DType::u8:
      return 1;
    case DType::boolean:
      return 1;
    case DType::i8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32:
      return "F32";
    case DType::f16:
      return "F16";
    case DType::bf16:
      return "BF16";
    case DType::i64:
      return "I64";
    case DType::i32:
      return "I32";
    case DType::u8:
      return "U8";
    case DType::boolean:
      return "BOOL";
    case DType::i8:
      return "I8";
  }
  return "?";
}

bool parse_dtype(const std::string& name, DType& out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::f32}, {"F16", DType::f16}, {"BF16", DType::bf16},    {"I64", DType::i64},
      {"I32", DType::i32}, {"U8", DType::u8},   {"BOOL", DType::boolean}, {"I8", DType::i8}};
  for (const auto& [n, dt] : kNames) {
    if (name == n) {
      out = dt;
      return true;
    }
  }
  return false;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  constexpr int64_t kLimit = int64_t{1} << 62;
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw Error("negative dimension in shape " + shape_str(s));
    if (d != 0 && n > kLimit / d) throw Error("shape " + shape_str(s) + " is too large");
    n *= d;
  }
  return n;
}

namespace {
struct AlignedFree {
  size_t bytes;
  void operator()(void* p) const { kernels::free_aligned(p, bytes); }
};
}  // namespace

Tensor::Tensor(DType dt, Shape shape, bool zero_fill) : dtype_(dt), shape_(std::move(shape)) {
  numel_ = shape_numel(shape_);
  size_t bytes = nbytes();
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = kernels::allocate_aligned(rounded, zero_fill);  // huge pages for large tensors
  data_ = p;
  owner_ = std::shared_ptr<const void>(p, AlignedFree{rounded});
}

Tensor Tensor::view(DType dt, Shape shape, void* data, std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shape_numel(shape) != numel_)
    throw Error("cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t count) const {
  if (shape_.empty() || begin < 0 || count < 0 || begin + count > shape_[0])
    throw Error("slice [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                ") is outside " + shape_str(shape_));
  Shape s = shape_;
  s[0] = count;
  const int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
  Tensor t = view(
      dtype_, std::move(s),
      static_cast<char*>(data_) + begin * row * static_cast<int64_t>(dtype_size(dtype_)), owner_);
  return t;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t b) {
  uint32_t bits = uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

Tensor Tensor::to_f32() const {
  Tensor out(DType::f32, shape_);
  float* dst = out.data<float>();
  switch (dtype_) {
    case DType::f32:
      std::memcpy(dst, data_, nbytes());
      break;
    case DType::f16: {
      const auto* src = static_cast<const uint16_t*>(data_);
      for (int64_t i = 0; i < numel_; ++i) dst[i] = f16_to_f32(src[i]);
      break;
    }
    case DType::bf16: {
      const auto* src = static_cast<const uint16_t*>(data_);
      for (int64_t i = 0; i < numel_; ++i) dst[i] = bf16_to_f32(src[i]);
      break;
    }
    default:
      throw Error(std::string("cannot convert a ") + dtype_name(dtype_) + " tensor to F32");
  }
  return out;
}

}  // namespace tessera
