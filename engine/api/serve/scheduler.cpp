#include "engine/api/serve/scheduler.h"

#include <algorithm>
#include <cmath>

#include "engine/text/tokenizers.h"
#include "kernels/kernels.h"

namespace tessera::serve {

using Clock = std::chrono::steady_clock;

const char* finish_name(Finish f) {
  switch (f) {
    case Finish::stop:
      return "stop";
    case Finish::length:
      return "length";
    case Finish::timeout:
      return "timeout";
    case Finish::cancelled:
      return "cancelled";
    case Finish::error:
      return "error";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Ticket
// ---------------------------------------------------------------------------------------------
bool Ticket::next(Event& e, std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, wait, [&] { return !events_.empty(); })) return false;
  e = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Ticket::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
}

bool Ticket::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_ == sequences_ && events_.empty();
}

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------
struct Scheduler::Impl {
  struct Request {
    std::shared_ptr<Ticket> ticket;
    std::vector<SeqRequest> seqs;
    Clock::time_point submitted, deadline;
    bool has_deadline = false;
    uint64_t bytes = 0;
  };
  // A sequence admitted into the batch (owned by the loop thread).
  struct Live {
    std::shared_ptr<Ticket> ticket;
    int64_t seq = 0;
    SeqRequest req;
    RowModel::Row row = -1;
    bool added = false, prefilled = false;
    std::unique_ptr<SequenceSampler> sampler;
    std::unique_ptr<StreamDecoder> stream;
    std::vector<int64_t> ids;
    int64_t chosen = 0;       // tokens chosen (eos included)
    int64_t next_token = -1;  // to feed at the next step
    Clock::time_point submitted, deadline;
    bool has_deadline = false;
    uint64_t bytes = 0;
    bool finished = false;
  };

  api::Generator gen;
  SchedulerOptions opt;
  std::unique_ptr<RowModel> rows;

  mutable std::mutex mu;
  std::condition_variable wake, idle;
  std::deque<Request> queue;
  bool closed = false, stopping = false;
  SchedulerStats st;     // under mu
  int64_t admitted = 0;  // rows admitted and not finished (under mu)
  std::thread thread;

  std::vector<std::unique_ptr<Live>> live;  // admission order (loop thread only)

  Impl(api::Generator g, SchedulerOptions o) : gen(std::move(g)), opt(o) {
    if (!gen.new_rows) throw Error("this model cannot generate in the server (no rows)");
    if (opt.max_batch < 1) throw Error("max_batch must be at least 1");
    if (opt.max_queue < 0) throw Error("max_queue must not be negative");
    if (opt.prefill_chunk < 0) throw Error("prefill_chunk must not be negative");
    rows = gen.new_rows(opt.prefill_chunk > 0 ? opt.prefill_chunk : int64_t{1} << 40);
    thread = std::thread([this] { loop(); });
  }

  void emit(Live& l, Event e) {
    e.seq = l.seq;
    e.ms = ms_since(l.submitted);
    Ticket& t = *l.ticket;
    {
      std::lock_guard<std::mutex> lock(t.mu_);
      t.events_.push_back(std::move(e));
    }
    t.cv_.notify_all();
  }

  void finish(Live& l, Finish why, const std::string& message = {}) {
    if (l.finished) return;
    l.finished = true;
    if (l.stream) {
      const std::string rest = l.stream->flush();
      if (!rest.empty()) {
        Event e;
        e.token = -1;
        e.text = rest;
        emit(l, std::move(e));
      }
    }
    Event e;
    e.kind = Event::Kind::finished;
    e.finish = why;
    e.ids = l.ids;
    e.text = why == Finish::error ? message : gen.codec ? gen.codec->decode(l.ids) : std::string();
    // The books first, so whoever sees the event sees the row gone.
    if (l.added) rows->remove(l.row);
    {
      std::lock_guard<std::mutex> lock(mu);
      st.kv_bytes_reserved -= l.bytes;
      if (l.bytes > 0) {
        --admitted;
        (l.prefilled ? st.running_rows : st.prefilling_rows) -= 1;
      }
    }
    {
      std::lock_guard<std::mutex> lock(l.ticket->mu_);
      ++l.ticket->finished_;
    }
    emit(l, std::move(e));
  }

  // The token chosen for a row: emitted, and the row finished when it ends the sequence.
  void take(Live& l, int64_t token) {
    ++l.chosen;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++st.generated_tokens;
    }
    if (std::find(gen.eos_ids.begin(), gen.eos_ids.end(), token) != gen.eos_ids.end())
      return finish(l, Finish::stop);
    l.ids.push_back(token);
    Event e;
    e.token = token;
    if (l.stream) e.text = l.stream->push(token);
    emit(l, std::move(e));
    if (!l.req.stop.empty() && gen.codec) {
      const std::string text = gen.codec->decode(l.ids);
      for (const auto& s : l.req.stop)
        if (text.find(s) != std::string::npos) return finish(l, Finish::stop);
    }
    if (l.chosen >= l.req.max_tokens) return finish(l, Finish::length);
    l.next_token = token;
  }

  static GenerationOptions sampling(const SeqRequest& r) {
    GenerationOptions o;
    o.method = r.temperature == 0.0f ? DecodingMethod::greedy : DecodingMethod::sample;
    o.temperature = r.temperature == 0.0f ? 1.0f : r.temperature;
    o.top_k = r.top_k;
    o.top_p = r.top_p;
    o.repetition_penalty = r.repetition_penalty;
    o.seed = r.seed;
    return o;
  }

  void admit(Request& r) {
    for (size_t i = 0; i < r.seqs.size(); ++i) {
      auto l = std::make_unique<Live>();
      l->ticket = r.ticket;
      l->seq = static_cast<int64_t>(i);
      l->req = std::move(r.seqs[i]);
      l->submitted = r.submitted;
      l->deadline = r.deadline;
      l->has_deadline = r.has_deadline;
      l->bytes = rows->row_bytes(static_cast<int64_t>(l->req.prompt.size()), l->req.max_tokens);
      std::vector<int64_t> history;
      if (rows->prompts_are_decoder_prefix()) history = l->req.prompt;
      l->sampler = std::make_unique<SequenceSampler>(
          sampling(l->req), static_cast<uint64_t>(l->req.stream), std::move(history));
      if (gen.codec) l->stream = std::make_unique<StreamDecoder>(*gen.codec);
      live.push_back(std::move(l));
    }
  }

  void loop() {
    std::unique_ptr<kernels::ScopedThreads> threads;
    if (opt.threads > 0) threads = std::make_unique<kernels::ScopedThreads>(opt.threads);
    for (;;) {
      // 1. Admission.
      {
        std::unique_lock<std::mutex> lock(mu);
        for (;;) {
          if (stopping) break;
          int64_t running = static_cast<int64_t>(live.size());
          while (!queue.empty()) {
            Request& r = queue.front();
            const int64_t n = static_cast<int64_t>(r.seqs.size());
            if (running + n > opt.max_batch || st.kv_bytes_reserved + r.bytes > opt.kv_budget_bytes)
              break;
            st.kv_bytes_reserved += r.bytes;
            admitted += n;
            running += n;
            Request req = std::move(r);
            queue.pop_front();
            lock.unlock();
            admit(req);
            lock.lock();
          }
          st.queued_requests = static_cast<int64_t>(queue.size());
          if (!live.empty()) break;
          idle.notify_all();
          wake.wait(lock);
        }
        if (stopping) break;
      }
      sweep();  // the admitted rows counted
      // 2. Cancelled and timed-out rows leave.
      const Clock::time_point now = Clock::now();
      for (auto& l : live) {
        bool cancelled;
        {
          std::lock_guard<std::mutex> lock(l->ticket->mu_);
          cancelled = l->ticket->cancelled_;
        }
        if (cancelled)
          finish(*l, Finish::cancelled);
        else if (l->has_deadline && now >= l->deadline)
          finish(*l, Finish::timeout);
      }
      sweep();
      // 3. Prefill: chunks of the oldest rows still prefilling, within the step's token budget.
      const int64_t chunk = rows->prefill_chunk();
      int64_t budget = opt.prefill_tokens_per_step > 0 ? opt.prefill_tokens_per_step
                                                       : std::max<int64_t>(chunk, 1);
      for (auto& l : live) {
        if (budget <= 0) break;
        if (l->finished || l->prefilled) continue;
        try {
          if (!l->added) {
            l->row = rows->add(l->req.prompt, l->req.max_tokens);
            l->added = true;
          }
          Tensor last;
          const int64_t left = static_cast<int64_t>(l->req.prompt.size());
          bool done = false;
          while (!done && budget > 0) {
            done = rows->prefill(l->row, &last);
            budget -= chunk > 0 ? chunk : left;
          }
          if (done) {
            l->prefilled = true;
            {
              std::lock_guard<std::mutex> lock(mu);
              st.prompt_tokens += left;
              --st.prefilling_rows;
              ++st.running_rows;
            }
            take(*l, l->sampler->next(last.data<float>(), last.dim(0)));
          }
        } catch (const std::exception& e) {
          finish(*l, Finish::error, e.what());
        }
      }
      sweep();
      // 4. One decode step over every prefilled row.
      std::vector<RowModel::Row> batch;
      std::vector<int64_t> tokens;
      std::vector<Live*> who;
      for (auto& l : live)
        if (l->prefilled && !l->finished) {
          batch.push_back(l->row);
          tokens.push_back(l->next_token);
          who.push_back(l.get());
        }
      if (!batch.empty()) {
        try {
          Tensor logits = rows->step(batch, tokens);
          const int64_t vocab = logits.dim(1);
          for (size_t i = 0; i < who.size(); ++i)
            take(*who[i], who[i]->sampler->next(logits.data<float>() + i * vocab, vocab));
        } catch (const std::exception& e) {
          for (Live* l : who) finish(*l, Finish::error, e.what());
        }
        std::lock_guard<std::mutex> lock(mu);
        ++st.steps;
      }
      sweep();
    }
    // Stopped: everything still running or waiting ends as cancelled.
    for (auto& l : live) finish(*l, Finish::cancelled);
    live.clear();
    std::deque<Request> left;
    {
      std::lock_guard<std::mutex> lock(mu);
      left.swap(queue);
      st.queued_requests = 0;
    }
    for (Request& r : left) {
      admit(r);
      for (auto& l : live) {
        l->bytes = 0;  // never reserved
        finish(*l, Finish::cancelled);
      }
      live.clear();
    }
    std::lock_guard<std::mutex> lock(mu);
    idle.notify_all();
  }

  // Drops finished rows from the batch and publishes the batch's counts.
  void sweep() {
    live.erase(std::remove_if(live.begin(), live.end(), [](const auto& l) { return l->finished; }),
               live.end());
    int64_t decoding = 0, prefilling = 0;
    for (const auto& l : live) (l->prefilled ? decoding : prefilling) += 1;
    std::lock_guard<std::mutex> lock(mu);
    st.running_rows = decoding;
    st.prefilling_rows = prefilling;
  }

  void check(const SeqRequest& s, size_t i) const {
    const std::string which = "prompt " + std::to_string(i);
    if (s.prompt.empty()) throw Error("prompt: " + which + " has no tokens");
    const int64_t vocab = rows->vocab_size();
    for (int64_t id : s.prompt)
      if (id < 0 || id >= vocab)
        throw Error("prompt: token id " + std::to_string(id) + " is out of range for vocab_size " +
                    std::to_string(vocab));
    if (s.max_tokens < 1) throw Error("max_tokens: must be at least 1");
    const int64_t len = static_cast<int64_t>(s.prompt.size());
    const int64_t max = rows->max_positions();
    if (rows->prompts_are_decoder_prefix() && len + s.max_tokens > max)
      throw Error("max_tokens: a prompt of " + std::to_string(len) + " tokens plus " +
                  std::to_string(s.max_tokens) + " tokens exceeds the model's " +
                  std::to_string(max) + " positions");
    if (!rows->prompts_are_decoder_prefix() && s.max_tokens > max)
      throw Error("max_tokens: " + std::to_string(s.max_tokens) + " exceeds the model's " +
                  std::to_string(max) + " positions");
    if (!std::isfinite(s.temperature) || s.temperature < 0)
      throw Error("temperature: must be a number >= 0 (0: greedy)");
    if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1)
      throw Error("top_p: must be in (0, 1]");
    if (s.top_k < 0) throw Error("top_k: must be >= 0 (0: off)");
    if (!std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0)
      throw Error("repetition_penalty: must be a number > 0 (1: off)");
    for (const auto& stop : s.stop)
      if (stop.empty()) throw Error("stop: stop strings must not be empty");
    if (!s.stop.empty() && !gen.codec)
      throw Error("stop: stop strings need a model with a tokenizer");
  }
};

Scheduler::Scheduler(api::Generator generator, SchedulerOptions options)
    : impl_(std::make_unique<Impl>(std::move(generator), options)) {}

Scheduler::~Scheduler() {
  stop();
}

std::shared_ptr<Ticket> Scheduler::submit(std::vector<SeqRequest> sequences) {
  Impl& m = *impl_;
  if (sequences.empty()) throw Error("prompt: the request has no sequences");
  if (static_cast<int64_t>(sequences.size()) > m.opt.max_batch)
    throw Error("n: the request's " + std::to_string(sequences.size()) +
                " sequences (prompts x n) exceed the server's max batch of " +
                std::to_string(m.opt.max_batch));
  uint64_t bytes = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    m.check(sequences[i], i);
    bytes += m.rows->row_bytes(static_cast<int64_t>(sequences[i].prompt.size()),
                               sequences[i].max_tokens);
  }
  if (bytes > m.opt.kv_budget_bytes)
    throw Error("max_tokens: the request's KV cache (" + std::to_string(bytes >> 20) +
                " MiB) exceeds the server's KV-cache budget of " +
                std::to_string(m.opt.kv_budget_bytes >> 20) + " MiB");
  auto ticket = std::make_shared<Ticket>();
  ticket->sequences_ = static_cast<int64_t>(sequences.size());
  for (const auto& s : sequences) ticket->prompt_tokens_ += static_cast<int64_t>(s.prompt.size());
  Impl::Request r;
  r.ticket = ticket;
  r.seqs = std::move(sequences);
  r.submitted = Clock::now();
  r.bytes = bytes;
  if (m.opt.timeout_s > 0) {
    r.has_deadline = true;
    r.deadline = r.submitted + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(m.opt.timeout_s));
  }
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.closed || m.stopping) throw Unavailable("the server is shutting down");
    // Requests the loop will admit at its next iteration (in order, while they fit beside the
    // admitted rows) do not wait; the others do, max_queue of them.
    int64_t rows_used = m.admitted, waiting = 0;
    uint64_t bytes_used = m.st.kv_bytes_reserved;
    auto fits = [&](int64_t n, uint64_t b) {
      return waiting == 0 && rows_used + n <= m.opt.max_batch &&
             bytes_used + b <= m.opt.kv_budget_bytes;
    };
    for (const auto& q : m.queue) {
      const int64_t n = static_cast<int64_t>(q.seqs.size());
      if (fits(n, q.bytes)) {
        rows_used += n;
        bytes_used += q.bytes;
      } else {
        ++waiting;
      }
    }
    if (!fits(static_cast<int64_t>(r.seqs.size()), bytes) && waiting >= m.opt.max_queue)
      throw QueueFull("the server's queue is full (" + std::to_string(m.opt.max_queue) +
                      " requests wait); retry later");
    m.queue.push_back(std::move(r));
    m.st.queued_requests = static_cast<int64_t>(m.queue.size());
  }
  m.wake.notify_all();
  return ticket;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->st;
}

int64_t Scheduler::max_positions() const {
  return impl_->rows->max_positions();
}
bool Scheduler::prompts_are_prefix() const {
  return impl_->rows->prompts_are_decoder_prefix();
}

void Scheduler::close() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->closed = true;
}

bool Scheduler::drain(Clock::time_point deadline) {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  auto quiet = [&] {
    return m.stopping || (m.queue.empty() && m.st.running_rows == 0 && m.st.prefilling_rows == 0 &&
                          m.st.kv_bytes_reserved == 0);
  };
  if (m.idle.wait_until(lock, deadline, quiet)) return true;
  lock.unlock();
  stop();
  return false;
}

void Scheduler::stop() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.closed = true;
    m.stopping = true;
  }
  m.wake.notify_all();
  if (m.thread.joinable()) m.thread.join();
}

}  // namespace tessera::serve
