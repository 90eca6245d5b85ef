// The server's Prometheus metrics (text exposition format 0.0.4): request counters by endpoint and
// status, token counters, and histograms of time to first token, inter-token latency and request
// duration; the scheduler's gauges are read when the text is made.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/api/serve/scheduler.h"

namespace tessera::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds, ascending (seconds)
  void observe(double v);
  // name_bucket{le="..."} (cumulative, +Inf last), name_sum, name_count.
  void write(std::string& out, const std::string& name, const std::string& help) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void request(const std::string& endpoint, int status);
  void tokens(int64_t prompt, int64_t generated);
  void first_token(double seconds);
  void inter_token(double seconds);
  void duration(double seconds);
  // Everything, with the scheduler's gauges (null: no scheduler, e.g. a bert model).
  std::string text(const SchedulerStats* s) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, itl_, duration_;
};

}  // namespace tessera::serve
