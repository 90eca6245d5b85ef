// Generation algorithms (engine/generate/generation.h) on a fake model whose logits are a known
// function of the token history, checked against plain re-implementations and exhaustive search;
// then the transformer family's CausalLM (models/transformer_lm.h) on the demo model.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "engine/generate/generation.h"
#include "engine/io/model_dir.h"
#include "engine/text/tokenizer.h"
#include "kernels/kernels.h"
#include "models/transformer_lm.h"
#include "tests/test_util.h"

using namespace tessera;

namespace {

using History = std::vector<int64_t>;
using LogitsFn = std::function<std::vector<float>(const History&)>;

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Logits in [-3, 3], a hash of the whole history: every sequence has its own distribution.
LogitsFn hashed_logits(int64_t vocab, uint64_t salt = 0) {
  return [vocab, salt](const History& h) {
    uint64_t x = 1469598103934665603ULL ^ salt;
    for (int64_t id : h) x = (x ^ static_cast<uint64_t>(id + 1)) * 1099511628211ULL;
    std::vector<float> out(static_cast<size_t>(vocab));
    for (int64_t v = 0; v < vocab; ++v)
      out[v] =
          static_cast<float>((splitmix(x + static_cast<uint64_t>(v)) >> 11) * 0x1.0p-53 * 6 - 3);
    return out;
  };
}

// A CausalLM over `fn`: each row's logits are fn(prompt ++ tokens fed so far). Records what it
// was fed and checks every call it gets.
class FakeLM : public CausalLM {
 public:
  FakeLM(int64_t vocab, int64_t max_pos, LogitsFn fn, bool prefix = true)
      : vocab_(vocab), max_pos_(max_pos), fn_(std::move(fn)), prefix_(prefix) {}
  int64_t vocab_size() const override { return vocab_; }
  int64_t max_positions() const override { return max_pos_; }
  bool prompts_are_decoder_prefix() const override { return prefix_; }
  Tensor start(const std::vector<std::vector<int64_t>>& prompts) override {
    ++starts;
    REQUIRE(!prompts.empty());
    for (const auto& p : prompts) REQUIRE(!p.empty());
    rows = prompts;
    return logits();
  }
  Tensor step(const std::vector<int64_t>& tokens) override {
    REQUIRE(tokens.size() == rows.size());
    fed.push_back(tokens);
    for (size_t i = 0; i < rows.size(); ++i) {
      REQUIRE(tokens[i] >= 0);
      REQUIRE(tokens[i] < vocab_);
      rows[i].push_back(tokens[i]);
    }
    return logits();
  }
  void select_rows(const std::vector<int64_t>& sel) override {
    ++selects;
    std::vector<History> next;
    for (int64_t r : sel) {
      REQUIRE(r >= 0);
      REQUIRE(r < static_cast<int64_t>(rows.size()));
      next.push_back(rows[r]);
    }
    rows = std::move(next);
  }

  std::vector<History> rows;              // per row: prompt ++ fed tokens
  std::vector<std::vector<int64_t>> fed;  // per step() call
  int starts = 0, selects = 0;

 private:
  Tensor logits() const {
    Tensor t(DType::f32, {static_cast<int64_t>(rows.size()), vocab_});
    for (size_t i = 0; i < rows.size(); ++i) {
      auto l = fn_(rows[i]);
      std::copy(l.begin(), l.end(), t.data<float>() + i * vocab_);
    }
    return t;
  }
  int64_t vocab_, max_pos_;
  LogitsFn fn_;
  bool prefix_;
};

using tessera::test::contains;
using tessera::test::error_of;

// The reference: one row, plain loop, greedy with the CTRL repetition penalty.
GeneratedSequence reference_greedy(const LogitsFn& fn, int64_t vocab, History prompt,
                                   int64_t max_new, int64_t eos, float penalty = 1.0f) {
  GeneratedSequence s;
  History h = prompt;
  for (int64_t t = 0; t < max_new; ++t) {
    auto l = fn(h);
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (int64_t id : h)
      if (!seen[id]) {
        seen[id] = true;
        l[id] = l[id] > 0 ? l[id] / penalty : l[id] * penalty;
      }
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (l[v] > l[best]) best = v;
    double m = *std::max_element(l.begin(), l.end()), z = 0;
    for (float x : l) z += std::exp(x - m);
    s.logprob += l[best] - m - std::log(z);
    if (best == eos) {
      s.finish = FinishReason::eos;
      return s;
    }
    s.ids.push_back(best);
    h.push_back(best);
  }
  s.finish = FinishReason::length;
  return s;
}

double logprob_of(const std::vector<float>& l, int64_t v) {
  double m = *std::max_element(l.begin(), l.end()), z = 0;
  for (float x : l) z += std::exp(static_cast<double>(x) - m);
  return l[v] - m - std::log(z);
}

struct Scored {
  std::vector<int64_t> ids;
  FinishReason finish;
  double logprob, score;
};

// Every sequence of at most max_new tokens: ended by eos (length counts it) or by the budget.
std::vector<Scored> exhaustive(const LogitsFn& fn, int64_t vocab, const History& prompt,
                               int64_t max_new, int64_t eos, double lp) {
  std::vector<Scored> all;
  std::function<void(History&, double)> rec = [&](History& ids, double sum) {
    History h = prompt;
    h.insert(h.end(), ids.begin(), ids.end());
    const auto l = fn(h);
    for (int64_t v = 0; v < vocab; ++v) {
      const double s = sum + logprob_of(l, v);
      const int64_t len = static_cast<int64_t>(ids.size()) + 1;
      if (v == eos) {
        all.push_back({ids, FinishReason::eos, s, s / std::pow(double(len), lp)});
      } else {
        ids.push_back(v);
        if (len == max_new)
          all.push_back({ids, FinishReason::length, s, s / std::pow(double(len), lp)});
        else
          rec(ids, s);
        ids.pop_back();
      }
    }
  };
  History ids;
  rec(ids, 0.0);
  std::stable_sort(all.begin(), all.end(),
                   [](const Scored& a, const Scored& b) { return a.score > b.score; });
  return all;
}

std::vector<std::vector<int64_t>> ids_of(const std::vector<GenerationResult>& r) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& g : r)
    for (const auto& s : g.sequences) out.push_back(s.ids);
  return out;
}

}  // namespace

TEST_CASE("greedy: each row equals a plain one-row loop; rows stop on their own") {
  const int64_t vocab = 7, eos = 0;
  const LogitsFn fn = hashed_logits(vocab, 1);
  const std::vector<History> prompts = {{3}, {4, 5, 6}, {1, 2}, {6, 6, 6, 6, 1}, {2}};
  for (float penalty : {1.0f, 1.7f}) {
    FakeLM lm(vocab, 64, fn);
    GenerationOptions o;
    o.max_new_tokens = 12;
    o.eos_ids = {eos};
    o.repetition_penalty = penalty;
    std::vector<std::vector<int64_t>> streamed(prompts.size());
    auto res = generate(lm, prompts, o, [&](int64_t p, int64_t s, int64_t tok) {
      CHECK(s == 0);
      streamed[p].push_back(tok);
    });
    REQUIRE(res.size() == prompts.size());
    std::set<FinishReason> reasons;
    for (size_t p = 0; p < prompts.size(); ++p) {
      const auto want = reference_greedy(fn, vocab, prompts[p], o.max_new_tokens, eos, penalty);
      REQUIRE(res[p].sequences.size() == 1);
      const auto& got = res[p].sequences[0];
      CHECK(got.ids == want.ids);
      CHECK(got.finish == want.finish);
      CHECK(got.logprob == doctest::Approx(want.logprob).epsilon(1e-6));
      CHECK(got.score == got.logprob);
      CHECK(streamed[p] == got.ids);
      reasons.insert(got.finish);
      // Once finished, the row is fed pad (= eos here) and its output stays frozen.
      const size_t generated = got.ids.size() + (got.finish == FinishReason::eos ? 1 : 0);
      for (size_t s = generated; s < lm.fed.size(); ++s) CHECK(lm.fed[s][p] == eos);
    }
    MESSAGE("penalty " << penalty << ": " << lm.fed.size() << " steps, finish reasons "
                       << reasons.size());
    CHECK(reasons.count(FinishReason::eos) == 1);  // the case exercises both endings
    CHECK(reasons.count(FinishReason::length) == 1);
    CHECK(lm.selects == 0);
  }
}

TEST_CASE("max_new_tokens, eos and stop strings end a sequence") {
  const int64_t vocab = 6;
  // Always continues with (last + 1) mod 6: a counter 1, 2, 3, 4, 5, 0, 1, ...
  const LogitsFn counter = [](const History& h) {
    std::vector<float> l(6, 0.0f);
    l[(h.back() + 1) % 6] = 5.0f;
    return l;
  };
  FakeLM lm(vocab, 100, counter);
  GenerationOptions o;
  o.max_new_tokens = 3;
  auto r = generate(lm, {{1}}, o);
  CHECK(r[0].sequences[0].ids == History{2, 3, 4});
  CHECK(r[0].sequences[0].finish == FinishReason::length);
  CHECK(lm.fed.size() == 2);  // the last token is never fed back

  o.max_new_tokens = 20;
  o.eos_ids = {5, 0};
  r = generate(lm, {{1}, {3}, {5}}, o);
  CHECK(r[0].sequences[0].ids == History{2, 3, 4});  // then 5: eos, not in ids
  CHECK(r[0].sequences[0].finish == FinishReason::eos);
  CHECK(r[1].sequences[0].ids == History{4});
  CHECK(r[2].sequences[0].ids == History{});  // 0 is an eos too
  CHECK(r[2].sequences[0].finish == FinishReason::eos);
  // eos has probability e^5 / (e^5 + 5): its log-probability is counted in the score.
  const double lp_tok = 5.0 - std::log(std::exp(5.0) + 5.0);
  CHECK(r[0].sequences[0].logprob == doctest::Approx(4 * lp_tok));

  // Stop strings: ids spelled as letters; "cd" spans two tokens, "e" one.
  o.eos_ids = {};
  o.stop_strings = {"cd", "zz"};
  o.decode_text = [](const History& ids) {
    std::string s;
    for (int64_t id : ids) s += static_cast<char>('a' + id);
    return s;
  };
  r = generate(lm, {{0}, {2}, {3}}, o);
  CHECK(r[0].sequences[0].ids == History{1, 2, 3});  // "bcd": the completing token stays
  CHECK(r[0].sequences[0].finish == FinishReason::stop_string);
  CHECK(r[1].sequences[0].ids == History{3, 4, 5, 0, 1, 2, 3});  // "defabcd"
  CHECK(r[2].sequences[0].ids == History{4, 5, 0, 1, 2, 3});
  o.stop_strings = {"e"};
  r = generate(lm, {{2}}, o);
  CHECK(r[0].sequences[0].ids == History{3, 4});
  o.decode_text = nullptr;
  CHECK(contains(error_of([&] { generate(lm, {{2}}, o); }), "stop strings need a tokenizer"));
}

TEST_CASE("repetition penalty: the CTRL / Hugging Face definition") {
  std::vector<float> l = {2.0f, -2.0f, 0.5f, -1.0f, 3.0f};
  apply_repetition_penalty(l.data(), 5, {0, 1, 1, 0, 2, 9, -1}, 2.0f);  // 9, -1: out of range
  CHECK(l == std::vector<float>{1.0f, -4.0f, 0.25f, -1.0f, 3.0f});      // once per distinct id
  std::vector<float> m = {2.0f, -2.0f};
  apply_repetition_penalty(m.data(), 2, {0, 1}, 0.5f);  // < 1 encourages repetition
  CHECK(m == std::vector<float>{4.0f, -1.0f});
  // In generate: a decoder-only prompt counts as history, an encoder-decoder source does not.
  const LogitsFn fav3 = [](const History&) { return std::vector<float>{0.0f, 1.0f, 1.5f, 2.0f}; };
  GenerationOptions o;
  o.max_new_tokens = 1;
  o.repetition_penalty = 1.5f;  // 2 / 1.5 = 1.33 < 1.5: token 3 loses to 2
  FakeLM dec(4, 10, fav3, true), encdec(4, 10, fav3, false);
  CHECK(generate(dec, {{3}}, o)[0].sequences[0].ids == History{2});
  CHECK(generate(encdec, {{3}}, o)[0].sequences[0].ids == History{3});
  // Generated tokens count in both: with 2 tokens, 3 then 2 (3 penalised after its use).
  o.max_new_tokens = 2;
  CHECK(generate(encdec, {{1}}, o)[0].sequences[0].ids == History{3, 2});
}

TEST_CASE("sampling distribution: temperature, top-k (ties kept), top-p keeps the nucleus") {
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  auto softmax = [](std::vector<double> x) {
    double m = *std::max_element(x.begin(), x.end()), z = 0;
    for (double& v : x) z += (v = std::exp(v - m));
    for (double& v : x) v /= z;
    return x;
  };
  // Temperature only.
  auto p = sampling_distribution(l.data(), 5, 0.5f, 0, 1.0f);
  auto want = softmax({2.0, 6.0, 4.0, 6.0, -2.0});
  for (int i = 0; i < 5; ++i) CHECK(p[i] == doctest::Approx(want[i]).epsilon(1e-12));
  // top_k = 2: the two 3.0s; top_k = 3: and the 2.0; top_k = 1: both tied maxima stay.
  p = sampling_distribution(l.data(), 5, 1.0f, 2, 1.0f);
  CHECK(p == std::vector<double>{0, 0.5, 0, 0.5, 0});
  p = sampling_distribution(l.data(), 5, 1.0f, 1, 1.0f);
  CHECK(p == std::vector<double>{0, 0.5, 0, 0.5, 0});
  p = sampling_distribution(l.data(), 5, 1.0f, 3, 1.0f);
  CHECK(p[0] == 0);
  CHECK(p[4] == 0);
  CHECK(p[2] == doctest::Approx(std::exp(2.0) / (std::exp(2.0) + 2 * std::exp(3.0))));
  // top_p on probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logs).
  const std::vector<float> q = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  auto nucleus = [&](float top_p) {
    auto d = sampling_distribution(q.data(), 4, 1.0f, 0, top_p);
    std::vector<int> kept;
    double sum = 0;
    for (int i = 0; i < 4; ++i)
      if (d[i] > 0) kept.push_back(i);
    for (double x : d) sum += x;
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
    return kept;
  };
  CHECK(nucleus(0.3f) == std::vector<int>{1});
  CHECK(nucleus(0.55f) == std::vector<int>{1, 3});
  CHECK(nucleus(0.75f) == std::vector<int>{1, 3});
  CHECK(nucleus(0.85f) == std::vector<int>{0, 1, 3});
  CHECK(nucleus(0.97f) == std::vector<int>{0, 1, 2, 3});
  CHECK(nucleus(1.0f) == std::vector<int>{0, 1, 2, 3});
  // The kept probabilities are the renormalised originals.
  auto d = sampling_distribution(q.data(), 4, 1.0f, 0, 0.75f);
  CHECK(d[1] == doctest::Approx(0.5 / 0.8).epsilon(1e-6));
  CHECK(d[3] == doctest::Approx(0.3 / 0.8).epsilon(1e-6));
}

TEST_CASE("sampling: empirical frequencies match the filtered distribution") {
  // One prompt, 40,000 independent samples of one token (one random stream per sample).
  const int64_t vocab = 6, n = 40000;
  const std::vector<float> logits = {0.3f, 1.2f, -0.4f, 0.9f, 1.0f, -2.0f};
  FakeLM lm(vocab, 10, [&](const History&) { return logits; });
  GenerationOptions o;
  o.method = DecodingMethod::sample;
  o.max_new_tokens = 1;
  o.temperature = 0.7f;
  o.top_k = 4;      // drops 2 and 5
  o.top_p = 0.85f;  // then the nucleus
  o.seed = 1234;
  o.num_return_sequences = n;
  const auto probs = sampling_distribution(logits.data(), vocab, 0.7f, 4, 0.85f);
  auto res = generate(lm, {{1}}, o);
  REQUIRE(res[0].sequences.size() == static_cast<size_t>(n));
  std::vector<int64_t> count(vocab, 0);
  for (const auto& s : res[0].sequences) ++count[s.ids.at(0)];
  // Bound: each count is Binomial(n, p); |freq - p| <= 4.5 standard deviations
  // (two-sided tail 7e-6 per token, so < 5e-5 for the test; the seed is fixed anyway).
  int kept = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double f = static_cast<double>(count[v]) / n, pv = probs[v];
    const double sd = std::sqrt(pv * (1 - pv) / n);
    MESSAGE("token " << v << ": p " << pv << ", frequency " << f << ", |diff| / sd "
                     << (sd > 0 ? std::fabs(f - pv) / sd : 0.0));
    if (pv == 0) {
      CHECK(count[v] == 0);
    } else {
      ++kept;
      CHECK(std::fabs(f - pv) <= 4.5 * sd);
    }
  }
  CHECK(kept == 3);  // top-k 4 leaves {0, 1, 3, 4} (p .10 .37 .24 .28); top-p 0.85 drops 0
}

TEST_CASE("sampling: top_k = 1 is greedy; the seed makes it reproducible") {
  const int64_t vocab = 9;
  const LogitsFn fn = hashed_logits(vocab, 2);
  const std::vector<History> prompts = {{1, 2}, {3}, {4, 4, 4}};
  GenerationOptions g;
  g.max_new_tokens = 10;
  g.eos_ids = {0};
  FakeLM a(vocab, 64, fn);
  const auto greedy = ids_of(generate(a, prompts, g));
  GenerationOptions s = g;
  s.method = DecodingMethod::sample;
  s.top_k = 1;
  s.temperature = 1.3f;
  for (uint64_t seed : {0ULL, 7ULL, 123456789ULL}) {
    s.seed = seed;
    FakeLM b(vocab, 64, fn);
    CHECK(ids_of(generate(b, prompts, s)) == greedy);
  }
  // Unfiltered sampling: same seed, same output; another seed, another output.
  s.top_k = 0;
  s.temperature = 1.0f;
  s.num_return_sequences = 3;
  s.seed = 42;
  FakeLM c(vocab, 64, fn), d(vocab, 64, fn), e(vocab, 64, fn);
  const auto first = ids_of(generate(c, prompts, s));
  CHECK(ids_of(generate(d, prompts, s)) == first);
  s.seed = 43;
  CHECK(ids_of(generate(e, prompts, s)) != first);
  CHECK(c.selects == 1);  // the prompts were duplicated once, after the first token
  // A prompt's samples do not depend on the rest of the batch: prompt 2 alone, row_offset 2.
  s.seed = 42;
  s.row_offset = 2;
  FakeLM f(vocab, 64, fn);
  const auto alone = ids_of(generate(f, {prompts[2]}, s));
  CHECK(alone == std::vector<History>(first.begin() + 6, first.end()));
}

TEST_CASE("beam search equals exhaustive search when the beams can hold every sequence") {
  // 1 + 3 + 9 + 27 sequences end with eos, 81 run to the budget.
  const int64_t vocab = 4, eos = 0, max_new = 4;
  for (bool prefix : {true, false})
    for (double lp : {0.0, 1.0, -0.5, 2.0}) {
      const LogitsFn fn = hashed_logits(vocab, 3);
      const History prompt = {2, 3};
      const auto all = exhaustive(fn, vocab, prompt, max_new, eos, lp);
      REQUIRE(all.size() == 121);
      FakeLM lm(vocab, 64, fn, prefix);
      GenerationOptions o;
      o.method = DecodingMethod::beam;
      o.max_new_tokens = max_new;
      o.eos_ids = {eos};
      o.num_beams = 128;
      o.num_return_sequences = 128;
      o.length_penalty = static_cast<float>(lp);
      o.early_stopping = EarlyStopping::never;
      auto res = generate(lm, {prompt}, o);
      const auto& seqs = res[0].sequences;
      REQUIRE(seqs.size() == all.size());
      for (size_t i = 0; i < seqs.size(); ++i) {
        CHECK(seqs[i].score == doctest::Approx(all[i].score).epsilon(1e-9));
        CHECK(seqs[i].logprob == doctest::Approx(all[i].logprob).epsilon(1e-9));
        if (i + 1 < seqs.size() && all[i].score - all[i + 1].score > 1e-9) {
          CHECK(seqs[i].ids == all[i].ids);  // order is only defined up to exact ties
          CHECK(seqs[i].finish == all[i].finish);
        }
      }
    }
}

TEST_CASE("beam search finds the best sequence where greedy does not") {
  // eos = 0. First token: 1 (p .5) or 2 (p .4). After 1: uniform, so greedy takes eos
  // (prob .5 / 3 = .167). After 2: eos with p .9 (prob .36) -- beam search's answer.
  const LogitsFn fn = [](const History& h) {
    if (h.size() == 1) return std::vector<float>{std::log(0.1f), std::log(0.5f), std::log(0.4f)};
    if (h[1] == 1) return std::vector<float>{0.0f, 0.0f, 0.0f};
    return std::vector<float>{std::log(0.9f), std::log(0.05f), std::log(0.05f)};
  };
  GenerationOptions o;
  o.max_new_tokens = 2;
  o.eos_ids = {0};
  FakeLM g(3, 10, fn);
  const auto greedy = generate(g, {{1}}, o)[0].sequences[0];
  CHECK(greedy.ids == History{1});
  CHECK(greedy.logprob == doctest::Approx(std::log(0.5 / 3)));
  o.method = DecodingMethod::beam;
  o.num_beams = 2;
  o.num_return_sequences = 2;
  o.length_penalty = 0.0f;
  FakeLM b(3, 10, fn);
  const auto beams = generate(b, {{1}}, o)[0].sequences;
  const auto all = exhaustive(fn, 3, {1}, 2, 0, 0.0);
  REQUIRE(beams.size() == 2);
  CHECK(beams[0].ids == History{2});
  CHECK(beams[0].ids == all[0].ids);
  CHECK(beams[0].finish == FinishReason::eos);
  CHECK(beams[0].score == doctest::Approx(std::log(0.36)));
  CHECK(beams[1].score <= beams[0].score);
  // num_beams = 1 is greedy.
  o.num_beams = 1;
  o.num_return_sequences = 1;
  FakeLM one(3, 10, fn);
  CHECK(generate(one, {{1}}, o)[0].sequences[0].ids == greedy.ids);
}

TEST_CASE("beam search: length penalty, early stopping, batched ragged prompts") {
  const int64_t vocab = 6, eos = 0;
  const LogitsFn fn = hashed_logits(vocab, 4);
  const std::vector<History> prompts = {{1}, {2, 3, 4}, {5, 5}, {3, 1, 4, 1, 5}};
  for (auto rule : {EarlyStopping::heuristic, EarlyStopping::first, EarlyStopping::never})
    for (float lp : {1.0f, 0.0f, -1.0f}) {
      GenerationOptions o;
      o.method = DecodingMethod::beam;
      o.max_new_tokens = 7;
      o.eos_ids = {eos};
      o.num_beams = 3;
      o.num_return_sequences = 3;
      o.length_penalty = lp;
      o.early_stopping = rule;
      FakeLM batch(vocab, 64, fn);
      const auto together = generate(batch, prompts, o);
      for (size_t p = 0; p < prompts.size(); ++p) {
        FakeLM single(vocab, 64, fn);
        const auto alone = generate(single, {prompts[p]}, o);
        REQUIRE(alone[0].sequences.size() == together[p].sequences.size());
        for (size_t i = 0; i < alone[0].sequences.size(); ++i) {
          const auto& s = together[p].sequences[i];
          CHECK(s.ids == alone[0].sequences[i].ids);
          CHECK(s.score == alone[0].sequences[i].score);
          // score = logprob / length^lp, the length counting the eos.
          const double len = static_cast<double>(s.ids.size()) + (s.finish == FinishReason::eos);
          CHECK(s.score == doctest::Approx(s.logprob / std::pow(len, lp)).epsilon(1e-12));
          if (i > 0) CHECK(s.score <= together[p].sequences[i - 1].score);
          // The log-probability is the sequence's own under the model.
          History h = prompts[p];
          double sum = 0;
          for (size_t k = 0; k <= s.ids.size(); ++k) {
            if (k == s.ids.size() && s.finish != FinishReason::eos) break;
            const int64_t tok = k < s.ids.size() ? s.ids[k] : eos;
            sum += logprob_of(fn(h), tok);
            h.push_back(tok);
          }
          CHECK(s.logprob == doctest::Approx(sum).epsilon(1e-9));
        }
      }
      // Exact early stopping returns what running to the end returns; the others no better.
      const auto best = exhaustive(fn, vocab, prompts[0], 7, eos, lp)[0];
      CHECK(together[0].sequences[0].score <= best.score + 1e-9);
    }
}

TEST_CASE("the model's position limit and bad options are errors before anything runs") {
  const LogitsFn fn = hashed_logits(5);
  FakeLM lm(5, 10, fn);
  GenerationOptions o;
  o.max_new_tokens = 6;
  CHECK(generate(lm, {{1, 2, 3, 4}}, o).size() == 1);  // 4 + 6 = 10: fits
  lm.starts = 0;
  std::string msg = error_of([&] { generate(lm, {{1}, {1, 2, 3, 4, 5}}, o); });
  CHECK(contains(msg, "prompt 1: 5 prompt tokens + 6 new tokens exceed the model's maximum of 10"));
  CHECK(lm.starts == 0);
  // Encoder-decoder: the source does not count, only the generated tokens.
  FakeLM encdec(5, 10, fn, false);
  o.max_new_tokens = 10;
  CHECK(generate(encdec, {{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}}, o).size() == 1);
  o.max_new_tokens = 11;
  CHECK(contains(error_of([&] { generate(encdec, {{1}}, o); }), "11 new tokens exceed"));
  o.max_new_tokens = 2;
  CHECK(contains(error_of([&] { generate(lm, {{1}, {}}, o); }), "prompt 1 is empty"));
  auto bad = [&](auto set) {
    GenerationOptions b;
    b.max_new_tokens = 2;
    set(b);
    return error_of([&] { generate(lm, {{1}}, b); });
  };
  CHECK(contains(bad([](GenerationOptions& b) { b.max_new_tokens = 0; }), "max_new_tokens"));
  CHECK(contains(bad([](GenerationOptions& b) {
                   b.method = DecodingMethod::sample;
                   b.temperature = 0;
                 }),
                 "temperature"));
  CHECK(contains(bad([](GenerationOptions& b) {
                   b.method = DecodingMethod::sample;
                   b.top_p = 0;
                 }),
                 "top_p"));
  CHECK(contains(bad([](GenerationOptions& b) {
                   b.method = DecodingMethod::sample;
                   b.top_k = -1;
                 }),
                 "top_k"));
  CHECK(
      contains(bad([](GenerationOptions& b) { b.repetition_penalty = 0; }), "repetition_penalty"));
  CHECK(contains(bad([](GenerationOptions& b) {
                   b.method = DecodingMethod::beam;
                   b.num_beams = 2;
                   b.num_return_sequences = 3;
                 }),
                 "more than num_beams"));
  CHECK(contains(bad([](GenerationOptions& b) { b.num_return_sequences = 2; }), "greedy"));
  CHECK(contains(bad([](GenerationOptions& b) { b.eos_ids = {5}; }), "eos id 5"));
  CHECK(contains(error_of([] { parse_decoding_method("topk", "--method"); }), "--method 'topk'"));
  CHECK(generate(lm, {}, o).empty());
}

// ------------------------------------------------------------------------------------------------
// The transformer family on the demo model (models/demo-dates).
// ------------------------------------------------------------------------------------------------
namespace {

struct Demo {
  ModelDir dir{TESSERA_DEMO_MODEL};
  models::TransformerModel model{dir};
  CharTokenizer tok{std::string(TESSERA_DEMO_MODEL) + "/tokenizer.json"};
  std::vector<std::vector<int64_t>> sources(const std::vector<std::string>& texts) const {
    std::vector<std::vector<int64_t>> out;
    for (const auto& t : texts) {
      auto ids = tok.encode(t);
      ids.push_back(model.config().eos_id);
      out.push_back(std::move(ids));
    }
    return out;
  }
};

const std::vector<std::string> kDates = {"the 26th of November 2026",
                                         "Nov 26, 2026",
                                         "26/11/2026",
                                         "Thursday, November 26, 2026",
                                         "3 Jan 1999",
                                         "march 4th, 2001",
                                         "12.10.2010"};

}  // namespace

TEST_CASE("transformer: generate(greedy) gives exactly TransformerModel::greedy()") {
  Demo d;
  const auto src = d.sources(kDates);
  for (int64_t max_new : {64, 5}) {
    const auto want = d.model.greedy(src, max_new);
    models::TransformerLM lm(d.model);
    GenerationOptions o;
    o.max_new_tokens = max_new;
    o.eos_ids = {d.model.config().eos_id};
    const auto got = generate(lm, src, o);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      CHECK(got[i].sequences[0].ids == want[i]);
      if (max_new == 64) CHECK(got[i].sequences[0].finish == FinishReason::eos);
    }
    if (max_new == 64) {
      MESSAGE(kDates[0] << " -> " << d.tok.decode(got[0].sequences[0].ids));
      CHECK(d.tok.decode(got[0].sequences[0].ids) == "2026-11-26");
    }
  }
}

TEST_CASE("transformer: beam scores are the sequences' own log-probabilities (KV cache reorder)") {
  Demo d;
  const auto src = d.sources(kDates);
  const int64_t eos = d.model.config().eos_id;
  models::TransformerLM lm(d.model);
  GenerationOptions o;
  o.method = DecodingMethod::beam;
  o.num_beams = 4;
  o.num_return_sequences = 4;
  o.max_new_tokens = 12;
  o.eos_ids = {eos};
  o.length_penalty = 1.0f;
  GenerationStats st;
  const auto res = generate(lm, src, o, {}, &st);
  CHECK(st.decode_steps > 0);
  // Rescore each returned sequence alone: a fresh session, teacher-forced.
  for (size_t p = 0; p < src.size(); ++p) {
    REQUIRE(res[p].sequences.size() == 4);
    for (const auto& s : res[p].sequences) {
      models::TransformerLM one(d.model);
      Tensor logits = one.start({src[p]});
      double sum = 0;
      std::vector<int64_t> forced = s.ids;
      if (s.finish == FinishReason::eos) forced.push_back(eos);
      for (size_t k = 0; k < forced.size(); ++k) {
        std::vector<float> row(logits.data<float>(), logits.data<float>() + logits.dim(1));
        sum += logprob_of(row, forced[k]);
        if (k + 1 < forced.size()) logits = one.step({forced[k]});
      }
      CHECK(s.logprob == doctest::Approx(sum).epsilon(1e-4));
    }
  }
  CHECK(d.tok.decode(res[0].sequences[0].ids) == "2026-11-26");
  // One beam is greedy.
  o.num_beams = 1;
  o.num_return_sequences = 1;
  models::TransformerLM lm1(d.model);
  const auto one = generate(lm1, src, o);
  const auto greedy = d.model.greedy(src, 12);
  for (size_t p = 0; p < src.size(); ++p) CHECK(one[p].sequences[0].ids == greedy[p]);
}

TEST_CASE("transformer: seeded sampling is the same on 1 and 2 threads") {
  Demo d;
  const auto src = d.sources(kDates);
  GenerationOptions o;
  o.method = DecodingMethod::sample;
  o.temperature = 1.5f;
  o.top_p = 0.95f;
  o.seed = 99;
  o.num_return_sequences = 2;
  o.max_new_tokens = 16;
  o.eos_ids = {d.model.config().eos_id};
  const int before = kernels::num_threads();
  std::vector<std::vector<std::vector<int64_t>>> outs;
  for (int t : {1, 2}) {
    kernels::set_num_threads(t);
    models::TransformerLM lm(d.model);
    outs.push_back(ids_of(generate(lm, src, o)));
  }
  kernels::set_num_threads(before);
  CHECK(outs[0] == outs[1]);
  MESSAGE("sample: " << kDates[3] << " -> " << d.tok.decode(outs[0][6]) << " | "
                     << d.tok.decode(outs[0][7]));
}

TEST_CASE("transformer: bad sources and steps are errors naming the limit") {
  Demo d;
  models::TransformerLM lm(d.model);
  CHECK(contains(error_of([&] { lm.start({std::vector<int64_t>(65, 5)}); }),
                 "65 tokens, more than the model's max_position 64"));
  CHECK(contains(error_of([&] { lm.start({{5, 99}}); }), "token id 99 is out of range"));
  CHECK(contains(error_of([&] { lm.step({3}); }), "start() was not called"));
  lm.start({{5, 6, 2}, {7, 2}});
  CHECK(contains(error_of([&] { lm.step({3}); }), "1 tokens for a batch of 2"));
  CHECK(contains(error_of([&] { lm.select_rows({0, 2}); }), "row 2 is out of range"));
  lm.select_rows({1, 1, 0});
  CHECK(lm.batch() == 3);
  CHECK(lm.step({3, 3, 3}).shape() == Shape{3, 63});
  GenerationOptions o;
  o.max_new_tokens = 65;
  models::TransformerLM lm2(d.model);
  CHECK(contains(error_of([&] { generate(lm2, {{5, 2}}, o); }), "maximum of 64 positions"));
}
