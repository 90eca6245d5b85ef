// Tessera's HTTP server (`tessera serve`) as a class a program can start.
//
//   tessera::ServerOptions o;
//   o.model = "models/demo-dates";
//   o.port = 8080;
//   tessera::Server server(o);
//   server.start();   // listening; the model loads in the background (GET /health: 503, then 200)
//   server.wait();    // until shutdown() (e.g. from a signal handler's thread) has drained
//
// Endpoints (JSON in and out, OpenAI-compatible where OpenAI has the endpoint): POST
// /v1/completions (gpt2 and transformer models with a tokenizer; SSE streaming), POST
// /v1/embeddings (bert), POST /tokenize, POST /detokenize, GET /v1/models, GET /health,
// GET /metrics (Prometheus text). One scheduler thread runs continuous batching over every
// completion request (engine/api/serve/scheduler.h). docs/server.md describes the API.
#ifndef TESSERA_SERVER_HPP
#define TESSERA_SERVER_HPP

#include <tessera/types.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace tessera {

struct ServerOptions {
  std::string model;                 // model directory (required)
  std::string host = "127.0.0.1";    // address to listen on
  int port = 8080;                   // 0: any free port (port() tells which)
  int threads = 0;                   // kernel threads; 0: every core
  std::string isa;                   // kernels ISA, as ModelOptions::isa
  int64_t max_batch = 16;            // sequences decoding at once
  int64_t max_queue = 64;            // requests waiting beyond that; more: 503 + Retry-After
  int64_t kv_budget_mb = 1024;       // KV-cache memory of the running sequences, in all
  std::string api_key;               // non-empty: every endpoint but /health needs
                                     // "Authorization: Bearer <api_key>" (else 401)
  double timeout_s = 600;            // per completion request; 0: none (504 / finish "timeout")
  int64_t max_body_bytes = 1 << 20;  // larger request bodies: 413
  double drain_s = 30;               // shutdown(): how long running requests may finish
  int64_t prefill_chunk = 64;        // prompt tokens prefilled per scheduler step (chunked prefill:
                                     // a long prompt delays running streams by one chunk per
                                     // step); 0: whole prompts at once
  bool log_requests = true;          // one line per request on stderr
  std::string dtype;                 // GEMM weights, as ModelOptions::dtype ("": auto)
};

class TESSERA_API Server {
 public:
  explicit Server(ServerOptions options);  // checks the options (Error naming one); no I/O
  ~Server();                               // shutdown(0) if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts listening (throws Error when it cannot bind), then loads the model on a
  // background thread: /health answers 503 until it is ready (or failed to load: then every
  // endpoint answers 503 with the load error, and wait() returns).
  void start();
  int port() const;    // the port it listens on (after start())
  bool ready() const;  // model loaded
  // Why the model failed to load ("" while loading, when loaded, or before start()).
  std::string load_error() const;
  // Blocks until the server has stopped.
  void wait();
  // Stops accepting requests, lets running ones finish for up to drain_s seconds (then cancels
  // them), stops listening. Safe from any thread, once or more.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_HPP
