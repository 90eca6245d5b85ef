// AVX2 + FMA instantiation of the kernels. Compiled with -mavx2 -mfma -mf16c
// (kernels/CMakeLists.txt). xsimd::avx2 alone would emulate FMA: use fma3<avx2>.
#include "kernels/kernels_body.hpp"

namespace tessera::kernels::detail {

const KernelTable& kernel_table_avx2() {
  static constexpr KernelTable kTable = make_kernel_table<xsimd::fma3<xsimd::avx2>, Isa::avx2>();
  return kTable;
}

}  // namespace tessera::kernels::detail
