// The server's scheduler: one thread owns the model's decode loop and runs continuous batching
// over every request (vLLM's and llama.cpp's server's scheme).
//
//   Scheduler s(generator, {.max_batch = 16, .kv_budget_bytes = 512 << 20});
//   auto ticket = s.submit({seq0, seq1});     // a request: its sequences are admitted together
//   Event e;
//   while (ticket->next(e, 100ms)) ...        // tokens and finishes, as the loop makes them
//
// Each iteration of the loop:
//   1. admits queued requests, in order, while the running rows fit max_batch and their KV
//      caches fit kv_budget_bytes (a request's rows reserve their whole cache, prompt plus
//      max_tokens, when admitted: a running row never runs out of memory);
//   2. runs one prefill chunk (RowModel::prefill_chunk() tokens; chunked prefill) of the oldest
//      rows still prefilling, at most `prefill_tokens_per_step` tokens in all, so a long prompt
//      delays the running streams by one chunk per step, never by its whole prefill;
//   3. runs one decode step over every row whose prompt is done: one token each, sampled with
//      the row's own parameters and PRNG stream;
//   4. emits each token (with the text it completes) and finishes rows that hit eos, a stop
//      string, max_tokens, their deadline, or whose request was cancelled; finished rows leave
//      the batch at once and free their cache.
// A row's logits do not depend on the other rows (RowModel), its sampling stream on nothing but
// its seed and index, so a request's output is the same alone or batched.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/api/driver.h"
#include "engine/generate/rows.h"

namespace tessera::serve {

struct SchedulerOptions {
  int threads = 0;         // kernel threads of the loop; 0: the process default
  int64_t max_batch = 16;  // rows decoding at once
  int64_t max_queue = 64;  // requests waiting for room in the batch (a request that fits at
                           // once does not wait); submit() beyond it throws QueueFull
  uint64_t kv_budget_bytes = 1ull << 30;  // KV caches of the running rows, in all
  int64_t prefill_chunk = 64;  // prompt tokens a prefill call runs (chunked prefill); 0: a
                               // whole prompt at once (its prefill stalls the running streams)
  int64_t prefill_tokens_per_step = 0;  // 0: one chunk (RowModel::prefill_chunk()) per step
  double timeout_s = 0;                 // per request, from submit(); 0: none
};

// One sequence to generate. A request of P prompts with n samples each is P x n of these.
struct SeqRequest {
  std::vector<int64_t> prompt;  // token ids (non-empty)
  int64_t max_tokens = 16;      // generated tokens at most (the eos that ends it included)
  float temperature = 1.0f;     // 0: greedy; else sampling
  float top_p = 1.0f;
  int64_t top_k = 0;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  int64_t stream = 0;  // the PRNG stream of GenerationOptions (prompt index x n + sample index):
                       // the same as `tessera generate` for the same seed and options
  std::vector<std::string> stop;  // stop strings (the text up to and including the match is kept)
};

// stop: eos or a stop string; error: the model refused the sequence (Event::text says why; e.g.
// a source longer than an encoder-decoder model takes), before any token.
enum class Finish { stop, length, timeout, cancelled, error };
const char* finish_name(Finish f);  // "stop", "length", "timeout", "cancelled", "error"

struct Event {
  enum class Kind { token, finished } kind = Kind::token;
  int64_t seq = 0;     // index into the request's sequences
  int64_t token = -1;  // Kind::token: the id, or -1 for the text held back at the end (the bytes
                       // of an incomplete UTF-8 character, as U+FFFD)
  std::string text;    // token: the text it completes (may be empty; a sequence's pieces join
                       // to its whole text); finished: the whole text (error: the message)
  Finish finish = Finish::length;  // finished
  std::vector<int64_t> ids;        // finished: the generated ids (eos excluded)
  double ms = 0;                   // since submit()
};

// A request's handle: the events of its sequences in order. Thread-safe.
class Ticket {
 public:
  // Waits up to `wait` for the next event; false when none came (or, with everything delivered,
  // when the request is over: check done()).
  bool next(Event& e, std::chrono::milliseconds wait);
  void cancel();      // its rows finish (Finish::cancelled) at the next step
  bool done() const;  // every sequence finished and every event taken
  int64_t sequences() const { return sequences_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }

 private:
  friend class Scheduler;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  int64_t sequences_ = 0, finished_ = 0, prompt_tokens_ = 0;
  bool cancelled_ = false;
};

// submit() after close(): the server answers 503.
class Unavailable : public Error {
 public:
  using Error::Error;
};
// submit() when max_queue requests already wait: the server answers 503 with Retry-After.
class QueueFull : public Unavailable {
 public:
  using Unavailable::Unavailable;
};

struct SchedulerStats {
  int64_t queued_requests = 0;
  int64_t running_rows = 0;
  int64_t prefilling_rows = 0;
  uint64_t kv_bytes_reserved = 0;
  int64_t steps = 0;             // decode steps run
  int64_t prompt_tokens = 0;     // prefilled, in all
  int64_t generated_tokens = 0;  // emitted, in all
};

class Scheduler {
 public:
  // `generator` must be able to make rows (Generator::new_rows) and carries the tokenizer that
  // turns ids into text (streaming pieces, stop strings).
  Scheduler(api::Generator generator, SchedulerOptions options);
  ~Scheduler();  // stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. Throws Error (bad sequence: empty prompt, id out of range, prompt plus
  // max_tokens past the model's positions, a cache larger than the whole budget, more sequences
  // than max_batch, bad sampling values; the message starts with the field as the HTTP API
  // spells it, "max_tokens: ...") or Unavailable / QueueFull.
  std::shared_ptr<Ticket> submit(std::vector<SeqRequest> sequences);

  SchedulerStats stats() const;
  int64_t max_positions() const;
  bool prompts_are_prefix() const;
  // Stops admitting (submit() throws Unavailable); running and queued requests go on.
  void close();
  // Waits until nothing runs or waits, or the deadline passes (then cancels what is left);
  // true when everything finished on its own.
  bool drain(std::chrono::steady_clock::time_point deadline);
  void stop();  // ends the loop; unfinished requests finish as cancelled

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::serve
