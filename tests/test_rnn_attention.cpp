// The rnn_attention family (models/rnn_attention.h) on random model directories written here:
// incremental decoding (RnnAttentionLM: start, then one step per token, no recomputation, with
// beam-style row reordering) equals the teacher-forced forward pass (run) step for step;
// bad checkpoints and inputs are errors naming what was wrong. Parity with PyTorch itself is
// tests/rnn_parity.py.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "models/model.h"
#include "models/rnn_attention.h"

using namespace tessera;

namespace {

struct Cfg {
  std::string cell = "gru", attention = "additive";
  int64_t e = 7, h = 9, layers = 2, a = 5, vs = 13, vt = 11;
};

// Writes a random model directory; `skip` leaves one tensor out, `bad_shape` writes one wrongly.
std::string write_model(const Cfg& c, const std::string& name, const std::string& skip = "",
                        const std::string& bad_shape = "") {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("tessera_rnn_test_" + name)).string();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json")
      << "{\"model_type\": \"rnn_attention\", \"cell\": \"" << c.cell
      << "\", \"embed_dim\": " << c.e << ", \"hidden_size\": " << c.h
      << ", \"num_encoder_layers\": " << c.layers << ", \"attention_dim\": " << c.a
      << ", \"attention\": \"" << c.attention << "\", \"src_vocab_size\": " << c.vs
      << ", \"tgt_vocab_size\": " << c.vt
      << ", \"bos_id\": 1, \"eos_id\": 2, \"pad_id\": 0, \"max_length\": 20}\n";
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  std::vector<std::pair<std::string, Tensor>> ts;
  auto add = [&](const std::string& n, Shape s) {
    if (n == skip) return;
    if (n == bad_shape) s.back() += 1;
    Tensor t(DType::f32, s, false);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
    ts.emplace_back(n, t);
  };
  const int64_t g = c.cell == "gru" ? 3 : 4, h = c.h;
  add("src_embed.weight", {c.vs, c.e});
  add("tgt_embed.weight", {c.vt, c.e});
  for (int64_t l = 0; l < c.layers; ++l)
    for (std::string sfx : {"", "_reverse"}) {
      const std::string s = "_l" + std::to_string(l) + sfx;
      add("encoder.weight_ih" + s, {g * h, l == 0 ? c.e : 2 * h});
      add("encoder.weight_hh" + s, {g * h, h});
      add("encoder.bias_ih" + s, {g * h});
      add("encoder.bias_hh" + s, {g * h});
    }
  add("bridge.weight", {h, 2 * h});
  add("bridge.bias", {h});
  if (g == 4) {
    add("bridge_c.weight", {h, 2 * h});
    add("bridge_c.bias", {h});
  }
  if (c.attention == "additive") {
    add("attention.W.weight", {c.a, h});
    add("attention.U.weight", {c.a, 2 * h});
    add("attention.v.weight", {1, c.a});
  }
  add("decoder.weight_ih_l0", {g * h, c.e + 2 * h});
  add("decoder.weight_hh_l0", {g * h, h});
  add("decoder.bias_ih_l0", {g * h});
  add("decoder.bias_hh_l0", {g * h});
  add("generator.weight", {c.vt, 3 * h + c.e});
  add("generator.bias", {c.vt});
  write_safetensors(dir + "/model.safetensors", ts);
  return dir;
}

Tensor ids(const std::vector<std::vector<int64_t>>& rows, int64_t pad) {
  size_t len = 0;
  for (const auto& r : rows) len = std::max(len, r.size());
  Tensor t(DType::i64, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(len)});
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t i = 0; i < len; ++i)
      t.data<int64_t>()[b * len + i] = i < rows[b].size() ? rows[b][i] : pad;
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("incremental decoding equals the teacher-forced forward (GRU/LSTM, additive/none)") {
  for (const char* cell : {"gru", "lstm"})
    for (const char* att : {"additive", "none"}) {
      Cfg c;
      c.cell = cell;
      c.attention = att;
      const std::string dir = write_model(c, std::string(cell) + "_" + att);
      models::RnnAttentionModel m{ModelDir(dir)};
      const std::vector<std::vector<int64_t>> src = {{5, 6, 7, 8, 9}, {3, 4}, {12, 11, 10}};
      const std::vector<std::vector<int64_t>> tgt = {
          {1, 4, 5, 6, 7, 8}, {1, 9, 3, 3, 10, 4}, {1, 2, 7, 7, 5, 6}};
      TensorMap out = m.run({{"src_ids", ids(src, 0)}, {"tgt_ids", ids(tgt, 0)}});
      const Tensor& logits = out.at("logits");        // [B, T, V]
      const Tensor& attention = out.at("attention");  // [B, T, S]
      const int64_t b = 3, t_len = 6, v = c.vt, s_len = 5;
      models::RnnAttentionLM lm(m);
      // Decode rows in reverse order after the first step (a select_rows, as beam search does).
      Tensor step_logits = lm.start(src);
      double worst = 0;
      std::vector<int64_t> order = {0, 1, 2};
      for (int64_t t = 0; t < t_len; ++t) {
        if (t > 0) {
          std::vector<int64_t> tokens;
          for (int64_t r = 0; r < b; ++r) tokens.push_back(tgt[order[r]][t]);
          step_logits = lm.step(tokens);
        }
        for (int64_t r = 0; r < b; ++r) {
          const int64_t row = order[r];
          for (int64_t k = 0; k < v; ++k)
            worst = std::max(
                worst,
                std::abs(static_cast<double>(step_logits.data<float>()[r * v + k] -
                                             logits.data<float>()[(row * t_len + t) * v + k])));
          for (int64_t j = 0; j < s_len; ++j)
            worst = std::max(worst, std::abs(static_cast<double>(
                                        lm.attention().data<float>()[r * s_len + j] -
                                        attention.data<float>()[(row * t_len + t) * s_len + j])));
        }
        if (t == 0) {
          lm.select_rows({2, 1, 0});
          order = {2, 1, 0};
        }
      }
      INFO(cell << " " << att << ": max |step - forward| " << worst);
      CHECK(worst <= 1e-5);
    }
}

TEST_CASE(
    "encoding into a used Encoded equals a fresh encode, bit for bit (ragged, padding zero)") {
  for (const char* cell : {"gru", "lstm"}) {
    Cfg c;
    c.cell = cell;
    const std::string dir = write_model(c, std::string("reuse_") + cell);
    models::RnnAttentionModel m{ModelDir(dir)};
    Tensor full, ragged;
    std::vector<int64_t> full_len, ragged_len;
    m.pad_sources({{5, 6, 7, 8, 9}, {3, 4, 5, 6, 7}, {12, 11, 10, 9, 8}}, full, full_len);
    m.pad_sources({{5, 6, 7, 8, 9}, {3, 4}, {12, 11, 10}}, ragged, ragged_len);
    const auto fresh = m.encode(ragged.data<int64_t>(), ragged_len, 3, 5);
    models::RnnAttentionModel::Encoded used;
    // A smaller batch first (every buffer reallocated), then the full one (the padding of
    // memory written), then the ragged one into the same buffers.
    m.encode(ragged.data<int64_t>(), {5}, 1, 5, used);
    m.encode(full.data<int64_t>(), full_len, 3, 5, used);
    m.encode(ragged.data<int64_t>(), ragged_len, 3, 5, used);
    auto same = [](const Tensor& a, const Tensor& b) {
      if (a.shape() != b.shape()) return false;
      for (int64_t i = 0; i < a.numel(); ++i)
        if (a.data<float>()[i] != b.data<float>()[i]) return false;
      return true;
    };
    INFO(cell);
    CHECK(same(used.memory, fresh.memory));
    CHECK(same(used.keys, fresh.keys));
    CHECK(same(used.final, fresh.final));
    CHECK(same(used.s0, fresh.s0));
    if (c.cell == "lstm") CHECK(same(used.c0, fresh.c0));
  }
}

TEST_CASE("bad checkpoints and inputs name what is wrong") {
  Cfg c;
  const std::string missing = write_model(c, "missing", "attention.U.weight");
  CHECK(error_of([&] { models::load_model(ModelDir(missing)); }).find("attention.U.weight") !=
        std::string::npos);
  const std::string bad = write_model(c, "bad_shape", "", "encoder.weight_hh_l1_reverse");
  const std::string msg = error_of([&] { models::load_model(ModelDir(bad)); });
  CHECK(msg.find("encoder.weight_hh_l1_reverse") != std::string::npos);
  CHECK(msg.find("shape") != std::string::npos);
  const std::string dir = write_model(c, "good");
  auto m = models::load_model(ModelDir(dir));
  CHECK(std::string(m->family()) == "rnn_attention");
  CHECK(error_of([&] {
          m->run({{"src_ids", ids({{5, 13}}, 0)}, {"tgt_ids", ids({{1}}, 0)}});
        }).find("out of range") != std::string::npos);
  CHECK(error_of([&] {
          m->run({{"src_ids", ids({{0, 0}}, 0)}, {"tgt_ids", ids({{1}}, 0)}});
        }).find("no real token") != std::string::npos);
  CHECK(error_of([&] {
          m->run({{"src_ids", ids({{4, 0, 5}}, 0)}, {"tgt_ids", ids({{1}}, 0)}});
        }).find("right-padded") != std::string::npos);
  CHECK(error_of([&] {
          m->run({{"src_ids", ids({{4}}, 0)}});
        }).find("tgt_ids") != std::string::npos);
  models::RnnAttentionLM lm(*m->rnn_attention());
  CHECK(error_of([&] { lm.start({{4}, {}}); }).find("source 1 is empty") != std::string::npos);
}
