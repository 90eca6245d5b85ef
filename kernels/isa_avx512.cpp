// AVX-512 instantiation of the kernels. Compiled with -mavx512f -mavx512dq -mavx512bw
// -mavx512vl -mavx2 -mfma -mf16c (kernels/CMakeLists.txt); runs only where isa_supported(avx512).
#include "kernels/kernels_body.hpp"

namespace tessera::kernels::detail {

const KernelTable& kernel_table_avx512() {
  static constexpr KernelTable kTable = make_kernel_table<xsimd::avx512f, Isa::avx512>();
  return kTable;
}

}  // namespace tessera::kernels::detail
