// Baseline x86-64 (SSE2) instantiation of the kernels: no extra -m flags, runs on any x86-64.
#include "kernels/kernels_body.hpp"

namespace tessera::kernels::detail {

const KernelTable& kernel_table_generic() {
  static constexpr KernelTable kTable = make_kernel_table<xsimd::sse2, Isa::generic>();
  return kTable;
}

}  // namespace tessera::kernels::detail
