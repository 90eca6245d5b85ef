// Sessions on one model through the public C++ API (a benchmark, not a test).
//
//   api_sessions throughput --bert DIR --gpt2 DIR [--rounds 5] [--forwards 6] [--tokens 64]
//     One model per family loaded with threads = 1; per round, side by side: one session on one
//     thread, then two sessions on two threads at once, each doing the same work: BERT forwards
//     (B=1, S=128) and GPT-2 greedy decoding (an 8-token prompt, --tokens new tokens). Prints
//     per-round rates, their medians and the ratio two sessions / one session.
//
//   api_sessions overhead --model DIR [--seq 128] [--reps 20] [--threads 2]
//     The C ABI's cost over the C++ API: one forward of input_ids [1, --seq] (a bert model,
//     or gpt2) through tessera::Session::run and through tessera_run (which also copies the
//     outputs into malloc'd memory), alternating one by one, each timed around the call; prints
//     the medians and the difference in microseconds and percent.
//
//   api_sessions rss --gpt2 DIR [--sessions 4] [--prompt 32] [--tokens 256]
//     Loads the model (threads = 1), notes the resident set, then runs --sessions sessions at
//     once, each generating --tokens tokens after a --prompt-token prompt; prints the peak
//     resident set beside weights + sessions x (arena + KV cache) + 10 %.
#include <sys/resource.h>
#include <unistd.h>

#include <tessera/tessera.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <tessera/tessera.hpp>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Resident set now (VmRSS) and at peak (VmHWM), in MiB, from /proc/self/status.
double status_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::strlen(key))) / 1024.0;
  return 0;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 2; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

// An integer key of a model directory's config.json (a flat JSON object).
int64_t config_int(const std::string& dir, const std::string& key) {
  std::ifstream f(dir + "/config.json");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t at = text.find("\"" + key + "\"");
  if (at == std::string::npos) throw tessera::Error(dir + "/config.json has no " + key);
  return std::stoll(text.substr(text.find(':', at) + 1));
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// The CPU and its measured limits, printed above every table: `tessera sysinfo` of the same build
// (build/tools/tessera beside build/bench/api_sessions), its FP32 peak and DRAM read lines.
void print_machine() {
  std::printf("CPU: %s\n", cpu_name().c_str());
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string cli = n > 0 ? std::string(exe, static_cast<size_t>(n)) : "";
  cli = cli.substr(0, cli.rfind('/')) + "/../tools/tessera";
  FILE* p = popen((cli + " sysinfo 2>&1").c_str(), "r");
  bool any = false;
  if (p) {
    char line[512];
    while (std::fgets(line, sizeof line, p))
      if (std::strncmp(line, "peak fp32:", 10) == 0 || std::strncmp(line, "DRAM read:", 10) == 0) {
        std::printf("%s", line);
        any = true;
      }
    pclose(p);
  }
  if (!any) std::printf("measured limits: unavailable (no %s sysinfo)\n", cli.c_str());
}

// Runs work(i) on `n` threads at once; returns the wall time.
template <class F>
double at_once(int n, const F& work) {
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) threads.emplace_back([&, i] { work(i); });
  for (auto& t : threads) t.join();
  return seconds_since(t0);
}

int throughput(int argc, char** argv) {
  const int rounds = std::stoi(arg(argc, argv, "--rounds", "5"));
  const int forwards = std::stoi(arg(argc, argv, "--forwards", "6"));
  const int tokens = std::stoi(arg(argc, argv, "--tokens", "64"));
  tessera::ModelOptions one;
  one.threads = 1;
  tessera::Model bert(arg(argc, argv, "--bert", ""), one);
  tessera::Model gpt2(arg(argc, argv, "--gpt2", ""), one);
  std::vector<int64_t> ids(128);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = 1000 + static_cast<int64_t>(i) * 37 % 20000;
  const tessera::NamedTensors in = {{"input_ids", {tessera::DType::i64, {1, 128}, ids.data(), {}}}};
  tessera::GenerateOptions greedy;
  greedy.max_new_tokens = tokens;
  const std::vector<std::vector<int64_t>> prompt = {
      {464, 2068, 7586, 21831, 11687, 625, 262, 16931}};

  // Each worker keeps its session across rounds (warm arenas), as a server's would.
  std::vector<tessera::Session> bert_s, gpt2_s;
  for (int i = 0; i < 2; ++i) {
    bert_s.emplace_back(bert);
    gpt2_s.emplace_back(gpt2);
    bert_s.back().run(in);  // warm-up: plans and arenas
    gpt2_s.back().generate_ids(prompt, greedy);
  }
  std::vector<int64_t> generated(2);
  auto forward_work = [&](int i) {
    for (int r = 0; r < forwards; ++r) bert_s[i].run(in);
  };
  auto decode_work = [&](int i) {
    const auto out = gpt2_s[i].generate_ids(prompt, greedy);
    generated[i] = static_cast<int64_t>(out[0].sequences[0].ids.size());
  };
  print_machine();
  std::printf("kernel threads per model: 1 (ModelOptions::threads)\n");
  std::printf(
      "BERT-base-shaped forward B=1 S=128 (%d per session), GPT-2 greedy decode (%d tokens)\n",
      forwards, tokens);
  std::printf("%-6s %16s %16s %16s %16s\n", "round", "fwd/s 1 sess", "fwd/s 2 sess", "tok/s 1 sess",
              "tok/s 2 sess");
  std::vector<double> f1, f2, d1, d2;
  for (int r = 0; r < rounds; ++r) {
    f1.push_back(forwards / at_once(1, forward_work));
    f2.push_back(2.0 * forwards / at_once(2, forward_work));
    double t = at_once(1, decode_work);
    d1.push_back(generated[0] / t);
    t = at_once(2, decode_work);
    d2.push_back((generated[0] + generated[1]) / t);
    std::printf("%-6d %16.2f %16.2f %16.1f %16.1f\n", r, f1.back(), f2.back(), d1.back(),
                d2.back());
  }
  std::printf("median %16.2f %16.2f %16.1f %16.1f\n", median(f1), median(f2), median(d1),
              median(d2));
  std::printf("two sessions / one session: forward %.2fx, decode %.2fx\n", median(f2) / median(f1),
              median(d2) / median(d1));
  return 0;
}

int overhead(int argc, char** argv) {
  const std::string dir = arg(argc, argv, "--model", "");
  const int64_t seq = std::stoll(arg(argc, argv, "--seq", "128"));
  const int reps = std::stoi(arg(argc, argv, "--reps", "20"));
  const int threads = std::stoi(arg(argc, argv, "--threads", "2"));
  tessera::ModelOptions mo;
  mo.threads = threads;
  tessera::Model model(dir, mo);
  tessera::Session cpp(model);
  tessera_model* cm = nullptr;
  tessera_session* cs = nullptr;
  if (tessera_model_load(dir.c_str(), threads, &cm) != TESSERA_OK ||
      tessera_session_create(cm, &cs) != TESSERA_OK)
    throw tessera::Error(tessera_last_error());
  std::vector<int64_t> ids(static_cast<size_t>(seq));
  for (int64_t i = 0; i < seq; ++i) ids[i] = 1000 + i * 37 % 20000;
  const int64_t shape[2] = {1, seq};
  const tessera::NamedTensors in = {{"input_ids", {tessera::DType::i64, {1, seq}, ids.data(), {}}}};
  const tessera_tensor c_in = {"input_ids", TESSERA_I64, 2, shape, ids.data()};
  auto time_cpp = [&] {
    const auto t0 = Clock::now();
    const auto out = cpp.run(in);
    return seconds_since(t0);
  };
  auto time_c = [&] {
    tessera_tensor* out = nullptr;
    size_t n = 0;
    const auto t0 = Clock::now();
    if (tessera_run(cs, &c_in, 1, &out, &n) != TESSERA_OK)
      throw tessera::Error(tessera_last_error());
    tessera_tensors_free(out, n);
    return seconds_since(t0);
  };
  for (int w = 0; w < 2; ++w) time_cpp(), time_c();  // warm-up: plans, arenas, caches
  std::vector<double> a, b;
  for (int r = 0; r < reps; ++r) {
    a.push_back(time_cpp() * 1e6);
    b.push_back(time_c() * 1e6);
  }
  const double ma = median(a), mb = median(b);
  print_machine();
  std::printf("%d kernel threads; %s, input_ids [1, %lld]; median of %d calls each\n", threads,
              dir.c_str(), static_cast<long long>(seq), reps);
  std::printf("C++ Session::run %.1f us, C tessera_run %.1f us: %+.1f us (%+.2f %%)\n", ma, mb,
              mb - ma, 100.0 * (mb - ma) / ma);
  tessera_session_free(cs);
  tessera_model_free(cm);
  return 0;
}

int rss(int argc, char** argv) {
  const int sessions = std::stoi(arg(argc, argv, "--sessions", "4"));
  const int prompt_len = std::stoi(arg(argc, argv, "--prompt", "32"));
  const int tokens = std::stoi(arg(argc, argv, "--tokens", "256"));
  tessera::ModelOptions one;
  one.threads = 1;
  const double before = status_mib("VmRSS:");
  tessera::Model gpt2(arg(argc, argv, "--gpt2", ""), one);
  const double loaded = status_mib("VmRSS:");
  std::vector<int64_t> prompt(static_cast<size_t>(prompt_len));
  for (int i = 0; i < prompt_len; ++i) prompt[i] = 300 + 17 * i;
  tessera::GenerateOptions greedy;
  greedy.max_new_tokens = tokens;
  // One session first, then gone: weight layouts the kernels prepare at first use (the decode
  // path's) belong to the model, held once; the resident set after it is the model's.
  { tessera::Session(gpt2).generate_ids({prompt}, greedy); }
  const double warm = status_mib("VmRSS:");
  std::vector<size_t> arena(static_cast<size_t>(sessions));
  at_once(sessions, [&](int i) {
    tessera::Session s(gpt2);
    s.generate_ids({prompt}, greedy);
    arena[i] = s.arena_bytes();
  });
  const double peak = status_mib("VmHWM:");
  // The KV cache of one session: keys and values of every layer, prompt + new tokens, fp32.
  const std::string dir = arg(argc, argv, "--gpt2", "");
  const int64_t layers = config_int(dir, "n_layer"), width = config_int(dir, "n_embd");
  const double kv_mib = 2.0 * layers * (prompt_len + tokens) * width * 4 / (1 << 20);
  double arenas = 0;
  for (size_t a : arena) arenas += static_cast<double>(a) / (1 << 20);
  const double bound = (warm + arenas + sessions * kv_mib) * 1.1;
  print_machine();
  std::printf(
      "resident before load %.1f MiB, after load %.1f MiB, after one session %.1f MiB "
      "(the model: weights, their first-use layouts, code)\n",
      before, loaded, warm);
  std::printf("%d sessions at once: arenas %.1f MiB in all, KV cache %.1f MiB each\n", sessions,
              arenas, kv_mib);
  std::printf(
      "peak resident %.1f MiB; bound (the model + arenas + KV caches) x 1.1 = %.1f MiB: %s\n", peak,
      bound, peak <= bound ? "within" : "OVER");
  return peak <= bound ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "throughput") return throughput(argc, argv);
    if (mode == "rss") return rss(argc, argv);
    if (mode == "overhead") return overhead(argc, argv);
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::fprintf(
      stderr,
      "usage: api_sessions throughput|overhead|rss ... (see the top of bench/api_sessions.cpp)\n");
  return 2;
}
