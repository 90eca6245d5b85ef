// AVX-512 with AVX512-BF16 and AVX512-VNNI: only the low-precision GEMM's dot-product variant
// (vdpbf16ps, vpdpbusd). Compiled with the avx512 flags plus -mavx512bf16 -mavx512vnni
// (kernels/CMakeLists.txt); called only where detail::lowp_vnni_available() (kernels/lowp.cpp).
#include "kernels/lowp_body.hpp"

namespace tessera::kernels::detail {

void gemm_avx512_vnni(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                      int64_t ldc, const Epilogue& ep) {
  LowpBody<xsimd::avx512f, Isa::avx512, true>::gemm(m, a, lda, w, c, ldc, ep);
}

}  // namespace tessera::kernels::detail
