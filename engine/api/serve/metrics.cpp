#include "engine/api/serve/metrics.h"

#include <cstdio>

namespace tessera::serve {

namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
      duration_({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}) {}

void Metrics::request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  generated_tokens_ += static_cast<uint64_t>(generated);
}

void Metrics::first_token(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}
void Metrics::inter_token(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.observe(s);
}
void Metrics::duration(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  duration_.observe(s);
}

std::string Metrics::text(const SchedulerStats* s) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP tessera_requests_total HTTP requests answered, by endpoint and status code.\n";
  out += "# TYPE tessera_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += "tessera_requests_total{endpoint=\"" + key.first + "\",code=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  out += "# HELP tessera_prompt_tokens_total Prompt tokens of answered requests.\n";
  out += "# TYPE tessera_prompt_tokens_total counter\n";
  out += "tessera_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  out += "# HELP tessera_generated_tokens_total Tokens generated for answered requests.\n";
  out += "# TYPE tessera_generated_tokens_total counter\n";
  out += "tessera_generated_tokens_total " + std::to_string(generated_tokens_) + "\n";
  const SchedulerStats none;
  const SchedulerStats& st = s ? *s : none;
  out += "# HELP tessera_queue_length Completion requests waiting for room in the batch.\n";
  out += "# TYPE tessera_queue_length gauge\n";
  out += "tessera_queue_length " + std::to_string(st.queued_requests) + "\n";
  out +=
      "# HELP tessera_running_sequences Sequences in the running batch (decoding or "
      "prefilling).\n";
  out += "# TYPE tessera_running_sequences gauge\n";
  out += "tessera_running_sequences " + std::to_string(st.running_rows + st.prefilling_rows) + "\n";
  out += "# HELP tessera_prefilling_sequences Sequences of the batch whose prompt still runs.\n";
  out += "# TYPE tessera_prefilling_sequences gauge\n";
  out += "tessera_prefilling_sequences " + std::to_string(st.prefilling_rows) + "\n";
  out += "# HELP tessera_kv_cache_bytes KV-cache bytes reserved by the running sequences.\n";
  out += "# TYPE tessera_kv_cache_bytes gauge\n";
  out += "tessera_kv_cache_bytes " + std::to_string(st.kv_bytes_reserved) + "\n";
  out += "# HELP tessera_decode_steps_total Decode steps the scheduler ran.\n";
  out += "# TYPE tessera_decode_steps_total counter\n";
  out += "tessera_decode_steps_total " + std::to_string(st.steps) + "\n";
  ttft_.write(out, "tessera_time_to_first_token_seconds",
              "From a completion request's arrival to its first token.");
  itl_.write(out, "tessera_inter_token_latency_seconds",
             "Between consecutive tokens of a sequence.");
  duration_.write(out, "tessera_request_duration_seconds",
                  "From arrival to the last byte of completion and embedding requests.");
  return out;
}

}  // namespace tessera::serve
