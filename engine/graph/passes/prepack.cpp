// Weight prepacking: every matrix a linear node reads is packed once into the GEMM's blocked
// layout (kernels::pack_weights). The f32 original is then dropped where no node of any graph
// reads it as f32 (biases, tables, constants keep theirs), and when it is a view of the mapped
// weight file its pages are released (madvise MADV_DONTNEED) right after packing, so the
// resident set never holds the packed and the mapped copy of the same weight at once.
// Entries no node reads any more (the parts of a fused q/k/v projection) drop their views too.
// A weight stored [K, N] (Entry::kn_layout, Hugging Face Conv1D) is packed with pack_weights_kn.
// An embedding table that is also a GEMM weight (a tied LM head) is read by gather/embedding
// from the packed copy (kernels::packed_rows), so its f32 original is dropped as well.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

#include "engine/graph/passes/passes.h"

namespace tessera::passes {

namespace {

// Releases the whole pages inside [p, p + bytes) of a read-only file mapping: they are dropped
// from the resident set (and would be read back from the file if touched again).
void release_pages(const void* p, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

int prepack(const std::vector<Graph*>& graphs) {
  if (graphs.empty()) return 0;
  WeightSet* ws = graphs[0]->mutable_weights();
  if (!ws) return 0;
  for (const Graph* g : graphs)
    if (g->mutable_weights() != ws) return 0;  // not one shared set: leave it alone
  const size_t nw = ws->entries.size();
  std::vector<bool> gemm(nw, false), f32(nw, false), table(nw, false);
  for (const Graph* g : graphs)
    for (const auto& n : g->nodes()) {
      const auto& a = n.attrs;
      if (n.op == Op::linear && a.weight >= 0) gemm[a.weight] = true;
      if (n.op == Op::constant && a.weight >= 0) f32[a.weight] = true;
      for (int w : {a.bias, a.gamma, a.beta, a.pos_table})
        if (w >= 0) f32[w] = true;
      if (a.table >= 0) table[a.table] = true;
    }
  int packed = 0;
  for (size_t i = 0; i < nw; ++i) {
    auto& e = ws->entries[i];
    if (table[i] && !gemm[i]) f32[i] = true;  // a plain table: gathered from its f32 rows
    if (!gemm[i] || !e.packed.empty() || e.tensor.empty()) continue;
    if (e.kn_layout)
      e.packed = kernels::pack_weights_kn(e.tensor.data<float>(), e.tensor.dim(0), e.tensor.dim(1),
                                          e.tensor.dim(1));
    else
      e.packed = kernels::pack_weights(e.tensor.data<float>(), e.tensor.dim(0), e.tensor.dim(1),
                                       e.tensor.dim(1));
    ++packed;
    if (!f32[i]) {
      if (e.mapped) release_pages(e.tensor.raw(), e.tensor.nbytes());
      e.tensor = Tensor();
      e.base = Tensor();
    }
  }
  // Views nothing reads any more (their mapped pages go too: a private read-only mapping
  // reads them back from the file should anything touch them again).
  for (size_t i = 0; i < nw; ++i)
    if (!gemm[i] && !f32[i] && !table[i]) {
      auto& e = ws->entries[i];
      if (e.mapped && !e.tensor.empty()) release_pages(e.tensor.raw(), e.tensor.nbytes());
      ws->entries[i].tensor = Tensor();
      ws->entries[i].base = Tensor();
    }
  return packed;
}

}  // namespace tessera::passes
