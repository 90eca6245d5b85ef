// The oneDNN GEMM backend: gemm() through oneDNN's matmul primitive (TESSERA_GEMM=onednn or
// set_gemm_backend(GemmBackend::onednn)). Compiled with the baseline flags; oneDNN dispatches
// on the CPU itself. Without libdnnl at configure time (TESSERA_HAVE_ONEDNN undefined) the
// backend reports itself unavailable.
//
//   C [M, N] = epilogue(A [M, K] · B [K, N]),  B = Wᵀ
// * Primitives: one per (M, K, N, lda, ldc, bias?, activation, residual kind, ld_residual),
//   created at first use and cached (a mutex-guarded map; execution is thread-safe).
// * Weights: oneDNN picks its layout (format_tag::any); W is unpacked from Tessera's panels
//   once and reordered into that layout, cached in the PackedWeights' backend slot (one copy
//   per distinct layout oneDNN asks for; in practice one).
// * Epilogue as post-ops: bias as matmul's bias, then eltwise (relu, gelu_erf, gelu_tanh),
//   then the residual: a sum post-op when it aliases C (C's old value is added), else a binary
//   add of a [M, N] tensor with row stride ld_residual.
#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"

#ifdef TESSERA_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace tessera::kernels::detail {

#ifndef TESSERA_HAVE_ONEDNN

bool onednn_built() {
  return false;
}
void onednn_gemm(int64_t, const float*, int64_t, const PackedWeights&, float*, int64_t,
                 const Epilogue&) {
  throw std::runtime_error("tessera: the oneDNN GEMM backend is not built in");
}

#else

namespace {

using dnnl::memory;
using Dims = memory::dims;

enum class ResidualKind : int { none, aliased, separate };

struct Key {
  int64_t m, k, n, lda, ldc, ldr;
  bool bias;
  Activation act;
  ResidualKind res;
  bool operator<(const Key& o) const {
    return std::tie(m, k, n, lda, ldc, ldr, bias, act, res) <
           std::tie(o.m, o.k, o.n, o.lda, o.ldc, o.ldr, o.bias, o.act, o.res);
  }
};

struct Prepared {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

struct Backend {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mutex;
  std::map<Key, std::shared_ptr<Prepared> > primitives;
};

Backend& backend() {
  static Backend b;
  return b;
}

// The weights of one PackedWeights in oneDNN's layouts.
struct WeightsCache {
  std::vector<std::pair<memory::desc, memory> > layouts;
};

std::shared_ptr<Prepared> prepare(const Key& key) {
  Backend& be = backend();
  {
    std::lock_guard<std::mutex> lock(be.mutex);
    auto it = be.primitives.find(key);
    if (it != be.primitives.end()) return it->second;
  }
  const memory::desc a_md(Dims{key.m, key.k}, memory::data_type::f32, Dims{key.lda, 1});
  const memory::desc b_md(Dims{key.k, key.n}, memory::data_type::f32, memory::format_tag::any);
  const memory::desc c_md(Dims{key.m, key.n}, memory::data_type::f32, Dims{key.ldc, 1});
  dnnl::post_ops po;
  switch (key.act) {
    case Activation::none:
      break;
    case Activation::relu:
      po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      break;
    case Activation::gelu_erf:
      po.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
      break;
    case Activation::gelu_tanh:
      po.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
      break;
  }
  if (key.res == ResidualKind::aliased) po.append_sum(1.0f);
  if (key.res == ResidualKind::separate) {
    po.append_binary(dnnl::algorithm::binary_add,
                     memory::desc(Dims{key.m, key.n}, memory::data_type::f32, Dims{key.ldr, 1}));
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  auto desc = key.bias
                  ? dnnl::matmul::desc(
                        a_md, b_md,
                        memory::desc(Dims{1, key.n}, memory::data_type::f32, Dims{key.n, 1}), c_md)
                  : dnnl::matmul::desc(a_md, b_md, c_md);
  auto prepared = std::make_shared<Prepared>();
  prepared->pd = dnnl::matmul::primitive_desc(desc, attr, be.engine);
  prepared->prim = dnnl::matmul(prepared->pd);
  std::lock_guard<std::mutex> lock(be.mutex);
  return be.primitives.emplace(key, prepared).first->second;  // a racing creator's copy wins
}

// W in the layout `want`, reordered once per layout and cached in the weights' slot.
memory weights_for(const PackedWeights& w, const memory::desc& want) {
  BackendSlot* slot = w.backend_slot();
  std::lock_guard<std::mutex> lock(slot->mutex);
  if (!slot->data) slot->data = std::make_shared<WeightsCache>();
  auto* cache = static_cast<WeightsCache*>(slot->data.get());
  for (auto& [md, mem] : cache->layouts) {
    if (md == want) return mem;
  }
  // W [N, K] row-major out of Tessera's panels, seen by oneDNN as B [K, N] with strides (1, K).
  const int64_t n = w.n(), k = w.k();
  std::vector<float> plain(static_cast<size_t>(n * k));
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) rows[static_cast<size_t>(j)] = j;
  packed_rows(w, rows.data(), n, plain.data(), k);
  Backend& be = backend();
  const memory::desc src_md(Dims{k, n}, memory::data_type::f32, Dims{1, k});
  memory src(src_md, be.engine, plain.data());
  memory dst(want, be.engine);
  dnnl::stream s(be.engine);
  dnnl::reorder(src, dst).execute(s, src, dst);
  s.wait();
  cache->layouts.emplace_back(want, dst);
  return dst;
}

}  // namespace

bool onednn_built() {
  return true;
}

void onednn_gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                 int64_t ldc, const Epilogue& ep) {
  if (m <= 0) return;
  ResidualKind res = ResidualKind::none;
  if (ep.residual != nullptr) {
    res = (ep.residual == c && ep.ld_residual == ldc) ? ResidualKind::aliased
                                                      : ResidualKind::separate;
  }
  const Key key{m,
                w.k(),
                w.n(),
                lda,
                ldc,
                res == ResidualKind::separate ? ep.ld_residual : 0,
                ep.bias != nullptr,
                ep.act,
                res};
  const std::shared_ptr<Prepared> p = prepare(key);
  Backend& be = backend();
  const memory weights = weights_for(w, p->pd.weights_desc());
  memory a_mem(p->pd.src_desc(), be.engine, const_cast<float*>(a));
  memory c_mem(p->pd.dst_desc(), be.engine, c);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, c_mem}};
  if (ep.bias != nullptr) {
    args.emplace(DNNL_ARG_BIAS, memory(p->pd.bias_desc(), be.engine, const_cast<float*>(ep.bias)));
  }
  if (res == ResidualKind::separate) {
    const int idx = ep.act == Activation::none ? 0 : 1;  // position of the binary post-op
    args.emplace(
        DNNL_ARG_ATTR_MULTIPLE_POST_OP(idx) | DNNL_ARG_SRC_1,
        memory(memory::desc(Dims{m, w.n()}, memory::data_type::f32, Dims{ep.ld_residual, 1}),
               be.engine, const_cast<float*>(ep.residual)));
  }
  // oneDNN sizes its OpenMP team from omp_get_max_threads(): give it the kernels' thread count
  // for this call (the setting is per calling thread), then restore it.
  const int before = omp_get_max_threads();
  omp_set_num_threads(num_threads());
  dnnl::stream s(be.engine);
  p->prim.execute(s, args);
  s.wait();
  omp_set_num_threads(before);
}

#endif  // TESSERA_HAVE_ONEDNN

}  // namespace tessera::kernels::detail
