#include <cstdlib>
#include <mutex>

#include "engine/graph/passes/passes.h"
#include "engine/io/error.h"

namespace tessera::passes {

namespace {

std::mutex g_mu;
bool g_have_default = false;
Options g_default;
std::function<void(const std::string&)> g_log;

std::string valid_list() {
  std::string s;
  for (const auto& n : names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

const std::vector<std::string>& names() {
  static const std::vector<std::string> kNames = {
      "fold_constants",     "fuse_embedding", "fuse_epilogue", "fuse_qkv", "fuse_residual",
      "fuse_add_layernorm", "fuse_attention", "dce",           "prepack"};
  return kNames;
}

Options parse(const std::string& spec, const std::string& what) {
  Options o;
  if (spec.empty() || spec == "all") return o;
  if (spec == "none") {
    for (const auto& n : names()) o.disabled.insert(n);
    return o;
  }
  std::set<std::string> only, off;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    const bool minus = !item.empty() && item[0] == '-';
    const std::string name = minus ? item.substr(1) : item;
    bool known = false;
    for (const auto& n : names()) known = known || n == name;
    if (!known)
      throw Error(what + ": unknown pass '" + name + "' in '" + spec +
                  "' (expected all, none, a comma list of passes to run, or of -pass to skip; "
                  "passes: " +
                  valid_list() + ")");
    (minus ? off : only).insert(name);
  }
  if (!only.empty() && !off.empty())
    throw Error(what + ": '" + spec +
                "' mixes passes to run with passes to skip (-name); use one form");
  if (!off.empty()) {
    o.disabled = off;
  } else {
    for (const auto& n : names())
      if (!only.count(n)) o.disabled.insert(n);
  }
  return o;
}

thread_local const Options* t_scoped = nullptr;

Scoped::Scoped(const Options& o) : options_(o), previous_(t_scoped) {
  t_scoped = &options_;
}

Scoped::~Scoped() {
  t_scoped = previous_;
}

const Options& defaults() {
  if (t_scoped) return *t_scoped;
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_have_default) {
    const char* env = std::getenv("TESSERA_PASSES");
    if (env) {
      g_default = parse(env, "TESSERA_PASSES");
    }
    g_have_default = true;
  }
  return g_default;
}

void set_default(const Options& o) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_default = o;
  g_have_default = true;
}

void set_logger(std::function<void(const std::string&)> log) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_log = std::move(log);
}

std::vector<Stats> run(const std::vector<Graph*>& graphs, const Options& o) {
  using PerGraph = int (*)(Graph&);
  static const std::pair<const char*, PerGraph> kPerGraph[] = {
      {"fold_constants", fold_constants}, {"fuse_embedding", fuse_embedding},
      {"fuse_epilogue", fuse_epilogue},   {"fuse_qkv", fuse_qkv},
      {"fuse_residual", fuse_residual},   {"fuse_add_layernorm", fuse_add_layernorm},
      {"fuse_attention", fuse_attention}, {"dce", dce}};
  auto count = [&] {
    size_t n = 0;
    for (const Graph* g : graphs) n += g->nodes().size();
    return n;
  };
  std::function<void(const std::string&)> log;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    log = g_log;
  }
  std::vector<Stats> stats;
  for (const auto& name : names()) {
    if (!o.enabled(name)) continue;
    Stats s;
    s.pass = name;
    s.nodes_before = count();
    if (name == "prepack") {
      s.rewrites = prepack(graphs);
    } else {
      for (const auto& [pn, fn] : kPerGraph)
        if (name == pn)
          for (Graph* g : graphs) s.rewrites += fn(*g);
    }
    s.nodes_after = count();
    if (log)
      log("pass " + name + ": " + std::to_string(s.nodes_before) + " -> " +
          std::to_string(s.nodes_after) + " nodes (" + std::to_string(s.rewrites) + " rewrites)");
    stats.push_back(s);
  }
  finalize_weights(graphs);
  return stats;
}

}  // namespace tessera::passes
