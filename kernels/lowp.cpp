// Reduced-precision weights (bf16, int8): the scalar conversions every ISA shares (bf16
// rounding, per-channel weight quantization, the reference row quantization), the packing of
// bf16 / int8 weights into the GEMM's panels of 32-bit words, reading rows back out of them,
// and the choice of the AVX512-BF16 / AVX512-VNNI kernels. Compiled with the baseline flags only.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"
#include "kernels/parallel.hpp"

namespace tessera::kernels {

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::f32:
      return "f32";
    case WeightType::bf16:
      return "bf16";
    case WeightType::int8:
      return "int8";
  }
  return "?";
}

uint16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even (overflow gives inf)
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

void quantize_weights_int8(const float* w, int64_t n, int64_t k, int64_t ldw, bool kn, int8_t* q,
                           float* scales) {
  if (w == nullptr || q == nullptr || scales == nullptr || n < 1 || k < 1 || ldw < (kn ? n : k)) {
    throw std::invalid_argument(
        "tessera::kernels::quantize_weights_int8: need w, q, scales != null, n >= 1, k >= 1 and "
        "ldw >= " +
        std::string(kn ? "n" : "k") + "; got n=" + std::to_string(n) + " k=" + std::to_string(k) +
        " ldw=" + std::to_string(ldw));
  }
  // Element (channel j, input kk) of W and of q.
  auto at = [&](int64_t j, int64_t kk) { return kn ? w[kk * ldw + j] : w[j * ldw + kk]; };
  auto qat = [&](int64_t j, int64_t kk) -> int8_t& { return kn ? q[kk * n + j] : q[j * k + kk]; };
  for (int64_t j = 0; j < n; ++j) {
    float amax = 0.0f;
    for (int64_t kk = 0; kk < k; ++kk) {
      const float v = at(j, kk);
      if (!std::isfinite(v)) {
        throw std::invalid_argument("tessera::kernels::quantize_weights_int8: weight of output " +
                                    std::to_string(j) + ", input " + std::to_string(kk) +
                                    " is not finite (" + std::to_string(v) + ")");
      }
      amax = std::fmax(amax, std::fabs(v));
    }
    const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
    scales[j] = s;
    for (int64_t kk = 0; kk < k; ++kk) {
      const float v = std::nearbyint(at(j, kk) / s);
      qat(j, kk) = static_cast<int8_t>(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
  }
}

void quantize_row_u8(const float* x, int64_t k, uint8_t* q, float* scale, int32_t* zero_point) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  float s = (hi - lo) / 255.0f;
  if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;
  float z = std::nearbyint(-lo / s);
  z = z > 255.0f ? 255.0f : z < 0.0f ? 0.0f : z;
  *scale = s;
  *zero_point = static_cast<int32_t>(z);
  for (int64_t i = 0; i < k; ++i) {
    float v = std::nearbyint(x[i] / s) + z;
    v = v >= 0.0f ? v : 0.0f;  // also NaN -> 0
    v = v <= 255.0f ? v : 255.0f;
    q[i] = static_cast<uint8_t>(v);
  }
}

const float* PackedWeights::scales() const {
  if (type_ != WeightType::int8 || !data_) return nullptr;
  return data_.get() + ((n_ + nr_ - 1) / nr_) * words() * nr_;
}

const int32_t* PackedWeights::column_sums() const {
  if (type_ != WeightType::int8 || !data_) return nullptr;
  // Stored after the scales; memory written as int32 by pack_words.
  return reinterpret_cast<const int32_t*>(scales() + ((n_ + nr_ - 1) / nr_) * nr_);
}

namespace {

int64_t group_of(WeightType t) {
  return t == WeightType::f32 ? 1 : t == WeightType::bf16 ? 2 : 4;
}

// Packs the words word(j, kw) (column j < n, word kw < words) into panels of the ISA's NR;
// zero words past n. int8: also the scales [n] and column sums [n] (zero past n).
template <class WordOf>
PackedWeights pack_words(int64_t n, int64_t k, WeightType type, Isa isa, WordOf word,
                         const float* scales, const int32_t* sums) {
  const int64_t nr = kernel_table(isa).gemm_panel_width;
  const int64_t g = group_of(type);
  const int64_t kw = (k + g - 1) / g;
  const int64_t panels = (n + nr - 1) / nr;
  const size_t floats = static_cast<size_t>(panels * kw * nr) +
                        (type == WeightType::int8 ? static_cast<size_t>(2 * panels * nr) : 0);
  PackedWeights out(n, k, nr, isa, floats, type);
  uint32_t* dst = reinterpret_cast<uint32_t*>(out.mutable_data());
  detail::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint32_t* panel = dst + p * kw * nr;  // [kw, NR]
      for (int64_t jj = 0; jj < nr; ++jj) {
        const int64_t j = p * nr + jj;
        for (int64_t w = 0; w < kw; ++w) panel[w * nr + jj] = j < n ? word(j, w) : 0u;
      }
    }
  });
  if (type == WeightType::int8) {
    float* sc = out.mutable_data() + panels * kw * nr;
    int32_t* cs = reinterpret_cast<int32_t*>(sc + panels * nr);
    for (int64_t j = 0; j < panels * nr; ++j) {
      sc[j] = j < n ? scales[j] : 0.0f;
      cs[j] = j < n ? sums[j] : 0;
    }
  }
  return out;
}

void check_pack_args(const char* fn, const void* w, int64_t n, int64_t k, int64_t ldw, bool kn) {
  if (w == nullptr || n < 1 || k < 1 || ldw < (kn ? n : k)) {
    throw std::invalid_argument(std::string("tessera::kernels::") + fn +
                                ": need w != null, n >= 1, k >= 1 and ldw >= " + (kn ? "n" : "k") +
                                "; got n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                " ldw=" + std::to_string(ldw));
  }
}

}  // namespace

PackedWeights pack_weights_bf16(const uint16_t* w, int64_t n, int64_t k, int64_t ldw, bool kn,
                                Isa isa) {
  check_pack_args("pack_weights_bf16", w, n, k, ldw, kn);
  auto at = [&](int64_t j, int64_t kk) -> uint32_t {
    if (kk >= k) return 0u;
    return kn ? w[kk * ldw + j] : w[j * ldw + kk];
  };
  return pack_words(
      n, k, WeightType::bf16, isa,
      [&](int64_t j, int64_t kw) { return at(j, 2 * kw) | (at(j, 2 * kw + 1) << 16); }, nullptr,
      nullptr);
}

PackedWeights pack_weights_int8(const int8_t* q, const float* scales, int64_t n, int64_t k,
                                int64_t ldq, bool kn, Isa isa) {
  check_pack_args("pack_weights_int8", q, n, k, ldq, kn);
  if (scales == nullptr)
    throw std::invalid_argument("tessera::kernels::pack_weights_int8: scales are null");
  for (int64_t j = 0; j < n; ++j) {
    if (!(std::isfinite(scales[j]) && scales[j] > 0.0f)) {
      throw std::invalid_argument("tessera::kernels::pack_weights_int8: the scale of output " +
                                  std::to_string(j) + " is " + std::to_string(scales[j]) +
                                  "; scales must be finite and > 0");
    }
  }
  auto at = [&](int64_t j, int64_t kk) -> int32_t {
    if (kk >= k) return 0;
    return kn ? q[kk * ldq + j] : q[j * ldq + kk];
  };
  std::vector<int32_t> sums(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t kk = 0; kk < k; ++kk) sums[static_cast<size_t>(j)] += at(j, kk);
  return pack_words(
      n, k, WeightType::int8, isa,
      [&](int64_t j, int64_t kw) {
        uint32_t word = 0;
        for (int64_t t = 0; t < 4; ++t)
          word |= static_cast<uint32_t>(static_cast<uint8_t>(at(j, 4 * kw + t))) << (8 * t);
        return word;
      },
      scales, sums.data());
}

PackedWeights pack_weights_as(const float* w, int64_t n, int64_t k, int64_t ldw, bool kn,
                              WeightType type, Isa isa) {
  switch (type) {
    case WeightType::f32:
      return kn ? pack_weights_kn(w, k, n, ldw, isa) : pack_weights(w, n, k, ldw, isa);
    case WeightType::bf16: {
      check_pack_args("pack_weights_as", w, n, k, ldw, kn);
      auto at = [&](int64_t j, int64_t kk) -> uint32_t {
        if (kk >= k) return 0u;
        return f32_to_bf16(kn ? w[kk * ldw + j] : w[j * ldw + kk]);
      };
      return pack_words(
          n, k, WeightType::bf16, isa,
          [&](int64_t j, int64_t kw) { return at(j, 2 * kw) | (at(j, 2 * kw + 1) << 16); }, nullptr,
          nullptr);
    }
    case WeightType::int8: {
      check_pack_args("pack_weights_as", w, n, k, ldw, kn);
      std::vector<int8_t> q(static_cast<size_t>(n * k));
      std::vector<float> scales(static_cast<size_t>(n));
      quantize_weights_int8(w, n, k, ldw, kn, q.data(), scales.data());
      return pack_weights_int8(q.data(), scales.data(), n, k, kn ? n : k, kn, isa);
    }
  }
  throw std::invalid_argument("tessera::kernels::pack_weights_as: unknown weight type");
}

namespace detail {

void packed_rows_lowp(const PackedWeights& w, const int64_t* rows, int64_t count, float* out,
                      int64_t ldo) {
  const int64_t k = w.k(), nr = w.panel_width(), g = w.group(), kw = w.words();
  const uint32_t* words = reinterpret_cast<const uint32_t*>(w.data());
  for (int64_t r = 0; r < count; ++r) {
    const int64_t j = rows[r];
    const uint32_t* col = words + (j / nr) * kw * nr + j % nr;  // word w at col[w * nr]
    float* dst = out + r * ldo;
    if (w.type() == WeightType::bf16) {
      for (int64_t kk = 0; kk < k; ++kk)
        dst[kk] = bf16_to_f32(static_cast<uint16_t>(col[(kk / g) * nr] >> (16 * (kk % g))));
    } else {
      const float s = w.scales()[j];
      for (int64_t kk = 0; kk < k; ++kk) {
        const auto q =
            static_cast<int8_t>(static_cast<uint8_t>(col[(kk / g) * nr] >> (8 * (kk % g))));
        dst[kk] = static_cast<float>(q) * s;
      }
    }
  }
}

bool lowp_vnni_available(WeightType type) {
  static const bool widen = [] {
    const char* env = std::getenv("TESSERA_LOWP");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return false;
    if (std::strcmp(env, "widen") == 0) return true;
    throw std::runtime_error(std::string("TESSERA_LOWP=") + env +
                             " is not a choice; use auto (AVX512-BF16/VNNI where the CPU has "
                             "them) or widen (the widening kernels everywhere)");
  }();
  if (widen || !isa_supported(Isa::avx512)) return false;
  __builtin_cpu_init();
  if (type == WeightType::bf16) return __builtin_cpu_supports("avx512bf16");
  if (type == WeightType::int8) return __builtin_cpu_supports("avx512vnni");
  return false;
}

}  // namespace detail
}  // namespace tessera::kernels
