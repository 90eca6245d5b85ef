#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
// Continuous batching below HTTP: the gpt2 rows (a row's logits the same bits alone and batched),
// the fallback rows of the transformer family, and the server's scheduler (a request's tokens the
// same alone and beside others, the same as the library's generate(), admission, queue limit,
// cancellation, timeouts, errors naming the field). Models: the demo and the random-weight gpt2
// of tests/api/make_api_models.py (TESSERA_API_MODELS).
#include <doctest/doctest.h>

#include <cstring>
#include <thread>

#include "engine/api/driver.h"
#include "engine/api/serve/scheduler.h"
#include "models/gpt2.h"

using namespace tessera;
using serve::Event;
using serve::Finish;
using serve::Scheduler;
using serve::SchedulerOptions;
using serve::SeqRequest;

namespace {

const std::string kDemo = TESSERA_DEMO_MODEL;
const std::string kGpt2 = std::string(TESSERA_API_MODELS) + "/gpt2";

std::shared_ptr<const models::Model> load(const std::string& dir) {
  return models::load_model(ModelDir(dir));
}

api::Generator generator(const std::string& dir, std::shared_ptr<const models::Model> m) {
  return api::make_generator(dir, true, std::move(m), api::OptionStyle::api);
}

std::vector<int64_t> ids(int64_t n, int64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (seed * 7919 + i * 104729) % 50000;
  return v;
}

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, sizeof(float) * static_cast<size_t>(n)) == 0;
}

struct Result {
  std::vector<int64_t> ids;
  std::string text, pieces;
  Finish finish = Finish::length;
  int64_t tokens = 0;
};

// Waits for every event of a ticket (bounded: 60 s).
std::vector<Result> collect(serve::Ticket& t) {
  std::vector<Result> out(static_cast<size_t>(t.sequences()));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int64_t finished = 0;
  Event e;
  while (finished < t.sequences() && std::chrono::steady_clock::now() < until) {
    if (!t.next(e, std::chrono::milliseconds(100))) continue;
    Result& r = out[static_cast<size_t>(e.seq)];
    if (e.kind == Event::Kind::token) {
      r.pieces += e.text;
      if (e.token >= 0) ++r.tokens;
    } else {
      r.ids = e.ids;
      r.text = e.text;
      r.finish = e.finish;
      ++finished;
    }
  }
  REQUIRE(finished == t.sequences());
  CHECK(t.done());
  return out;
}

}  // namespace

TEST_CASE("gpt2 rows: a row's logits are the same bits alone and batched with others") {
  auto model = load(kGpt2);
  const models::Gpt2Model& g = *model->gpt2();
  const int64_t vocab = g.config().vocab_size;
  // Row A alone: a prompt of 9 tokens prefilled 4 at a time (3 calls), then 5 steps.
  const std::vector<int64_t> prompt_a = ids(9, 1), prompt_b = ids(23, 2), prompt_c = ids(1, 3);
  const std::vector<int64_t> feed = {11, 502, 7, 31000, 42};
  std::vector<std::vector<float>> alone;
  {
    auto rows = g.new_rows(4);
    const auto a = rows->add(prompt_a, 8);
    Tensor last;
    int calls = 1;
    while (!rows->prefill(a, &last)) ++calls;
    CHECK(calls == 3);
    alone.emplace_back(last.data<float>(), last.data<float>() + vocab);
    for (int64_t t : feed) {
      Tensor l = rows->step({a}, {t});
      alone.emplace_back(l.data<float>(), l.data<float>() + vocab);
    }
    rows->remove(a);
    CHECK(rows->rows() == 0);
  }
  // Row A beside B and C, joining at different times, in a different order in the batch.
  {
    auto rows = g.new_rows(4);
    const auto b = rows->add(prompt_b, 16), c = rows->add(prompt_c, 16);
    Tensor last;
    while (!rows->prefill(b, &last)) {
    }
    REQUIRE(rows->prefill(c, &last));
    rows->step({b, c}, {5, 6});
    const auto a = rows->add(prompt_a, 8);
    while (!rows->prefill(a, &last)) rows->step({c, b}, {8, 9});  // others decode meanwhile
    CHECK(same_bits(last.data<float>(), alone[0].data(), vocab));
    for (size_t i = 0; i < feed.size(); ++i) {
      if (i == 2) rows->remove(c);  // a row leaving does not change the others
      const bool three = i < 2;
      Tensor l = three ? rows->step({b, a, c}, {1, feed[i], 2}) : rows->step({a, b}, {feed[i], 3});
      CHECK(same_bits(l.data<float>() + (three ? vocab : 0), alone[i + 1].data(), vocab));
    }
  }
}

TEST_CASE("gpt2 rows: prefill and steps agree with the generation session") {
  auto model = load(kGpt2);
  const models::Gpt2Model& g = *model->gpt2();
  const int64_t vocab = g.config().vocab_size;
  const std::vector<int64_t> prompt = ids(13, 4);
  auto session = g.new_session(4);
  Tensor s0 = session->start({prompt});
  auto rows = g.new_rows(64);
  const auto r = rows->add(prompt, 4);
  Tensor r0;
  REQUIRE(rows->prefill(r, &r0));
  Tensor s1 = session->step({17}), r1 = rows->step({r}, {17});
  double worst = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    worst = std::max(worst, std::abs(double(s0.data<float>()[i]) - r0.data<float>()[i]));
    worst = std::max(worst, std::abs(double(s1.data<float>()[i]) - r1.data<float>()[i]));
  }
  CHECK(worst <= 1e-5);
}

TEST_CASE("gpt2 rows: errors") {
  auto model = load(kGpt2);
  const models::Gpt2Model& g = *model->gpt2();
  auto rows = g.new_rows(64);
  CHECK_THROWS_WITH_AS(rows->add({}, 4), "the prompt is empty", Error);
  CHECK_THROWS_AS(rows->add({50257}, 4), Error);
  CHECK_THROWS_AS(rows->add(ids(10, 1), 119), Error);  // past n_positions (128)
  const auto r = rows->add(ids(3, 1), 1);
  CHECK_THROWS_AS(rows->step({r}, {1}), Error);  // still prefilling
  Tensor last;
  REQUIRE(rows->prefill(r, &last));
  rows->step({r}, {1});
  CHECK_THROWS_AS(rows->step({r}, {1}), Error);  // its cache is full
  CHECK_THROWS_AS(rows->remove(r + 1), Error);
}

namespace {

// Eight sequences of different lengths and parameters (greedy, sampling with top-k / top-p,
// repetition penalty, a stop string, short and long budgets).
std::vector<SeqRequest> eight() {
  std::vector<SeqRequest> v;
  for (int i = 0; i < 8; ++i) {
    SeqRequest s;
    s.prompt = ids(1 + 11 * i, 10 + i);  // 1 .. 78 tokens: 1 or 2 prefill chunks
    s.max_tokens = 3 + 5 * i;            // prompt + max_tokens <= 128 positions
    s.temperature = i % 2 == 0 ? 0.0f : 0.7f + 0.1f * static_cast<float>(i);
    s.top_k = i == 3 ? 40 : 0;
    s.top_p = i == 5 ? 0.9f : 1.0f;
    s.repetition_penalty = i == 7 ? 1.3f : 1.0f;
    s.seed = 1000 + static_cast<uint64_t>(i);
    s.stream = i;
    if (i == 6) s.stop = {"e"};
    v.push_back(s);
  }
  return v;
}

SchedulerOptions options(int64_t max_batch = 16) {
  SchedulerOptions o;
  o.max_batch = max_batch;
  o.max_queue = 64;
  o.kv_budget_bytes = 256ull << 20;
  return o;
}

}  // namespace

TEST_CASE("scheduler: a request's output is the same alone and batched with 7 others") {
  auto model = load(kGpt2);
  Scheduler sched(generator(kGpt2, model), options());
  const auto seqs = eight();
  std::vector<Result> alone;
  for (const auto& s : seqs) alone.push_back(collect(*sched.submit({s}))[0]);
  std::vector<std::shared_ptr<serve::Ticket>> tickets;
  for (const auto& s : seqs) tickets.push_back(sched.submit({s}));
  int stopped = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const Result r = collect(*tickets[i])[0];
    CHECK(r.ids == alone[i].ids);
    CHECK(r.text == alone[i].text);
    CHECK(r.finish == alone[i].finish);
    CHECK(r.pieces == r.text);  // the streamed pieces join to the text
    CHECK(r.tokens == static_cast<int64_t>(r.ids.size()));
    if (r.finish == Finish::length) CHECK(r.tokens == seqs[i].max_tokens);
    stopped += r.finish == Finish::stop;
  }
  CHECK(stopped >= 1);  // the stop string "e" ends sequence 6 early
  const auto st = sched.stats();
  CHECK(st.running_rows == 0);
  CHECK(st.kv_bytes_reserved == 0);
}

TEST_CASE("scheduler: the same tokens as the library's generate() for the same options") {
  auto model = load(kGpt2);
  const api::Generator gen = generator(kGpt2, model);
  Scheduler sched(gen, options());
  for (const auto& s : eight()) {
    if (!s.stop.empty()) continue;
    GenerationOptions o;
    o.max_new_tokens = s.max_tokens;
    o.method = s.temperature == 0.0f ? DecodingMethod::greedy : DecodingMethod::sample;
    o.temperature = s.temperature == 0.0f ? 1.0f : s.temperature;
    o.top_k = s.top_k;
    o.top_p = s.top_p;
    o.repetition_penalty = s.repetition_penalty;
    o.seed = s.seed;
    o.row_offset = s.stream;
    o.eos_ids = gen.eos_ids;
    auto lm = gen.new_session(o.max_new_tokens);
    const auto want = generate(*lm, {s.prompt}, o);
    const Result got = collect(*sched.submit({s}))[0];
    CHECK(got.ids == want[0].sequences[0].ids);
  }
}

TEST_CASE("scheduler: the transformer demo (rows from sessions)") {
  auto model = load(kDemo);
  const api::Generator gen = generator(kDemo, model);
  Scheduler sched(gen, options());
  const auto texts = std::vector<std::string>{"1 May 2020", "July 4, 1976", "March 15, 1999"};
  const auto prompts = api::encode_prompts(gen, texts);
  std::vector<std::shared_ptr<serve::Ticket>> tickets;
  for (const auto& p : prompts) {
    SeqRequest s;
    s.prompt = p;
    s.max_tokens = 16;
    s.temperature = 0;
    tickets.push_back(sched.submit({s}));
  }
  CHECK(collect(*tickets[0])[0].text == "2020-05-01");
  CHECK(collect(*tickets[1])[0].text == "1976-07-04");
  const Result r = collect(*tickets[2])[0];
  CHECK(r.text == "1999-03-15");
  CHECK(r.finish == Finish::stop);  // eos
}

TEST_CASE("scheduler: max_batch, queue limit, cancellation, timeout, errors") {
  auto model = load(kGpt2);
  SeqRequest long_one;
  long_one.prompt = ids(8, 1);
  long_one.max_tokens = 110;  // 8 + 110 of the fixture's 128 positions
  long_one.temperature = 0;

  SUBCASE("no room and no queue: refused at once") {
    SchedulerOptions o = options(1);
    o.max_queue = 0;
    Scheduler sched(generator(kGpt2, model), o);
    auto a = sched.submit({long_one});  // fits: admitted at the next iteration
    CHECK_THROWS_AS(sched.submit({long_one}), serve::QueueFull);
    a->cancel();
    CHECK(collect(*a)[0].finish == Finish::cancelled);
  }
  SUBCASE("a full queue refuses; a waiting request runs when the row frees") {
    SchedulerOptions o = options(1);
    o.max_queue = 1;
    Scheduler sched(generator(kGpt2, model), o);
    auto a = sched.submit({long_one});
    auto b = sched.submit({long_one});  // waits: the batch of 1 is a's
    CHECK(sched.stats().queued_requests >= 1);
    CHECK_THROWS_AS(sched.submit({long_one}), serve::QueueFull);
    CHECK(sched.stats().running_rows + sched.stats().prefilling_rows <= 1);
    a->cancel();
    const Result ra = collect(*a)[0];
    CHECK(ra.finish == Finish::cancelled);
    CHECK(ra.tokens < long_one.max_tokens);
    const Result rb = collect(*b)[0];
    CHECK(rb.finish == Finish::length);
    CHECK(rb.tokens == long_one.max_tokens);
  }
  SUBCASE("timeout") {
    SchedulerOptions o = options();
    o.timeout_s = 1e-6;  // past before the loop sees the request
    Scheduler sched(generator(kGpt2, model), o);
    const Result r = collect(*sched.submit({long_one}))[0];
    CHECK(r.finish == Finish::timeout);
    CHECK(r.tokens == 0);
  }
  SUBCASE("errors name the field") {
    Scheduler sched(generator(kGpt2, model), options(4));
    auto starts = [&](SeqRequest s, const std::string& field) {
      try {
        sched.submit({s});
      } catch (const Error& e) {
        return std::string(e.what()).rfind(field + ":", 0) == 0;
      }
      return false;
    };
    SeqRequest s = long_one;
    s.prompt = {};
    CHECK(starts(s, "prompt"));
    s = long_one;
    s.prompt = {50257};
    CHECK(starts(s, "prompt"));
    s = long_one;
    s.max_tokens = 0;
    CHECK(starts(s, "max_tokens"));
    s.max_tokens = 121;  // 8 + 121 > 128 positions
    CHECK(starts(s, "max_tokens"));
    s = long_one;
    s.temperature = -1;
    CHECK(starts(s, "temperature"));
    s = long_one;
    s.top_p = 0;
    CHECK(starts(s, "top_p"));
    s = long_one;
    s.top_k = -2;
    CHECK(starts(s, "top_k"));
    s = long_one;
    s.repetition_penalty = 0;
    CHECK(starts(s, "repetition_penalty"));
    s = long_one;
    s.stop = {""};
    CHECK(starts(s, "stop"));
    CHECK_THROWS_WITH_AS(sched.submit(std::vector<SeqRequest>(5, long_one)),
                         doctest::Contains("n: "), Error);
    sched.close();
    CHECK_THROWS_AS(sched.submit({long_one}), serve::Unavailable);
  }
  SUBCASE("a request larger than the whole KV budget") {
    SchedulerOptions o = options();
    o.kv_budget_bytes = 1 << 10;
    Scheduler sched(generator(kGpt2, model), o);
    CHECK_THROWS_WITH_AS(sched.submit({long_one}), doctest::Contains("max_tokens: "), Error);
  }
  SUBCASE("drain lets running requests finish") {
    Scheduler sched(generator(kGpt2, model), options());
    SeqRequest s = long_one;
    s.max_tokens = 20;
    auto t = sched.submit({s});
    sched.close();
    CHECK(sched.drain(std::chrono::steady_clock::now() + std::chrono::seconds(30)));
    const Result r = collect(*t)[0];
    CHECK(r.finish == Finish::length);
    CHECK(r.tokens == 20);
  }
}
