#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
// The C++ API (include/tessera/tessera.hpp) as a program sees it: loading, run, generation with
// streaming and cancellation, embeddings, tokenizers, errors, and many sessions on one model.
// Models: the shipped demo (TESSERA_DEMO_MODEL) and the random-weight gpt2 and bert checkpoints
// with the real vocabularies that tests/api/make_api_models.py writes (TESSERA_API_MODELS).
#include <doctest/doctest.h>

#include <tessera/tessera.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <tessera/tessera.hpp>
#include <thread>
#include <utility>
#include <vector>

namespace {

const std::string kDemo = TESSERA_DEMO_MODEL;
const std::string kGpt2 = std::string(TESSERA_API_MODELS) + "/gpt2";
const std::string kBert = std::string(TESSERA_API_MODELS) + "/bert";

// The message of the tessera::Error that f throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  }
  return "";
}

// ModelOptions with one field set (designated initializers that omit fields trip g++ 12's
// -Wmissing-field-initializers).
tessera::ModelOptions threads(int n) {
  tessera::ModelOptions o;
  o.threads = n;
  return o;
}
tessera::ModelOptions isa(const std::string& name) {
  tessera::ModelOptions o;
  o.isa = name;
  return o;
}
tessera::ModelOptions passes(const std::string& spec) {
  tessera::ModelOptions o;
  o.passes = spec;
  return o;
}
tessera::ModelOptions dtype(const std::string& type) {
  tessera::ModelOptions o;
  o.dtype = type;
  return o;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool same_bytes(const tessera::TensorView& a, const tessera::TensorView& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

tessera::TensorView ids_view(const std::vector<int64_t>& ids, int64_t rows) {
  return {tessera::DType::i64, {rows, static_cast<int64_t>(ids.size()) / rows}, ids.data(), {}};
}

}  // namespace

TEST_CASE("version: the headers' and the library's agree") {
  CHECK(std::string(tessera::version()) == TESSERA_VERSION_STRING);
  CHECK(std::string(tessera_version()) == TESSERA_VERSION_STRING);
  CHECK(std::string(TESSERA_VERSION_STRING) == std::to_string(TESSERA_VERSION_MAJOR) + "." +
                                                   std::to_string(TESSERA_VERSION_MINOR) + "." +
                                                   std::to_string(TESSERA_VERSION_PATCH));
}

TEST_CASE("demo model: generation from text, greedy and beam") {
  tessera::Model model(kDemo, threads(2));
  CHECK(model.family() == "transformer");
  CHECK(model.can_generate());
  CHECK_FALSE(model.can_embed());
  tessera::Session session(model);
  CHECK(session.complete("1 May 2020") == "2020-05-01");
  tessera::GenerateOptions beam;
  beam.method = tessera::Method::beam;
  beam.num_beams = 3;
  beam.num_return_sequences = 2;
  const auto out = session.generate({"23 March 1999", "July 4, 1976"}, beam);
  REQUIRE(out.size() == 2);
  REQUIRE(out[0].sequences.size() == 2);
  CHECK(out[0].sequences[0].text == "1999-03-23");
  CHECK(out[1].sequences[0].text == "1976-07-04");
  CHECK(out[0].sequences[0].score >= out[0].sequences[1].score);
  CHECK(out[0].sequences[0].finish == tessera::FinishReason::eos);
}

TEST_CASE("run: named tensors in and out, the caller's buffers read in place") {
  tessera::Model model(kGpt2);
  tessera::Session session(model);
  const std::vector<int64_t> ids = {464, 2068, 7586, 21831, 11687, 625, 262, 16931};
  const auto out = session.run({{"input_ids", ids_view(ids, 2)}});
  REQUIRE(out.count("logits") == 1);
  const tessera::TensorView& logits = out.at("logits");
  CHECK(logits.dtype == tessera::DType::f32);
  CHECK(logits.shape == std::vector<int64_t>{2, 4, 50257});
  // The same request again, and from another session: the same bytes.
  tessera::Session other(model);
  CHECK(same_bytes(session.run({{"input_ids", ids_view(ids, 2)}}).at("logits"), logits));
  CHECK(same_bytes(other.run({{"input_ids", ids_view(ids, 2)}}).at("logits"), logits));
  // Outputs own their memory: they outlive the session.
  tessera::TensorView kept;
  {
    tessera::Session s(model);
    kept = s.run({{"input_ids", ids_view(ids, 2)}}).at("logits");
  }
  CHECK(same_bytes(kept, logits));
  CHECK(session.arena_bytes() > 0);
}

TEST_CASE("dtype: bf16 and int8 GEMM weights, close to f32; the model says which it runs") {
  const std::vector<int64_t> ids = {464, 2068, 7586, 21831, 11687, 625, 262, 16931};
  tessera::Model f32(kGpt2);
  CHECK(f32.dtype() == "f32");
  tessera::Session s32(f32);
  const auto want = s32.run({{"input_ids", ids_view(ids, 2)}}).at("logits");
  const float* w = want.as<float>();
  double max_abs = 0;
  for (int64_t i = 0; i < want.numel(); ++i) max_abs = std::max<double>(max_abs, std::fabs(w[i]));
  // Tolerance as tests/lowp_cli.py: u (2^-8 bf16, 2^-7 int8) per GEMM in series, 2 layers x 4 +
  // the head, relative to max |logit|.
  for (const auto& [type, u] : {std::pair<std::string, double>{"bf16", 1.0 / 256},
                                std::pair<std::string, double>{"int8", 1.0 / 128}}) {
    tessera::Model m(kGpt2, dtype(type));
    CHECK(m.dtype() == type);
    tessera::Session s(m);
    const auto got = s.run({{"input_ids", ids_view(ids, 2)}}).at("logits");
    double err = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      CHECK(std::isfinite(got.as<float>()[i]));
      err = std::max<double>(err, std::fabs(got.as<float>()[i] - w[i]));
    }
    INFO(type << ": max |difference| / max |logit| = " << err / max_abs);
    CHECK(err / max_abs <= 9 * u);
    // Generation runs on the same weights.
    tessera::GenerateOptions g;
    g.max_new_tokens = 3;
    CHECK(s.generate_ids({{464, 2068}}, g).at(0).sequences.at(0).ids.size() == 3);
  }
  CHECK(contains(error_of([] { tessera::Model m(kGpt2, dtype("fp8")); }), "fp8"));
  CHECK(contains(error_of([] { tessera::Model m(kGpt2, dtype("fp8")); }), "f32, bf16 or int8"));
}

TEST_CASE("generate: streamed pieces make the text; sampling is reproducible; cancellation") {
  tessera::Model model(kGpt2, threads(1));
  tessera::Session session(model);
  tessera::GenerateOptions opt;
  opt.method = tessera::Method::sample;
  opt.seed = 7;
  opt.max_new_tokens = 20;
  opt.top_k = 50;
  std::string streamed;
  size_t tokens = 0;
  const auto out = session.generate({"The quick brown fox"}, opt, [&](const tessera::Token& t) {
    CHECK(t.prompt == 0);
    streamed += t.text;
    ++tokens;
    return true;
  });
  REQUIRE(out.size() == 1);
  const tessera::Sequence& seq = out[0].sequences.at(0);
  CHECK(seq.text == streamed);
  CHECK(seq.ids.size() == tokens);
  CHECK(seq.text == model.detokenize(seq.ids));
  // The same seed: the same text, also through generate_ids from the prompt's ids.
  CHECK(session.complete("The quick brown fox", opt) == seq.text);
  const auto by_ids = session.generate_ids({model.tokenize("The quick brown fox")}, opt);
  CHECK(by_ids[0].sequences[0].ids == seq.ids);
  CHECK(by_ids[0].sequences[0].text.empty());

  size_t seen = 0;
  CHECK_THROWS_AS(session.complete("The quick brown fox", opt,
                                   [&](const tessera::Token&) { return ++seen < 3; }),
                  tessera::Cancelled);
  CHECK(seen == 3);
  // The session is still usable after a cancelled generation.
  CHECK(session.complete("The quick brown fox", opt) == seq.text);
}

TEST_CASE("tokenize and detokenize with the directory's tokenizer") {
  tessera::Model gpt2(kGpt2);
  CHECK(gpt2.tokenize("Hello world") == std::vector<int64_t>{15496, 995});
  CHECK(gpt2.detokenize({15496, 995}) == "Hello world");
  tessera::Model bert(kBert);
  CHECK(bert.tokenize("Hello world", /*special=*/true) ==
        std::vector<int64_t>{101, 7592, 2088, 102});
  CHECK(bert.detokenize({101, 7592, 2088, 102}) == "hello world");
  CHECK(bert.detokenize({101, 7592, 2088, 102}, /*special=*/true) == "[CLS] hello world [SEP]");
}

TEST_CASE("embed: pooled vectors of texts and of ids") {
  tessera::Model model(kBert);
  CHECK(model.can_embed());
  tessera::Session session(model);
  tessera::EmbedOptions opt;
  opt.pooling = tessera::Pooling::mean;
  opt.normalize = true;
  const std::vector<std::string> texts = {"Hello world", "a longer sentence than the first"};
  const tessera::TensorView v = session.embed(texts, opt);
  REQUIRE(v.shape == std::vector<int64_t>{2, 64});
  for (int r = 0; r < 2; ++r) {
    double norm = 0;
    for (int j = 0; j < 64; ++j)
      norm += double(v.as<float>()[r * 64 + j]) * v.as<float>()[r * 64 + j];
    CHECK(std::sqrt(norm) == doctest::Approx(1.0).epsilon(1e-5));
  }
  std::vector<std::vector<int64_t>> ids;
  for (const auto& t : texts) ids.push_back(model.tokenize(t, true));
  CHECK(same_bytes(session.embed_ids(ids, opt), v));
  // One at a time (no padding): the same vectors.
  opt.batch_size = 1;
  CHECK(same_bytes(session.embed(texts, opt), v));
}

TEST_CASE("errors name what is wrong") {
  CHECK(contains(error_of([] { tessera::Model m("/nonexistent/model"); }), "/nonexistent/model"));
  CHECK(contains(error_of([] { tessera::Model m(kDemo, threads(-1)); }), "threads"));
  CHECK(contains(error_of([] { tessera::Model m(kDemo, isa("sse9")); }), "sse9"));
  CHECK(contains(error_of([] { tessera::Model m(kDemo, passes("nosuchpass")); }), "nosuchpass"));

  tessera::Model gpt2(kGpt2);
  tessera::Session s(gpt2);
  const std::vector<int64_t> ids = {1, 2, 3};
  CHECK(contains(error_of([&] { s.run({{"tokens", ids_view(ids, 1)}}); }), "tokens"));
  CHECK(contains(error_of([&] { s.run({}); }), "input_ids"));
  const std::vector<float> f = {1, 2, 3};
  CHECK(contains(error_of([&] {
                   s.run({{"input_ids", {tessera::DType::f32, {1, 3}, f.data(), {}}}});
                 }),
                 "input_ids"));
  CHECK(contains(error_of([&] {
                   s.run({{"input_ids", {tessera::DType::i64, {1, 3}, nullptr, {}}}});
                 }),
                 "null"));
  CHECK(contains(error_of([&] {
                   s.run({{"input_ids", {tessera::DType::i64, {1, -3}, ids.data(), {}}}});
                 }),
                 "negative"));
  const std::vector<int64_t> big = {50257};
  CHECK(contains(error_of([&] { s.run({{"input_ids", ids_view(big, 1)}}); }), "50257"));

  tessera::GenerateOptions bad;
  bad.method = tessera::Method::sample;
  bad.temperature = 0;
  CHECK(contains(error_of([&] { s.complete("x", bad); }), "temperature"));
  bad = {};
  bad.max_new_tokens = 1000;
  CHECK(contains(error_of([&] { s.complete("x", bad); }), "max_new_tokens"));
  bad = {};
  bad.num_return_sequences = 2;
  CHECK(contains(error_of([&] { s.complete("x", bad); }), "num_return_sequences"));
  bad = {};
  bad.stop = {"."};
  CHECK(contains(error_of([&] { s.generate_ids({{1, 2}}, bad); }), "stop"));
  CHECK(contains(error_of([&] { s.generate_ids({{}}); }), "prompt 0"));
  CHECK(contains(error_of([&] { s.embed({"x"}); }), "bert"));

  tessera::Model bert(kBert);
  tessera::Session b(bert);
  CHECK(contains(error_of([&] { b.complete("x"); }), "gpt2"));
  tessera::EmbedOptions pooler;
  pooler.pooling = tessera::Pooling::pooler;
  CHECK(error_of([&] { b.embed({"x"}, pooler); }).empty());  // this checkpoint has a pooler
  CHECK(contains(error_of([&] { b.embed_ids({{}}); }), "input 0"));
}

TEST_CASE("many sessions on one model: each result bit-identical to the request alone") {
  tessera::Model gpt2(kGpt2, threads(2));
  tessera::Model bert(kBert, threads(2));
  constexpr int kThreads = 4;
  auto gen_options = [](int i) {
    tessera::GenerateOptions o;
    o.method = i % 2 ? tessera::Method::sample : tessera::Method::greedy;
    o.seed = 100 + i;
    o.max_new_tokens = 24;
    return o;
  };
  const std::vector<std::string> prompts = {"Once upon a time", "The weather today",
                                            "In the beginning", "A B C D"};
  auto texts_of = [](const std::vector<tessera::Completion>& c) {
    std::vector<std::string> t;
    for (const auto& x : c) t.push_back(x.sequences[0].text);
    return t;
  };
  // Alone, one after another.
  std::vector<std::vector<std::string>> alone(kThreads);
  std::vector<tessera::TensorView> alone_embed(kThreads), alone_logits(kThreads);
  const std::vector<int64_t> ids = {464, 2068, 7586, 21831, 11687, 625};
  for (int i = 0; i < kThreads; ++i) {
    tessera::Session s(gpt2);
    alone[i] = texts_of(s.generate({prompts[i]}, gen_options(i)));
    alone_logits[i] = s.run({{"input_ids", ids_view(ids, 1 + i % 2)}}).at("logits");
    tessera::Session e(bert);
    alone_embed[i] = e.embed({prompts[i], prompts[(i + 1) % kThreads]});
  }
  // At once, several rounds.
  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<std::string>> got(kThreads);
    std::vector<tessera::TensorView> got_embed(kThreads), got_logits(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([&, i] {
        tessera::Session s(gpt2);
        tessera::Session e(bert);
        got[i] = texts_of(s.generate({prompts[i]}, gen_options(i)));
        got_embed[i] = e.embed({prompts[i], prompts[(i + 1) % kThreads]});
        got_logits[i] = s.run({{"input_ids", ids_view(ids, 1 + i % 2)}}).at("logits");
      });
    for (auto& t : threads) t.join();
    for (int i = 0; i < kThreads; ++i) {
      CHECK(got[i] == alone[i]);
      CHECK(same_bytes(got_embed[i], alone_embed[i]));
      CHECK(same_bytes(got_logits[i], alone_logits[i]));
    }
  }
}
