// Weight prepacking: every matrix a linear node reads is packed once into the GEMM's blocked
// layout, as the model's weight type (WeightSet::gemm_type: f32, bf16 or int8; from the f32
// tensor, or from the BF16 / I8 data as stored: pack_weight). The original is then dropped where no
// node of any graph reads it as f32 (biases, tables, constants keep theirs), and when it is a view
// of the mapped weight file its pages are released (madvise MADV_DONTNEED) right after packing, so
// the resident set never holds the packed and the mapped copy of the same weight at once. Entries
// no node reads any more (the parts of a fused q/k/v projection) drop their views too. A weight
// stored [K, N] (Entry::kn_layout, Hugging Face Conv1D) is packed with pack_weights_kn. An
// embedding table that is also a GEMM weight (a tied LM head) is read by gather/embedding from the
// packed copy (kernels::packed_rows), so its f32 original is dropped as well.
//
// finalize_weights (run after the pipeline whatever the options) then checks what is still held
// in reduced precision: BF16 read as f32 is converted, I8 anywhere but a GEMM is refused.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <set>
#include <string>

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

namespace {

// How the nodes of all the graphs read each weight: as a GEMM's matrix, as f32 data (biases,
// norms, positions, constants), as an embedding table.
struct Readers {
  std::vector<bool> gemm, f32, table;
};

Readers readers(const std::vector<Graph*>& graphs, size_t nw) {
  Readers r{std::vector<bool>(nw, false), std::vector<bool>(nw, false),
            std::vector<bool>(nw, false)};
  for (const Graph* g : graphs)
    for (const auto& n : g->nodes()) {
      const auto& a = n.attrs;
      if (n.op == Op::linear && a.weight >= 0) r.gemm[a.weight] = true;
      if (n.op == Op::constant && a.weight >= 0) r.f32[a.weight] = true;
      for (int w : {a.bias, a.gamma, a.beta, a.pos_table})
        if (w >= 0) r.f32[w] = true;
      if (a.table >= 0) r.table[a.table] = true;
    }
  return r;
}

// The one WeightSet all graphs share, or null.
WeightSet* shared_weights(const std::vector<Graph*>& graphs) {
  if (graphs.empty()) return nullptr;
  WeightSet* ws = graphs[0]->mutable_weights();
  for (const Graph* g : graphs)
    if (g->mutable_weights() != ws) return nullptr;  // not one shared set: leave it alone
  return ws;
}

std::string stored_name(const WeightSet::Entry& e) {
  return e.sources.empty() ? e.name : e.sources.front();
}

}  // namespace

int prepack(const std::vector<Graph*>& graphs) {
  WeightSet* ws = shared_weights(graphs);
  if (!ws) return 0;
  const size_t nw = ws->entries.size();
  Readers r = readers(graphs, nw);
  auto& gemm = r.gemm;
  auto& f32 = r.f32;
  auto& table = r.table;
  int packed = 0;
  for (size_t i = 0; i < nw; ++i) {
    auto& e = ws->entries[i];
    if (table[i] && !gemm[i]) f32[i] = true;  // a plain table: gathered from its f32 rows
    if (!gemm[i] || !e.packed.empty() || e.tensor.empty()) continue;
    e.packed = pack_weight(e, ws->gemm_type);
    ++packed;
    if (!f32[i]) {
      if (e.mapped) release_pages(e.tensor.raw(), e.tensor.nbytes());
      e.tensor = Tensor();
      e.base = Tensor();
      e.scale = Tensor();
      e.base_scale = Tensor();
    }
  }
  // Views nothing reads any more (their mapped pages go too: a private read-only mapping
  // reads them back from the file should anything touch them again).
  for (size_t i = 0; i < nw; ++i)
    if (!gemm[i] && !f32[i] && !table[i]) {
      auto& e = ws->entries[i];
      if (e.mapped && !e.tensor.empty()) release_pages(e.tensor.raw(), e.tensor.nbytes());
      e.tensor = Tensor();
      e.base = Tensor();
      e.scale = Tensor();
      e.base_scale = Tensor();
    }
  return packed;
}

void finalize_weights(const std::vector<Graph*>& graphs) {
  WeightSet* ws = shared_weights(graphs);
  if (!ws) return;
  const size_t nw = ws->entries.size();
  const Readers r = readers(graphs, nw);
  // The checkpoint tensors some GEMM reads.
  std::set<std::string> gemm_sources;
  for (size_t i = 0; i < nw; ++i)
    if (r.gemm[i])
      gemm_sources.insert(ws->entries[i].sources.begin(), ws->entries[i].sources.end());
  for (size_t i = 0; i < nw; ++i) {
    auto& e = ws->entries[i];
    // A table that is also a GEMM weight is gathered from the packed copy once there is one.
    const bool via_packed = r.table[i] && r.gemm[i];
    const bool reads_f32 = r.f32[i] || (r.table[i] && !via_packed);
    e.gemm = r.gemm[i];
    e.reads_f32 = reads_f32;
    if (e.tensor.empty() || e.tensor.dtype() == DType::f32) continue;
    if (e.tensor.dtype() == DType::i8) {
      bool gemm_weight = !e.sources.empty();
      for (const auto& s : e.sources) gemm_weight = gemm_weight && gemm_sources.count(s);
      if (!gemm_weight || reads_f32)
        throw Error("tensor '" + stored_name(e) +
                    "' is I8 (int8 weights), but it is not a GEMM weight of this model: only the "
                    "matrices of its linear layers may be stored int8");
      if (via_packed && e.packed.empty()) e.packed = pack_weight(e, ws->gemm_type);
      if (via_packed) {
        e.tensor = Tensor();
        e.scale = Tensor();
      }
      continue;
    }
    if (reads_f32 || (via_packed && e.packed.empty())) {  // BF16 (F16 never stays)
      e.tensor = e.tensor.to_f32();
      e.mapped = false;
    }
  }
}

}  // namespace tessera::passes
