// The executor: runs a graph's nodes in order, each node calling one kernel.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace tessera {

// Keys and values of every cached attention layer of a decoder: slot s holds
//   k[s], v[s]: [batch, capacity, width]   (width = heads * head_dim)
// Positions [0, length) are filled; a decode step appends at `length`.
struct KVCache {
  int64_t batch = 0, capacity = 0, width = 0;
  std::vector<Tensor> k, v;
  void reset(int slots, int64_t batch_size, int64_t capacity_tokens, int64_t row_width);
};

struct RunContext;

// Watches a graph run node by node (the profiler, attention-map extraction). `env` holds every
// value by ValueId: a node's inputs before it runs, and its outputs too after it ran. With no
// observer set, the executor makes no extra call at all.
class NodeObserver {
 public:
  virtual ~NodeObserver() = default;
  virtual void before(const Graph& g, const Node& n, const std::vector<Tensor>& env,
                      const RunContext& ctx) = 0;
  virtual void after(const Graph& g, const Node& n, const std::vector<Tensor>& env,
                     const RunContext& ctx) = 0;
};

// Per-call state a graph run reads: the session's KV cache, how many positions it holds, and an
// optional observer.
struct RunContext {
  KVCache* cache = nullptr;
  int64_t past_len = 0;
  NodeObserver* observer = nullptr;
};

using TensorMap = std::map<std::string, Tensor>;

// Runs `graph` on named inputs (every non-optional input must be present) and returns its
// outputs by name. Throws Error on inputs whose shapes the operators cannot take.
TensorMap execute(const Graph& graph, const TensorMap& inputs, RunContext& ctx);

}  // namespace tessera
