// tessera serve: the HTTP server (include/tessera/server.hpp; docs/server.md) on a model
// directory. Prints "tessera serve: listening on http://HOST:PORT" once it listens (PORT is the
// one chosen for --port 0), loads the model, logs one line per request on stderr. SIGTERM or
// SIGINT: stops accepting, lets running requests finish for up to --drain seconds, exits 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <tessera/server.hpp>
#include <thread>

#include "tools/cli.h"

namespace tessera::cli {

Action add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServerOptions>();
  auto* cmd = app.add_subcommand(
      "serve", "HTTP server: OpenAI-compatible completions and embeddings, continuous batching");
  cmd->add_option("--model", o->model, "Model directory (gpt2, transformer with a tokenizer, bert)")
      ->required();
  cmd->add_option("--host", o->host, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o->port, "Port (default 8080; 0: any free port)");
  cmd->add_option("--threads", o->threads, "Kernel threads (default: all cores)");
  cmd->add_option("--max-batch", o->max_batch, "Sequences decoding at once (default 16)");
  cmd->add_option("--max-queue", o->max_queue,
                  "Requests waiting for room in the batch; beyond: 503 + Retry-After (default 64)");
  cmd->add_option("--kv-budget-mb", o->kv_budget_mb,
                  "KV-cache memory of the running sequences, MiB (default 1024)");
  cmd->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer KEY' on every endpoint but /health");
  cmd->add_option("--timeout", o->timeout_s,
                  "Seconds a completion may take (504, or finish_reason \"timeout\" when "
                  "streamed; default 600, 0: none)");
  cmd->add_option("--max-body-bytes", o->max_body_bytes,
                  "Largest request body; larger: 413 (default 1048576)");
  cmd->add_option("--drain", o->drain_s,
                  "On SIGTERM/SIGINT, seconds running requests may finish (default 30)");
  cmd->add_option("--prefill-chunk", o->prefill_chunk,
                  "Prompt tokens prefilled per scheduler step (default 64; 0: whole prompts, "
                  "which stalls running streams)");
  cmd->add_flag(
      "--quiet", [o](int64_t) { o->log_requests = false; }, "No per-request log lines");
  return [o] {
    // The signals go to one thread that waits for them (blocked here, before any thread starts,
    // so every thread inherits the mask).
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    o->dtype = weight_dtype();  // the global --dtype
    Server server(*o);
    server.start();
    std::fprintf(stderr, "tessera serve: listening on http://%s:%d\n", o->host.c_str(),
                 server.port());
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&signals, &sig);
      if (sig == SIGTERM || sig == SIGINT) {
        std::fprintf(stderr, "tessera serve: %s: draining (up to %.0f s)\n",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT", o->drain_s);
        server.shutdown();
      }
    });
    server.wait();
    pthread_kill(waiter.native_handle(), SIGTERM);  // wakes the waiter if the server stopped
    waiter.join();                                  // on its own (a model that failed to load)
    const std::string error = server.load_error();
    if (!error.empty()) throw Error(error);
    std::fprintf(stderr, "tessera serve: stopped\n");
    return 0;
  };
}

}  // namespace tessera::cli
