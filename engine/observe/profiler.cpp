#include "engine/observe/profiler.h"

#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/io/error.h"

namespace tessera {

namespace {

constexpr double kF32 = 4.0;

const Tensor* input_or_null(const Node& n, size_t i, const std::vector<Tensor>& env) {
  if (i >= n.inputs.size() || n.inputs[i] == kNone) return nullptr;
  const Tensor& t = env[n.inputs[i]];
  return t.empty() ? nullptr : &t;
}

double nbytes(const Tensor* t) {
  return t ? static_cast<double>(t->nbytes()) : 0.0;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  double m = v[mid];
  if (v.size() % 2 == 0) m = (m + *std::max_element(v.begin(), v.begin() + mid)) / 2;
  return m;
}

std::string fmt(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// Significant digits that stay readable from 0.001 to 100000.
std::string num(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  return fmt(v, a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
}

}  // namespace

NodeCost node_cost(const Graph& g, const Node& n, const std::vector<Tensor>& env,
                   const RunContext& ctx) {
  NodeCost c;
  const Tensor* x = input_or_null(n, 0, env);
  const Tensor* y = n.outputs.empty() ? nullptr : &env[n.outputs[0]];
  if (y && y->empty()) y = nullptr;
  switch (n.op) {
    case Op::linear: {
      const auto& w = g.weights().at(n.attrs.weight).packed;
      const double k = static_cast<double>(w.k()), nn = static_cast<double>(w.n());
      const double m = x ? static_cast<double>(x->numel()) / k : 0;
      c.flops = 2 * m * nn * k;
      c.bytes = m * k * kF32 + static_cast<double>(w.bytes()) + m * nn * kF32;
      if (n.attrs.bias >= 0) c.bytes += nn * kF32;
      if (input_or_null(n, 1, env)) c.bytes += m * nn * kF32;  // residual
      return c;
    }
    case Op::attention: {
      const Tensor* kvs = input_or_null(n, 1, env);
      if (!x || !kvs) return c;
      const double b = static_cast<double>(x->dim(0)), t = static_cast<double>(x->dim(1));
      const double h = static_cast<double>(n.attrs.heads),
                   d = static_cast<double>(n.attrs.head_dim);
      double s = static_cast<double>(kvs->dim(1));
      if (n.attrs.cache_slot >= 0) s += static_cast<double>(ctx.past_len);
      c.flops = 4 * b * h * t * s * d + 5 * b * h * t * s;
      c.bytes = (b * t * h * d * 2 + b * s * h * d * 2) * kF32;  // q, out; k, v
      c.bytes += nbytes(input_or_null(n, 2, env)) + nbytes(input_or_null(n, 3, env));
      return c;
    }
    case Op::layernorm: {
      if (!x) return c;
      const double e = static_cast<double>(x->numel());
      const Tensor* r = input_or_null(n, 1, env);
      c.flops = e * (r ? 9 : 8);
      c.bytes = nbytes(x) + nbytes(r) + nbytes(y);
      const double dim = static_cast<double>(x->dim(-1));
      if (n.attrs.gamma >= 0) c.bytes += dim * kF32;
      if (n.attrs.beta >= 0) c.bytes += dim * kF32;
      return c;
    }
    case Op::add: {
      if (!x) return c;
      c.flops = static_cast<double>(x->numel());
      c.bytes = nbytes(x) + nbytes(input_or_null(n, 1, env)) + nbytes(y);
      return c;
    }
    case Op::activation: {
      if (!x) return c;
      const double per = n.attrs.act == kernels::Activation::relu   ? 1
                         : n.attrs.act == kernels::Activation::none ? 0
                                                                    : 8;
      c.flops = per * static_cast<double>(x->numel());
      c.bytes = nbytes(x) + nbytes(y);
      return c;
    }
    case Op::softmax: {
      if (!x) return c;
      c.flops = 5 * static_cast<double>(x->numel());
      c.bytes = nbytes(x) + nbytes(y);
      return c;
    }
    case Op::embedding: {
      if (!x || !y) return c;
      const double e = static_cast<double>(y->numel());
      const bool pos = n.attrs.pos_table >= 0;
      c.flops = e * (pos ? 2 : 1);
      c.bytes = nbytes(x) + e * kF32 * (pos ? 3 : 2);  // ids, table rows, (position rows), y
      return c;
    }
    case Op::rnn_cell: {
      // x: the input gates [.., G*H] of every row and step; attrs.weight: W_hh (packed for the
      // cell, n = G*H, k = H); attrs.heads: directions (2 for a bidirectional layer, whose
      // second input is the backward direction's gates). Per row and step: 2·G·H·H for W_hh h
      // and ~10·G·H for the gates; bytes: the gates, W_hh once per direction, the outputs.
      if (!x || n.attrs.weight < 0) return c;
      const auto& w = g.weights().at(n.attrs.weight).packed;
      const double gh = static_cast<double>(w.n()), hh = static_cast<double>(w.k());
      const double dirs = static_cast<double>(std::max<int64_t>(1, n.attrs.heads));
      const double m = static_cast<double>(x->numel()) / gh;  // rows x steps, one direction
      c.flops = dirs * (2 * m * gh * hh + 10 * m * gh);
      c.bytes =
          dirs * (static_cast<double>(x->nbytes()) + static_cast<double>(w.bytes())) + nbytes(y);
      return c;
    }
    case Op::additive_attention: {
      // Inputs query [R, A], keys [B0, S, A], memory [B0, S, D]; output alpha [R, S]. Per row
      // and source position: A adds, A tanh (~10 flops), A FMAs for the score, D FMAs for the
      // context; bytes: the row's keys and memory, query, alpha and the context.
      const Tensor* keys = input_or_null(n, 1, env);
      const Tensor* mem = input_or_null(n, 2, env);
      if (!x || !keys || !mem || keys->rank() != 3 || mem->rank() != 3) return c;
      const double r = static_cast<double>(x->dim(0)), s = static_cast<double>(keys->dim(1));
      const double a = static_cast<double>(keys->dim(2)), d = static_cast<double>(mem->dim(2));
      c.flops = r * s * (13 * a + 2 * d + 5);
      c.bytes = (r * s * (a + d + 1) + r * (a + d)) * kF32;
      return c;
    }
    default: {  // the plain operators the passes fuse (graph run with passes off)
      c.bytes = nbytes(x) + nbytes(input_or_null(n, 1, env)) + nbytes(y);
      c.flops = y ? static_cast<double>(y->numel()) : 0;
      return c;
    }
  }
  return c;
}

uint64_t Profiler::ticks() {
  return __rdtsc();
}

double Profiler::ticks_per_us() {
  // Spin 2 ms on steady_clock and count the ticks: the rate is exact to ~0.1 %.
  static const double rate = [] {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const uint64_t c0 = ticks();
    auto t1 = t0;
    while (t1 - t0 < std::chrono::milliseconds(2)) t1 = Clock::now();
    const uint64_t c1 = ticks();
    const double us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    return static_cast<double>(c1 - c0) / us;
  }();
  return rate;
}

Profiler::Profiler(bool trace)
    : trace_(trace), us_per_tick_(1.0 / ticks_per_us()), origin_(ticks()) {
  records_.reserve(1 << 14);
}

void Profiler::before(const Graph&, const Node&, const std::vector<Tensor>&, const RunContext&) {
  if (enabled_) start_ = ticks();
}

void Profiler::after(const Graph& g, const Node& n, const std::vector<Tensor>& env,
                     const RunContext& ctx) {
  if (!enabled_) return;
  const uint64_t end = ticks();
  Record& r = records_.emplace_back();
  r.node = &n;
  r.start_us = static_cast<double>(start_ - origin_) * us_per_tick_;
  r.dur_us = static_cast<double>(end - start_) * us_per_tick_;
  r.cost = node_cost(g, n, env, ctx);
  if (trace_) {
    Shapes sh;
    auto keep = [&sh](const Tensor& t) {
      if (sh.count >= 6) return;
      const int rank = std::min(t.rank(), 4);
      sh.rank[sh.count] = static_cast<uint8_t>(t.rank());
      for (int d = 0; d < rank; ++d) sh.dims[sh.count][d] = t.shape()[d];
      ++sh.count;
    };
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (const Tensor* t = input_or_null(n, i, env)) keep(*t);
    sh.inputs = sh.count;
    for (ValueId v : n.outputs) keep(env[v]);
    auto [it, fresh] = last_shapes_.try_emplace(&n, -1);
    if (fresh || !(shape_table_[static_cast<size_t>(it->second)] == sh)) {
      it->second = static_cast<int32_t>(shape_table_.size());
      shape_table_.push_back(sh);
    }
    r.shapes = it->second;
  }
}

std::string Profiler::Shapes::str() const {
  std::string s;
  for (int i = 0; i < count; ++i) {
    if (i == inputs)
      s += " -> ";
    else if (i > 0)
      s += ", ";
    s += '[';
    for (int d = 0; d < rank[i]; ++d) {
      if (d) s += ", ";
      if (d >= 4) {
        s += "...";
        break;
      }
      s += std::to_string(dims[i][d]);
    }
    s += ']';
  }
  if (inputs == count) s += " -> ";
  return s;
}

double Profiler::total_seconds() const {
  double t = 0;
  for (const auto& r : records_) t += r.dur_us;
  return t * 1e-6;
}

namespace {

std::vector<ProfileRow> aggregate(const std::vector<Profiler::Record>& records, bool per_op) {
  std::map<std::string, ProfileRow> rows;
  std::map<std::string, std::vector<double>> times;
  std::vector<std::string> order;  // first appearance
  double total = 0;
  for (const auto& r : records) {
    const std::string key = per_op ? op_name(r.node->op) : r.node->name;
    auto [it, fresh] = rows.try_emplace(key);
    ProfileRow& row = it->second;
    if (fresh) {
      row.name = key;
      row.op = op_name(r.node->op);
      order.push_back(key);
    }
    row.calls += 1;
    row.total_s += r.dur_us * 1e-6;
    row.flops += r.cost.flops;
    row.bytes += r.cost.bytes;
    times[key].push_back(r.dur_us * 1e-6);
    total += r.dur_us * 1e-6;
  }
  std::vector<ProfileRow> out;
  for (const auto& key : order) {
    ProfileRow row = rows[key];
    row.median_s = median_of(times[key]);
    row.share = total > 0 ? row.total_s / total : 0;
    out.push_back(std::move(row));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const ProfileRow& a, const ProfileRow& b) { return a.total_s > b.total_s; });
  return out;
}

}  // namespace

std::vector<ProfileRow> Profiler::by_node() const {
  return aggregate(records_, false);
}
std::vector<ProfileRow> Profiler::by_op() const {
  return aggregate(records_, true);
}

double Profiler::bound_gflops(const ProfileRow& r, const SysInfo& m) {
  return std::min(m.peak_gflops(), r.intensity() * m.bandwidth_gbs());
}

double Profiler::fraction_of_bound(const ProfileRow& r, const SysInfo& m) {
  const double b = bound_gflops(r, m);
  return b > 0 ? r.gflops() / b : 0;
}

std::string Profiler::table(const std::vector<ProfileRow>& rows, const SysInfo& m,
                            const std::string& title, size_t max_rows) {
  size_t w = title.size();
  const size_t shown = max_rows ? std::min(max_rows, rows.size()) : rows.size();
  for (size_t i = 0; i < shown; ++i) w = std::max(w, rows[i].name.size());
  const bool per_node = title != "operator";
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-*s %s%6s %10s %10s %6s %9s %8s %8s %9s %7s\n",
                static_cast<int>(w), title.c_str(), per_node ? "op         " : "", "calls",
                "total ms", "median us", "share", "GFLOP/s", "GB/s", "flop/B", "bound", "%bound");
  o << buf;
  double total_s = 0, flops = 0, bytes = 0;
  for (const auto& r : rows) {
    total_s += r.total_s;
    flops += r.flops;
    bytes += r.bytes;
  }
  for (size_t i = 0; i < shown; ++i) {
    const auto& r = rows[i];
    std::snprintf(
        buf, sizeof buf, "%-*s %s%6lld %10.3f %10.1f %5.1f%% %9s %8s %8s %9s %6.1f%%\n",
        static_cast<int>(w), r.name.c_str(),
        per_node ? (r.op + std::string(11 - std::min<size_t>(11, r.op.size()), ' ')).c_str() : "",
        static_cast<long long>(r.calls), r.total_s * 1e3, r.median_s * 1e6, r.share * 100,
        num(r.gflops()).c_str(), num(r.gbs()).c_str(), num(r.intensity()).c_str(),
        num(bound_gflops(r, m)).c_str(), fraction_of_bound(r, m) * 100);
    o << buf;
  }
  if (shown < rows.size()) o << "... " << rows.size() - shown << " more rows (--json has all)\n";
  std::snprintf(buf, sizeof buf, "%-*s %s%6s %10.3f %10s %5.1f%% %9s %8s %8s\n",
                static_cast<int>(w), "total", per_node ? "           " : "", "", total_s * 1e3, "",
                100.0, num(total_s > 0 ? flops / total_s / 1e9 : 0).c_str(),
                num(total_s > 0 ? bytes / total_s / 1e9 : 0).c_str(),
                num(bytes > 0 ? flops / bytes : 0).c_str());
  o << buf;
  return o.str();
}

nlohmann::json Profiler::rows_json(const std::vector<ProfileRow>& rows, const SysInfo& m) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& r : rows) {
    a.push_back({{"name", r.name},
                 {"op", r.op},
                 {"calls", r.calls},
                 {"total_ms", r.total_s * 1e3},
                 {"median_us", r.median_s * 1e6},
                 {"share", r.share},
                 {"flops", r.flops},
                 {"bytes", r.bytes},
                 {"gflops", r.gflops()},
                 {"gbs", r.gbs()},
                 {"intensity", r.intensity()},
                 {"bound_gflops", bound_gflops(r, m)},
                 {"fraction_of_bound", fraction_of_bound(r, m)}});
  }
  return a;
}

nlohmann::json Profiler::trace_json() const {
  nlohmann::json events = nlohmann::json::array();
  const int pid = static_cast<int>(getpid());
  for (size_t i = 0; i < records_.size(); ++i) {
    const Record& r = records_[i];
    events.push_back({{"name", r.node->name},
                      {"cat", op_name(r.node->op)},
                      {"ph", "X"},
                      {"ts", r.start_us},
                      {"dur", r.dur_us},
                      {"pid", pid},
                      {"tid", 1},
                      {"args",
                       {{"shapes", r.shapes >= 0 ? shape_table_[static_cast<size_t>(r.shapes)].str()
                                                 : std::string()},
                        {"flops", r.cost.flops},
                        {"bytes", r.cost.bytes}}}});
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
}

void Profiler::write_trace(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error("cannot write trace file '" + path + "'");
    f << trace_json().dump() << '\n';
    f.flush();
    if (!f) throw Error("cannot write trace file '" + path + "' (write failed)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot write trace file '" + path + "' (rename failed)");
  }
}

}  // namespace tessera
