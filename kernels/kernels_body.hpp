// The kernel bodies of every family, and make_kernel_table<Arch, kIsa>(), which fills a
// KernelTable with their functions for one ISA. Included ONLY by kernels/isa_<isa>.cpp, each
// compiled with its own -m flags; the rules every body follows are in simd_body.hpp.
//   simd_body.hpp       SimdBody: vector type, loads/stores, fmadd, helpers, grains
//   math_body.hpp       MathBody: exp/erf/erfc/tanh, vector_math, activations
//   gemm_body.hpp       GemmBody: packing, micro-kernels, blocked and few-row paths, gemm
//   lowp_body.hpp       LowpBody: the bf16 / int8 GEMM (A's conversion, micro-kernels), gemm
//   rows_body.hpp       RowsBody: softmax, add + layernorm, embedding, add
//   attention_body.hpp  AttentionBody: fused attention
//   rnn_body.hpp        RnnBody: recurrent weights packing, GRU/LSTM cell, additive attention
// A new kernel family: its body header, included here, and its entries in the table below.
// A new ISA: one kernels/isa_<isa>.cpp calling make_kernel_table with its xsimd architecture.
#pragma once

#include "kernels/attention_body.hpp"
#include "kernels/gemm_body.hpp"
#include "kernels/lowp_body.hpp"
#include "kernels/math_body.hpp"
#include "kernels/rnn_body.hpp"
#include "kernels/rows_body.hpp"
#include "kernels/simd_body.hpp"

namespace tessera::kernels {
namespace {

template <class Arch, Isa kIsa>
constexpr KernelTable make_kernel_table() {
  using Math = MathBody<Arch, kIsa>;
  using Gemm = GemmBody<Arch, kIsa>;
  using Lowp = LowpBody<Arch, kIsa, false>;
  using Rows = RowsBody<Arch, kIsa>;
  using Attention = AttentionBody<Arch, kIsa>;
  using Rnn = RnnBody<Arch, kIsa>;
  return KernelTable{kIsa,
                     Gemm::NR,
                     &Gemm::pack_weights,
                     &Lowp::gemm,
                     &Rows::softmax_rows,
                     &Rows::add_layernorm_rows,
                     &Math::activation,
                     &Rows::add,
                     &Rows::embedding,
                     &Attention::attention,
                     &Gemm::pack_weights_kn,
                     &Math::vector_math,
                     &Gemm::gemm_blocking,
                     Rnn::PW,
                     &Rnn::pack_recurrent,
                     &Rnn::rnn_cell,
                     &Rnn::rnn_bidirectional,
                     &Rnn::additive_attention};
}

}  // namespace
}  // namespace tessera::kernels
