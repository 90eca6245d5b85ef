// The executor: runs a graph's nodes in order, each node calling one kernel. Activations live in
// one arena per GraphSession, at the offsets of a memory plan (engine/graph/planner.h) cached per
// input shape: a run with a shape seen before allocates nothing per node.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/graph/graph.h"
#include "engine/graph/planner.h"

namespace tessera {

// Keys and values of every cached attention layer of a decoder: slot s holds
//   k[s], v[s]: [batch, capacity, width]   (width = heads * head_dim)
// Positions [0, length) are filled; a decode step appends at `length`.
struct KVCache {
  int64_t batch = 0, capacity = 0, width = 0;
  std::vector<Tensor> k, v;
  // Allocates slots x (k, v) [batch, capacity, width] (checked against physical memory first).
  // touch: one block for all slots (huge pages from 2 MiB up), every page written now, so
  // filling the cache later takes no page faults (a continuous batch's rows: a decode step of
  // 16 rows would otherwise fault ~300 fresh 4 KiB pages, half the time of its attention on a
  // VM); else pages are mapped as positions are written.
  void reset(int slots, int64_t batch_size, int64_t capacity_tokens, int64_t row_width,
             bool touch = false);
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
  // Continuous batching (engine/generate/rows.h): row b of the batch has a cache of its own,
  // rows[b].cache (batch 1), holding rows[b].past_len positions; the cached attention appends
  // row b's new keys and values there and attends over them alone, exactly as it would for that
  // row run by itself. Needs the fused attention (the fuse_attention pass) and no masks; `cache`
  // and `past_len` are then unused.
  struct RowCache {
    KVCache* cache = nullptr;
    int64_t past_len = 0;
  };
  std::vector<RowCache> rows;
};

using TensorMap = std::map<std::string, Tensor>;

// Shapes of every value of `graph` for these inputs (by ValueId; empty for absent optional
// inputs and values no node writes). Throws Error when an operator cannot take its input shapes.
std::vector<Shape> infer_shapes(const Graph& graph, const TensorMap& inputs, int64_t past_len = 0);

// Runs one graph repeatedly. Holds the arena and the memory plans, one per input signature
// (which inputs are present, their dtypes and shapes, and past_len where a shape depends on it).
// The arena only grows; a run with a signature seen before reuses its plan and allocates
// nothing per node (only the returned outputs are allocated: they are copied out of the arena,
// so they stay valid after later runs). Runs of one session are serialized by a mutex. The
// session keeps a reference to the last run's input tensors until the next run (reassigning
// them then reuses their shape storage).
class GraphSession {
 public:
  explicit GraphSession(const Graph& graph);
  ~GraphSession();
  GraphSession(const GraphSession&) = delete;
  GraphSession& operator=(const GraphSession&) = delete;

  TensorMap run(const TensorMap& inputs, RunContext& ctx);
  // The plan for these inputs (computed and cached if new).
  const MemoryPlan& plan(const TensorMap& inputs, int64_t past_len = 0);
  const Graph& graph() const { return graph_; }
  size_t arena_bytes() const;  // current arena capacity
  size_t cached_plans() const;

 private:
  struct Cached;
  Cached& lookup(const TensorMap& inputs, int64_t past_len);
  const Graph& graph_;
  bool shapes_need_past_ = false;
  mutable std::mutex mu_;
  std::vector<int64_t> key_;
  std::map<std::vector<int64_t>, std::unique_ptr<Cached>> plans_;
  Tensor arena_;
  uint64_t arena_generation_ = 0;
};

// The graph sessions of one caller: one GraphSession per graph, made on first use. A model keeps
// a set of its own and runs each graph on the set bound to the calling thread, else on its own:
//
//   SessionSet mine;                       // a tessera::Session's, or a generation session's
//   { SessionSet::Bind bind(mine); model.run(inputs); }   // arenas and plans from `mine`
//
// Callers that bring no set share the model's (each GraphSession serializes its runs), callers
// with sets of their own share nothing but the immutable graphs and weights, so they run at once.
// A set must outlive the runs bound to it; it may be used by one thread at a time.
class SessionSet {
 public:
  SessionSet() = default;
  SessionSet(const SessionSet&) = delete;
  SessionSet& operator=(const SessionSet&) = delete;

  GraphSession& get(const Graph& graph);  // thread-safe
  size_t arena_bytes() const;             // summed over the graphs' sessions

  // The set bound to this thread (innermost Bind), else `fallback`.
  static SessionSet& current_or(SessionSet& fallback);

  // Binds a set to this thread for the guard's lifetime (nestable; restores the previous one).
  class Bind {
   public:
    explicit Bind(SessionSet& set);
    ~Bind();
    Bind(const Bind&) = delete;
    Bind& operator=(const Bind&) = delete;

   private:
    SessionSet* previous_;
  };

 private:
  mutable std::mutex mu_;
  std::map<const Graph*, std::unique_ptr<GraphSession>> sessions_;
};

// Runs `graph` once on named inputs (every non-optional input must be present) and returns its
// outputs by name (a one-off GraphSession). Throws Error on inputs whose shapes the operators
// cannot take.
TensorMap execute(const Graph& graph, const TensorMap& inputs, RunContext& ctx);

}  // namespace tessera
