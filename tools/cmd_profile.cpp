// tessera profile / bench / sysinfo: where the time goes per node and per operator against the
// machine's roofline; end-to-end latency and throughput; the machine's limits.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "engine/io/safetensors.h"
#include "engine/observe/profiler.h"
#include "engine/observe/sysinfo.h"
#include "kernels/kernels.h"
#include "models/workload.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

struct Stats {
  double median = 0, min = 0, max = 0;
};
Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  return s;
}
nlohmann::json ms_json(const Stats& s) {
  return {{"median", s.median * 1e3}, {"min", s.min * 1e3}, {"max", s.max * 1e3}};
}

std::string fmt(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

struct Common {
  std::string model, inputs;
  int64_t batch = 1, seq = 128, generate = 0;
  int threads = 0, reps = 5, warmup = 1;
  bool json = false;
};

void add_common(CLI::App* cmd, Common& o, bool with_inputs) {
  cmd->add_option("--model", o.model, "Model directory (transformer, gpt2 or bert)")->required();
  cmd->add_option("--batch", o.batch, "Batch size of the random inputs (default 1)");
  cmd->add_option("--seq", o.seq,
                  "Sequence length of the random inputs (default 128); with --generate, the "
                  "length of the source (transformer) or prompt (gpt2)");
  cmd->add_option("--generate", o.generate,
                  "Prefill once, then exactly N greedy decode steps, eos ignored (encoder-decoder "
                  "transformer token models: encode the source; gpt2: run the prompt)");
  cmd->add_option("--threads", o.threads, "Threads (default: all cores)");
  cmd->add_option("--reps", o.reps, "Timed repetitions (default 5)");
  cmd->add_option("--warmup", o.warmup, "Untimed warm-up repetitions (default 1)");
  if (with_inputs)
    cmd->add_option("--inputs", o.inputs,
                    "Run these inputs (.safetensors, the names `tessera run` takes) instead of "
                    "random ones");
  cmd->add_flag("--json", o.json, "Machine-readable output");
}

void check_reps(const Common& o) {
  if (o.reps < 1) throw Error("--reps must be at least 1");
  if (o.warmup < 0) throw Error("--warmup must be at least 0");
}

// The random inputs of --batch x --seq (and --generate), or the --inputs file's tensors.
models::Workload make_workload(const models::Model& model, const Common& c) {
  if (c.inputs.empty()) return models::Workload::random(model, c.batch, c.seq, c.generate);
  if (c.generate != 0) throw Error("--inputs cannot be combined with --generate");
  SafetensorsFile f(c.inputs);
  TensorMap inputs;
  for (const auto& name : f.names()) inputs[name] = f.get(name);
  return models::Workload::given(model, std::move(inputs));
}

// "gpt2, batch 2, seq 16" (+ ", prompt + 8 decode steps" with --generate 8)
std::string describe(const models::Workload& w) {
  std::string s = std::string(w.model().family()) + ", batch " + std::to_string(w.batch()) +
                  ", seq " + std::to_string(w.seq());
  if (w.generate())
    s += ", " + w.prefill_name() + " + " + std::to_string(w.generate()) + " decode steps";
  return s;
}

struct Limits {
  double peak = 0, bandwidth = 0;
};
void add_limits(CLI::App* cmd, Limits& l) {
  cmd->add_option("--peak-gflops", l.peak, "Peak fp32 GFLOP/s per core (default: measured)");
  cmd->add_option("--bandwidth-gbs", l.bandwidth, "Memory bandwidth GB/s (default: measured)");
}
// reuse_dram: take the DRAM figures from the cache of an earlier measurement (the profiler;
// `sysinfo` always measures). See SysInfoOptions::reuse_cached_dram.
SysInfo machine(const Limits& l, bool reuse_dram) {
  SysInfoOptions opt;
  opt.reuse_cached_dram = reuse_dram;
  opt.peak_gflops_per_core = l.peak;
  opt.bandwidth_gbs = l.bandwidth;
  return detect_sysinfo(opt);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

}  // namespace

std::unique_ptr<Profiler> env_profiler() {
  const char* path = std::getenv("TESSERA_PROFILE");
  if (path == nullptr || *path == '\0') return nullptr;
  return std::make_unique<Profiler>(true);
}

void write_env_trace(const Profiler* p) {
  if (p == nullptr) return;
  const std::string path = std::getenv("TESSERA_PROFILE");
  p->write_trace(path);
  log_verbose("wrote trace '" + path + "' (" + std::to_string(p->records().size()) + " events)");
}

Action add_sysinfo_command(CLI::App& app) {
  struct Options {
    int threads = 0;
    bool json = false;
    Limits limits;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("sysinfo", "The CPU, its caches and its measured limits");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_flag("--json", o->json, "Machine-readable output");
  add_limits(cmd, o->limits);
  return [o] {
    setup_threads(o->threads);
    const SysInfo s = machine(o->limits, false);
    if (o->json)
      std::cout << sysinfo_json(s).dump(2) << '\n';
    else
      std::cout << sysinfo_text(s);
    return 0;
  };
}

Action add_profile_command(CLI::App& app) {
  struct Options {
    Common c;
    Limits limits;
    std::string trace;
    size_t top = 40;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "profile",
      "Time every node of a transformer, gpt2 or bert model on random inputs: per-operator and "
      "per-node roofline tables");
  add_common(cmd, o->c, false);
  add_limits(cmd, o->limits);
  cmd->add_option("--trace", o->trace, "Write a Chrome trace (Trace Event Format) here");
  cmd->add_option("--top", o->top, "Rows of the per-node table (default 40, 0 = all)");
  return [o] {
    const Common& c = o->c;
    check_reps(c);
    setup_threads(c.threads);
    const SysInfo m = machine(o->limits, true);
    ModelDir dir(c.model);
    auto model = load_any_model(dir);
    const models::Workload w = make_workload(*model, c);

    for (int i = 0; i < c.warmup; ++i) w.run(nullptr);
    Profiler prof(!o->trace.empty());
    // Off and on alternate (in both orders) so that drift affects both alike.
    std::vector<double> off, on, node_sums;  // node_sums: sum of node times per profiled rep
    for (int r = 0; r < c.reps; ++r) {
      for (int k = 0; k < 2; ++k) {
        const bool profiled = (k == 0) == (r % 2 == 0);
        if (profiled) {
          const size_t first = prof.records().size();
          on.push_back(w.run(&prof).total);
          double sum_us = 0;
          for (size_t i = first; i < prof.records().size(); ++i) sum_us += prof.records()[i].dur_us;
          node_sums.push_back(sum_us * 1e-6);
        } else {
          off.push_back(w.run(nullptr).total);
        }
      }
    }
    const Stats s_off = stats(off), s_on = stats(on);
    const double overhead = s_off.median > 0 ? (s_on.median / s_off.median - 1) * 100 : 0;
    const auto ops = prof.by_op();
    const auto nodes = prof.by_node();
    const size_t events_per_rep = prof.records().size() / static_cast<size_t>(c.reps);
    // What the graphs hold (independent of what was recorded): the test checks both agree.
    const int64_t graph_nodes = w.graph_nodes();
    const double node_s = stats(node_sums).median;
    if (!o->trace.empty()) prof.write_trace(o->trace);

    if (c.json) {
      nlohmann::json j = {{"model", c.model},
                          {"family", model->family()},
                          {"batch", w.batch()},
                          {"seq", w.seq()},
                          {"generate", w.generate()},
                          {"threads", kernels::num_threads()},
                          {"isa", kernels::isa_name(kernels::active_isa())},
                          {"dtype", dtype_of(*model)},
                          {"reps", c.reps},
                          {"warmup", c.warmup},
                          {"machine", sysinfo_json(m)},
                          {"end_to_end_ms", {{"off", ms_json(s_off)}, {"on", ms_json(s_on)}}},
                          {"overhead_pct", overhead},
                          {"events_per_rep", events_per_rep},
                          {"graph_nodes_per_rep", graph_nodes},
                          {"node_ms_per_rep", node_s * 1e3},  // median over the reps
                          {"ops", Profiler::rows_json(ops, m)},
                          {"nodes", Profiler::rows_json(nodes, m)}};
      if (!o->trace.empty()) j["trace"] = o->trace;
      std::cout << j.dump(2) << '\n';
      return 0;
    }
    std::cout << "tessera profile: " << c.model << " (" << describe(w) << "), "
              << kernels::num_threads() << " threads, isa "
              << kernels::isa_name(kernels::active_isa()) << ", " << dtype_of(*model)
              << " weights, " << c.reps << " reps (" << c.warmup << " warm-up)\n";
    std::cout << "machine: peak " << fmt(m.peak_gflops_per_core, 1) << " GFLOP/s/core x "
              << m.threads << " = " << fmt(m.peak_gflops(), 1) << " GFLOP/s (" << m.peak_method
              << "); DRAM read " << fmt(m.bandwidth_gbs(), 1) << " GB/s (" << m.bandwidth_method
              << ")\n";
    std::cout << "end-to-end per rep, median (min-max): profiler off " << fmt(s_off.median * 1e3, 3)
              << " ms (" << fmt(s_off.min * 1e3, 3) << "-" << fmt(s_off.max * 1e3, 3) << "), on "
              << fmt(s_on.median * 1e3, 3) << " ms (" << fmt(s_on.min * 1e3, 3) << "-"
              << fmt(s_on.max * 1e3, 3) << "): overhead " << (overhead >= 0 ? "+" : "")
              << fmt(overhead, 2) << "%\n";
    std::cout << "nodes: " << events_per_rep << " timed per rep (the graphs run hold "
              << graph_nodes << "), their times sum to " << fmt(node_s * 1e3, 3)
              << " ms per rep (median) = "
              << fmt(s_on.median > 0 ? node_s / s_on.median * 100 : 0, 1)
              << "% of the profiled end-to-end median\n\n";
    std::cout << Profiler::table(ops, m, "operator") << '\n';
    std::cout << Profiler::table(nodes, m, "node", o->top);
    std::cout << "\nbound = min(peak, flop/B x DRAM bandwidth) in GFLOP/s; %bound = achieved / "
                 "bound. Above 100%: the node's data came from cache, not DRAM.\n";
    if (!o->trace.empty())
      std::cout << "trace: " << o->trace << " (" << prof.records().size() << " events)\n";
    return 0;
  };
}

Action add_bench_command(CLI::App& app) {
  auto o = std::make_shared<Common>();
  auto* cmd = app.add_subcommand(
      "bench",
      "End-to-end latency, throughput and peak memory of a transformer, gpt2 or bert model; "
      "with --generate, prefill time and decode tokens/s");
  add_common(cmd, *o, true);
  return [o] {
    const Common& c = *o;
    check_reps(c);
    setup_threads(c.threads);
    ModelDir dir(c.model);
    auto model = load_any_model(dir);
    const models::Workload w = make_workload(*model, c);
    for (int i = 0; i < c.warmup; ++i) w.run(nullptr);
    std::vector<double> total, prefill, decode;
    for (int r = 0; r < c.reps; ++r) {
      const auto t = w.run(nullptr);
      total.push_back(t.total);
      prefill.push_back(t.prefill);
      decode.push_back(t.decode);
    }
    const Stats st = stats(total), sp = stats(prefill), sd = stats(decode);
    const double tps = st.median > 0 ? static_cast<double>(w.tokens()) / st.median : 0;
    const double decode_tps =
        sd.median > 0 ? static_cast<double>(w.decode_tokens()) / sd.median : 0;
    const double rss = peak_rss_mb();
    const int threads = kernels::num_threads();
    const std::string isa = kernels::isa_name(kernels::active_isa());
    if (c.json) {
      nlohmann::json j = {{"latency_ms", ms_json(st)},
                          {"tokens_per_s", tps},
                          {"peak_rss_mb", rss},
                          {"threads", threads},
                          {"isa", isa},
                          {"family", model->family()},
                          {"dtype", dtype_of(*model)},
                          {"batch", w.batch()},
                          {"seq", w.seq()},
                          {"reps", c.reps},
                          {"warmup", c.warmup}};
      if (w.generate()) {
        j["generate"] = w.generate();
        j["tokens_per_rep"] = w.tokens();
        j["prefill_ms"] = sp.median * 1e3;
        j["decode_tokens_per_s"] = decode_tps;
      }
      std::cout << j.dump(2) << '\n';
      return 0;
    }
    std::cout << "tessera bench: " << c.model << " (" << describe(w) << "), " << threads
              << " threads, isa " << isa << ", " << dtype_of(*model) << " weights, " << c.reps
              << " reps (" << c.warmup << " warm-up)\n";
    std::cout << "latency:     median " << fmt(st.median * 1e3, 3) << " ms, min "
              << fmt(st.min * 1e3, 3) << ", max " << fmt(st.max * 1e3, 3) << "\n";
    std::cout << "throughput:  " << fmt(tps, 1) << " tokens/s"
              << (w.generate() ? " (" + std::to_string(w.tokens()) + " generated tokens over " +
                                     w.prefill_name() + " + decode)"
                               : std::string(" (batch x seq)"))
              << "\n";
    if (w.generate())
      std::cout << "prefill:     " << fmt(sp.median * 1e3, 3) << " ms (" << w.prefill_name()
                << " of " << w.batch() << " x " << w.seq() << " tokens, median)\n"
                << "decode:      " << fmt(decode_tps, 1) << " tokens/s (" << fmt(sd.median * 1e3, 3)
                << " ms for " << w.generate() << " steps x batch " << w.batch() << ", median)\n";
    std::cout << "peak RSS:    " << fmt(rss, 1) << " MB\n";
    return 0;
  };
}

}  // namespace tessera::cli
