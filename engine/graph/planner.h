// The memory planner: every activation of a graph run gets an offset in one arena.
//
// A value lives from the node that writes it to the last node that reads it (graph outputs to
// the end of the run). Values whose lifetimes do not overlap may share bytes; an operator that
// can write its output over an input (elementwise ops, layernorm, a linear's residual, see
// inplace_input) reuses that input's bytes when the input dies there. Offsets are 64-byte
// aligned. Graph inputs and constants are not in the arena (their memory is the caller's or the
// weights').
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/graph/graph.h"

namespace tessera {

constexpr size_t kArenaAlign = 64;

struct MemoryPlan {
  // Per ValueId: byte offset in the arena, or -1 for values outside it (graph inputs, constants,
  // values no node writes).
  std::vector<int64_t> offset;
  std::vector<size_t> bytes;  // per ValueId: size in bytes (0 outside the arena)
  // Per ValueId: [first, last] node index of its lifetime (-1 outside the arena).
  std::vector<int> first, last;
  size_t arena_bytes = 0;  // the arena size this plan needs
  size_t total_bytes = 0;  // sum of every arena value's (aligned) size: memory with no reuse
  int inplace_count = 0;   // outputs written over a dying input
};

// The input slot of `n` whose buffer output `out_index` may overwrite, or -1.
int inplace_input(const Node& n, size_t out_index);

// Plans `g` for these value sizes (bytes per ValueId; values outside the arena are ignored).
// `external[v]` marks values whose memory is not the arena's (graph inputs, constants).
MemoryPlan plan_memory(const Graph& g, const std::vector<size_t>& value_bytes,
                       const std::vector<bool>& external);

}  // namespace tessera
