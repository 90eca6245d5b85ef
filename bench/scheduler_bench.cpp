// The server's scheduler without HTTP (a benchmark, not a test): continuous batching's decode
// throughput and the stall a long prompt causes to running streams.
//
//   scheduler_bench steps --model DIR [--threads 2] [--rows 1,2,4,8,16] [--prompt 64] [--profile 1]
//     The time of one decode step (RowModel::step) of R rows after their prompts (median of 20),
//     and with --profile the time per operator, and of one prompt's prefill.
//
//   scheduler_bench throughput --model DIR [--threads 2] [--streams 1,2,4,8,16] [--prompt 64]
//                              [--tokens 128] [--rounds 3]
//     Per round and stream count N: N greedy requests (distinct --prompt-token prompts, --tokens
//     new tokens each) submitted at once; aggregate generated tokens/s over the wall time, time
//     to first token and inter-token gaps (from the events). Also the same single request
//     through the library's generate() (a batch-1 generation session) beside it in each round.
//     Prints medians over rounds and the ratios to one stream.
//
//   scheduler_bench stall --model DIR [--threads 2] [--streams 4] [--long 896] [--chunk 64]
//                         [--verbose 1]
//     After a warm-up request with the long prompt (first-use costs: memory plans, fresh
//     memory), N streams decode; after each has 16 tokens, a request with a --long-token prompt
//     arrives.
//     Prints the running streams' median inter-token gap before it arrived and their largest
//     gap while it was prefilled, with chunked prefill (--chunk tokens per step) and with the
//     whole prompt in one call (--chunk 0) when given "--chunk 64,0".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/api/driver.h"
#include "engine/api/serve/scheduler.h"
#include "engine/observe/profiler.h"
#include "engine/observe/sysinfo.h"
#include "kernels/kernels.h"
#include "models/gpt2.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 2; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

std::vector<int64_t> list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) v.push_back(std::stoll(item));
  return v;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  return v[i];
}

std::vector<int64_t> prompt(int64_t n, int64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (seed * 7919 + i * 104729) % 50000;
  return v;
}

struct Timing {
  std::vector<double> ttft, gaps;  // ms
  int64_t tokens = 0;
};

// Waits for every event of the tickets; appends first-token times and gaps.
void collect(std::vector<std::shared_ptr<serve::Ticket>>& tickets, Timing& t) {
  for (auto& tk : tickets) {
    double last = -1;
    serve::Event e;
    for (;;) {
      if (!tk->next(e, std::chrono::milliseconds(1000))) continue;
      if (e.kind == serve::Event::Kind::finished) break;
      if (e.token < 0) continue;
      if (last < 0)
        t.ttft.push_back(e.ms);
      else
        t.gaps.push_back(e.ms - last);
      last = e.ms;
      ++t.tokens;
    }
  }
}

void header(int threads) {
  SysInfoOptions so;
  so.reuse_cached_dram = true;
  const SysInfo s = detect_sysinfo(so);
  std::printf(
      "CPU: %s (%s); kernel threads %d; FP32 peak %.1f GFLOP/s per core; DRAM read "
      "%.1f GB/s (1 thread), %.1f GB/s (all)\n",
      s.cpu_model.c_str(), s.isa.c_str(), threads, s.peak_gflops_per_core, s.bandwidth_gbs_1t,
      s.bandwidth_gbs_all);
}

int throughput(int argc, char** argv) {
  const std::string dir = arg(argc, argv, "--model", "");
  const int threads = std::stoi(arg(argc, argv, "--threads", "2"));
  const auto streams = list(arg(argc, argv, "--streams", "1,2,4,8,16"));
  const int64_t plen = std::stoll(arg(argc, argv, "--prompt", "64"));
  const int64_t tokens = std::stoll(arg(argc, argv, "--tokens", "128"));
  const int rounds = std::stoi(arg(argc, argv, "--rounds", "3"));
  kernels::ScopedThreads scoped(threads);
  std::shared_ptr<const models::Model> model = models::load_model(ModelDir(dir));
  api::Generator gen = api::make_generator(dir, false, model, api::OptionStyle::api);
  header(threads);
  serve::SchedulerOptions o;
  o.threads = threads;
  o.max_batch = 64;
  o.kv_budget_bytes = 8ull << 30;
  serve::Scheduler sched(gen, o);
  const size_t ns = streams.size();
  std::vector<std::vector<double>> rate(ns), ttft(ns), gap50(ns), gap99(ns);
  std::vector<double> lib;
  for (int r = 0; r < rounds; ++r) {
    {  // the library: one generation session, batch 1
      GenerationOptions g;
      g.max_new_tokens = tokens;
      auto lm = gen.new_session(tokens);
      const auto t0 = Clock::now();
      generate(*lm, {prompt(plen, 1)}, g);
      lib.push_back(static_cast<double>(tokens) /
                    std::chrono::duration<double>(Clock::now() - t0).count());
    }
    for (size_t i = 0; i < ns; ++i) {
      std::vector<std::shared_ptr<serve::Ticket>> tickets;
      const auto t0 = Clock::now();
      for (int64_t s = 0; s < streams[i]; ++s) {
        serve::SeqRequest q;
        q.prompt = prompt(plen, 1 + s);
        q.max_tokens = tokens;
        q.temperature = 0;
        tickets.push_back(sched.submit({q}));
      }
      Timing t;
      collect(tickets, t);
      const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
      rate[i].push_back(static_cast<double>(t.tokens) / wall);
      ttft[i].push_back(pct(t.ttft, 99));
      gap50[i].push_back(pct(t.gaps, 50));
      gap99[i].push_back(pct(t.gaps, 99));
    }
  }
  std::printf("prompt %lld tokens, %lld greedy new tokens per stream, %d rounds (medians)\n",
              static_cast<long long>(plen), static_cast<long long>(tokens), rounds);
  std::printf("library generate(), 1 request: %.1f tokens/s\n", median(lib));
  std::printf("| streams | tokens/s | x 1 stream | TTFT p99 ms | gap p50 ms | gap p99 ms |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < ns; ++i)
    std::printf("| %lld | %.1f | %.2f | %.1f | %.2f | %.2f |\n", static_cast<long long>(streams[i]),
                median(rate[i]), median(rate[i]) / median(rate[0]), median(ttft[i]),
                median(gap50[i]), median(gap99[i]));
  std::printf("scheduler 1 stream / library: %.3f\n", median(rate[0]) / median(lib));
  return 0;
}

int stall(int argc, char** argv) {
  const std::string dir = arg(argc, argv, "--model", "");
  const int threads = std::stoi(arg(argc, argv, "--threads", "2"));
  const int64_t n = std::stoll(arg(argc, argv, "--streams", "4"));
  const int64_t long_len = std::stoll(arg(argc, argv, "--long", "896"));
  const auto chunks = list(arg(argc, argv, "--chunk", "64,0"));
  kernels::ScopedThreads scoped(threads);
  std::shared_ptr<const models::Model> model = models::load_model(ModelDir(dir));
  api::Generator gen = api::make_generator(dir, false, model, api::OptionStyle::api);
  header(threads);
  std::printf("%lld streams decoding; a %lld-token prompt arrives after their 16th token\n",
              static_cast<long long>(n), static_cast<long long>(long_len));
  std::printf(
      "| prefill | gap p50 before, ms | largest gap during the prefill, ms | long "
      "prompt's TTFT, ms |\n|---|---:|---:|---:|\n");
  for (int64_t chunk : chunks) {
    serve::SchedulerOptions o;
    o.threads = threads;
    o.max_batch = 64;
    o.kv_budget_bytes = 8ull << 30;
    o.prefill_chunk = chunk;
    serve::Scheduler sched(gen, o);
    {  // Warm-up: the long prompt's shapes (memory plans, arenas) and memory seen once.
      serve::SeqRequest w;
      w.prompt = prompt(long_len, 98);
      w.max_tokens = 2;
      w.temperature = 0;
      auto t = sched.submit({w});
      serve::Event e;
      while (!(t->next(e, std::chrono::milliseconds(1000)) &&
               e.kind == serve::Event::Kind::finished)) {
      }
    }
    std::vector<std::shared_ptr<serve::Ticket>> tickets;
    for (int64_t s = 0; s < n; ++s) {
      serve::SeqRequest q;
      q.prompt = prompt(16, 1 + s);
      q.max_tokens = 96;
      q.temperature = 0;
      tickets.push_back(sched.submit({q}));
    }
    // Event times of each stream, in ms since its submit (all submitted together).
    std::vector<std::vector<double>> times(static_cast<size_t>(n));
    auto drain = [&](int64_t upto) {  // every stream up to `upto` tokens (or finished)
      for (int64_t s = 0; s < n; ++s) {
        serve::Event e;
        while (static_cast<int64_t>(times[s].size()) < upto) {
          if (!tickets[s]->next(e, std::chrono::milliseconds(1000))) continue;
          if (e.kind == serve::Event::Kind::finished) break;
          if (e.token >= 0) times[s].push_back(e.ms);
        }
      }
    };
    drain(16);
    const auto t_submit = Clock::now();
    serve::SeqRequest big;
    big.prompt = prompt(long_len, 99);
    big.max_tokens = 8;
    big.temperature = 0;
    auto bt = sched.submit({big});
    const double offset =
        std::chrono::duration<double, std::milli>(t_submit - Clock::now()).count();
    (void)offset;
    double big_ttft = -1;
    serve::Event e;
    for (;;) {
      if (!bt->next(e, std::chrono::milliseconds(1000))) continue;
      if (e.kind == serve::Event::Kind::finished) break;
      if (big_ttft < 0 && e.token >= 0) big_ttft = e.ms;
    }
    drain(96);
    // Gaps before the long prompt: tokens 2..16; during: the gaps ending in the window from its
    // submit to its first token, in each stream's clock (streams were submitted within
    // microseconds of each other, so ms since submit is a shared clock within that).
    std::vector<double> before;
    double worst = 0;
    const double t0 = times[0][15];  // ~ when the long prompt was submitted
    for (int64_t s = 0; s < n; ++s) {
      for (size_t i = 1; i < 16 && i < times[s].size(); ++i)
        before.push_back(times[s][i] - times[s][i - 1]);
      for (size_t i = 16; i < times[s].size(); ++i)
        if (times[s][i - 1] >= t0 - 1 && times[s][i - 1] <= t0 + big_ttft + 1)
          worst = std::max(worst, times[s][i] - times[s][i - 1]);
    }
    if (arg(argc, argv, "--verbose", "0") == "1") {
      std::printf("stream 0 gaps (ms) from its 16th token:");
      for (size_t i = 16; i < times[0].size() && i < 40; ++i)
        std::printf(" %.1f", times[0][i] - times[0][i - 1]);
      std::printf("\n");
    }
    std::printf("| %s | %.2f | %.1f | %.1f |\n",
                chunk > 0 ? ("chunked, " + std::to_string(chunk) + " tokens/step").c_str()
                          : "whole prompt at once",
                median(before), worst, big_ttft);
  }
  return 0;
}

// Decode-step time of R rows (RowModel::step after each row's prompt), R from --rows.
int steps(int argc, char** argv) {
  const std::string dir = arg(argc, argv, "--model", "");
  const int threads = std::stoi(arg(argc, argv, "--threads", "2"));
  const auto counts = list(arg(argc, argv, "--rows", "1,2,4,8,16"));
  const int64_t plen = std::stoll(arg(argc, argv, "--prompt", "64"));
  kernels::ScopedThreads scoped(threads);
  std::shared_ptr<const models::Model> model = models::load_model(ModelDir(dir));
  api::Generator gen = api::make_generator(dir, false, model, api::OptionStyle::api);
  header(threads);
  const bool profile = arg(argc, argv, "--profile", "0") == "1";
  std::printf("| rows | step ms (median of 20) | ms per row |\n|---:|---:|---:|\n");
  for (int64_t r : counts) {
    Profiler prof;
    prof.set_enabled(false);
    auto rows = profile && model->gpt2() ? model->gpt2()->new_rows(64, &prof) : gen.new_rows(64);
    std::vector<RowModel::Row> ids;
    std::vector<double> prefill_ms;
    for (int64_t i = 0; i < r; ++i) {
      ids.push_back(rows->add(prompt(plen, i + 1), 40));
      Tensor last;
      prof.set_enabled(i == r - 1 && r > 1);
      const auto t0 = Clock::now();
      while (!rows->prefill(ids.back(), &last)) {
      }
      prefill_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    if (profile && r > 1) {
      std::printf("  prefill of %lld tokens: %.2f ms (median of %lld)\n",
                  static_cast<long long>(plen), median(prefill_ms), static_cast<long long>(r));
      for (const auto& row : prof.by_op())
        std::printf("    %-12s %6.2f ms (%lld calls) %.1f GFLOP/s\n", row.op.c_str(),
                    row.total_s * 1e3, static_cast<long long>(row.calls), row.gflops());
      prof.clear();
    }
    std::vector<int64_t> tok(static_cast<size_t>(r), 11);
    std::vector<double> ms;
    for (int k = 0; k < 22; ++k) {
      prof.set_enabled(k >= 2);
      const auto t0 = Clock::now();
      rows->step(ids, tok);
      if (k >= 2)
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::printf("| %lld | %.2f | %.2f |\n", static_cast<long long>(r), median(ms),
                median(ms) / static_cast<double>(r));
    if (profile)
      for (const auto& row : prof.by_op())
        std::printf("    %-12s %6.2f ms per step (%lld calls)\n", row.op.c_str(),
                    row.total_s * 1e3 / 20, static_cast<long long>(row.calls / 20));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "throughput") return throughput(argc, argv);
    if (mode == "stall") return stall(argc, argv);
    if (mode == "steps") return steps(argc, argv);
    std::fprintf(stderr, "usage: scheduler_bench throughput|stall --model DIR [options]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scheduler_bench: %s\n", e.what());
    return 2;
  }
}
