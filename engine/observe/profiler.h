// engine/observe/: owns the profiler, machine limits (sysinfo.h) and PNG heatmaps.
// May use: engine/graph/ (observer hooks), engine/io/, kernels/. Used by models/, tools/.
//
// The per-node profiler: a NodeObserver that times every node it sees (the TSC) and counts
// the node's floating-point operations and memory traffic from its operator, attributes and the
// shapes of its inputs and outputs. Aggregated per node name and per operator type, and compared
// with the machine's roofline (engine/observe/sysinfo.h); optionally written as a Chrome trace.
//
// Not set, it costs nothing: the executor calls an observer only when RunContext::observer is
// set. Set, it adds two clock reads, the counting (a few shape lookups) and one record per node.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/graph/executor.h"
#include "engine/observe/sysinfo.h"

namespace tessera {

// What one execution of a node computes and moves, by the model below. Bytes are the compulsory
// traffic: every input, weight and output element once (caches ignored).
//   linear     flops 2·M·N·K; bytes A[M,K] + packed W + bias + C[M,N] (+ residual [M,N])
//   attention  flops 4·B·H·T·S·D + 5·B·H·T·S (QKᵀ and PV, plus the softmax), S = keys attended
//              (ctx.past_len + new keys with a KV cache); bytes q + k + v (S rows) + out
//              (+ attention mask + key padding mask)
//   layernorm  flops 8 per element (+1 with a residual); bytes x (+ residual) + gamma, beta + y
//   add        flops 1 per element; bytes a + b + y
//   activation flops 1 (relu) or 8 (gelu) per element; bytes x + y
//   softmax    flops 5 per element; bytes x + y
//   embedding  flops 1 per element (+1 with positions); bytes ids + table rows (+ position rows)
//              + y
// Call it after the node ran (its outputs are in env; its inputs are not yet released).
struct NodeCost {
  double flops = 0;
  double bytes = 0;
};
NodeCost node_cost(const Graph& g, const Node& n, const std::vector<Tensor>& env,
                   const RunContext& ctx);

// Aggregate of one node name or one operator type.
struct ProfileRow {
  std::string name;
  std::string op;  // the operator (for per-node rows; equal to name for per-op rows)
  int64_t calls = 0;
  double total_s = 0, median_s = 0, share = 0;  // share of the sum of all node times
  double flops = 0, bytes = 0;                  // totals over all calls
  double gflops() const { return total_s > 0 ? flops / total_s / 1e9 : 0; }
  double gbs() const { return total_s > 0 ? bytes / total_s / 1e9 : 0; }
  double intensity() const { return bytes > 0 ? flops / bytes : 0; }
};

class Profiler : public NodeObserver {
 public:
  // trace: keep each node's shapes for the Chrome trace (a little more work per node).
  explicit Profiler(bool trace = false);

  void before(const Graph& g, const Node& n, const std::vector<Tensor>& env,
              const RunContext& ctx) override;
  void after(const Graph& g, const Node& n, const std::vector<Tensor>& env,
             const RunContext& ctx) override;

  // Recording on/off (off: before/after return at once); clear() drops every record.
  void set_enabled(bool on) { enabled_ = on; }
  void clear() {
    records_.clear();
    shape_table_.clear();
    last_shapes_.clear();
  }

  // The shapes of a node's present inputs and its outputs, kept without allocating (the first
  // 6 tensors, up to 4 dims each); formatted only when the trace is written.
  struct Shapes {
    uint8_t count = 0, inputs = 0;
    uint8_t rank[6] = {};
    int64_t dims[6][4] = {};
    std::string str() const;  // "[8, 24, 128] -> [8, 24, 384]"
    bool operator==(const Shapes&) const = default;
  };
  struct Record {
    const Node* node;
    double start_us, dur_us;  // since the profiler was constructed
    NodeCost cost;
    int32_t shapes = -1;  // index into the shape table when tracing, else -1
  };
  const std::vector<Record>& records() const { return records_; }
  // The shapes a record's node saw (null when not tracing). Shapes are kept once per node and
  // distinct shape set, so a repeated node costs a comparison, not a copy.
  const Shapes* shapes_of(const Record& r) const {
    return r.shapes < 0 ? nullptr : &shape_table_[static_cast<size_t>(r.shapes)];
  }
  double total_seconds() const;  // sum of all node times

  // Sorted by total time, descending.
  std::vector<ProfileRow> by_node() const;
  std::vector<ProfileRow> by_op() const;

  // Roofline of a row: min(peak, intensity · bandwidth) in GFLOP/s (the machine's roofs for its
  // thread count), and the fraction of it the row achieved.
  static double bound_gflops(const ProfileRow& r, const SysInfo& m);
  static double fraction_of_bound(const ProfileRow& r, const SysInfo& m);

  // Human-readable table ("operator" or "node" as the first column's title).
  static std::string table(const std::vector<ProfileRow>& rows, const SysInfo& m,
                           const std::string& title, size_t max_rows = 0);
  static nlohmann::json rows_json(const std::vector<ProfileRow>& rows, const SysInfo& m);

  // Trace Event Format: one complete ("X") event per record; pid = process, tid 0 = the thread
  // that runs the graph. Throws Error if the file cannot be written.
  nlohmann::json trace_json() const;
  void write_trace(const std::string& path) const;

 private:
  // Node times are read from the CPU's time-stamp counter (rdtsc: a few ns, against ~25 ns
  // for a steady_clock read), converted with a ticks-per-microsecond rate calibrated once per
  // process against steady_clock. The CPUs Tessera runs on have an invariant TSC.
  static uint64_t ticks();
  static double ticks_per_us();
  bool trace_;
  bool enabled_ = true;
  double us_per_tick_;
  uint64_t origin_;
  uint64_t start_ = 0;
  std::vector<Record> records_;
  std::vector<Shapes> shape_table_;
  std::unordered_map<const Node*, int32_t> last_shapes_;  // node -> its latest shape entry
};

}  // namespace tessera
