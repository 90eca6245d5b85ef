#include "engine/graph/planner.h"

#include <algorithm>
#include <numeric>

namespace tessera {

namespace {

size_t align_up(size_t n) {
  return (n + kArenaAlign - 1) / kArenaAlign * kArenaAlign;
}

}  // namespace

int inplace_input(const Node& n, size_t out_index) {
  if (out_index != 0) return -1;
  switch (n.op) {
    case Op::activation:
    case Op::scale:
    case Op::bias_add:
    case Op::add_positions:
    case Op::softmax:
    case Op::add:
    case Op::layernorm:
      return 0;
    case Op::linear:
      return n.inputs.size() > 1 ? 1 : -1;  // the residual (read before each element is written)
    case Op::attention:
    case Op::embedding:
    case Op::gather:
    case Op::attention_scores:
    case Op::attention_context:
    case Op::constant:
    case Op::rnn_cell:
    case Op::additive_attention:
      return -1;
  }
  return -1;
}

MemoryPlan plan_memory(const Graph& g, const std::vector<size_t>& value_bytes,
                       const std::vector<bool>& external) {
  const size_t nv = g.values().size();
  const auto& nodes = g.nodes();
  const int end = static_cast<int>(nodes.size());
  MemoryPlan p;
  p.offset.assign(nv, -1);
  p.bytes.assign(nv, 0);
  p.first.assign(nv, -1);
  p.last.assign(nv, -1);

  auto in_arena = [&](ValueId v) { return v != kNone && !external[v] && p.first[v] >= 0; };
  for (int i = 0; i < end; ++i)
    for (ValueId v : nodes[i].outputs)
      if (v != kNone && !external[v] && p.first[v] < 0) {
        p.first[v] = p.last[v] = i;
        p.bytes[v] = align_up(std::max<size_t>(value_bytes[v], 1));
      }
  for (int i = 0; i < end; ++i)
    for (ValueId v : nodes[i].inputs)
      if (in_arena(v)) p.last[v] = std::max(p.last[v], i);
  for (ValueId v : g.outputs())
    if (in_arena(v)) p.last[v] = end;

  // Buffers: each value starts in its own; an in-place output joins its dying input's buffer.
  std::vector<int> buffer_of(nv, -1);
  struct Buffer {
    size_t bytes;
    int first, last;
  };
  std::vector<Buffer> buffers;
  for (int i = 0; i < end; ++i) {
    const Node& n = nodes[i];
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      const ValueId v = n.outputs[o];
      if (!in_arena(v) || p.first[v] != i || buffer_of[v] >= 0) continue;
      const int slot = inplace_input(n, o);
      if (slot >= 0 && static_cast<size_t>(slot) < n.inputs.size()) {
        const ValueId in = n.inputs[slot];
        bool ok = in_arena(in) && p.last[in] == i && p.bytes[in] == p.bytes[v];
        // The buffer must not be read by this node through another slot that the kernel does
        // not allow to alias (a linear's A operand).
        if (ok && n.op == Op::linear && n.inputs[0] == in) ok = false;
        // Nor be claimed by another output of this node already.
        for (size_t o2 = 0; ok && o2 < o; ++o2)
          if (n.outputs[o2] != kNone && buffer_of[n.outputs[o2]] == buffer_of[in]) ok = false;
        if (ok && buffer_of[in] >= 0) {
          buffer_of[v] = buffer_of[in];
          Buffer& b = buffers[buffer_of[in]];
          b.last = std::max(b.last, p.last[v]);
          ++p.inplace_count;
          continue;
        }
      }
      buffer_of[v] = static_cast<int>(buffers.size());
      buffers.push_back(Buffer{p.bytes[v], p.first[v], p.last[v]});
    }
  }

  // Largest buffers first, each at the lowest offset free of every placed buffer whose lifetime
  // overlaps its own.
  std::vector<int> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return buffers[a].bytes != buffers[b].bytes ? buffers[a].bytes > buffers[b].bytes
                                                : buffers[a].first < buffers[b].first;
  });
  std::vector<size_t> boff(buffers.size(), 0);
  std::vector<int> placed;
  std::vector<std::pair<size_t, size_t>> busy;  // [begin, end) byte ranges of overlapping ones
  for (int b : order) {
    busy.clear();
    for (int q : placed)
      if (buffers[q].first <= buffers[b].last && buffers[b].first <= buffers[q].last)
        busy.emplace_back(boff[q], boff[q] + buffers[q].bytes);
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (const auto& [lo, hi] : busy) {
      if (at + buffers[b].bytes <= lo) break;
      at = std::max(at, hi);
    }
    boff[b] = at;
    placed.push_back(b);
    p.arena_bytes = std::max(p.arena_bytes, at + buffers[b].bytes);
  }
  for (size_t v = 0; v < nv; ++v) {
    if (buffer_of[v] < 0) continue;
    p.offset[v] = static_cast<int64_t>(boff[buffer_of[v]]);
    p.total_bytes += p.bytes[v];
  }
  return p;
}

}  // namespace tessera
