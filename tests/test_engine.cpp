// Engine tests that need no PyTorch: safetensors validation, the executor, and the transformer
// family on random weights (KV-cache decoding against full recomputation, thread-count
// independence). Parity with PyTorch is tests/parity_test.py.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <atomic>
#include <cstdlib>
#include <new>

#include "engine/graph/passes/passes.h"
#include "engine/io/model_dir.h"
#include "engine/io/safetensors.h"
#include "kernels/kernels.h"
#include "models/transformer.h"
#include "tests/test_util.h"

// Every operator new of this binary is counted (the allocation test below). Tensor storage is
// aligned_alloc'ed, but every Tensor that owns storage also allocates its shape vector and its
// shared_ptr control block with operator new, so a tensor allocated per node would be seen.
// (GCC 12 sees doctest's inlined `new` paired with this file's free(): that is the point of a
// replacement operator, hence the pragma.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<long> g_news{0};
void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
// The nothrow and array forms too: the library's own versions would pair with ours otherwise
// (std::stable_sort's temporary buffer is new(nothrow)'d and deleted with the plain delete).
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_news.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
  return operator new(n, t);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}

using namespace tessera;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path p =
      fs::temp_directory_path() / ("tessera_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

Tensor random_tensor(Shape shape, std::mt19937& rng, float scale) {
  Tensor t(DType::f32, std::move(shape));
  std::normal_distribution<float> dist(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file whose header is `json` (padded) followed by `data_bytes` zero bytes.
std::string safetensors_bytes(const std::string& json, size_t data_bytes, uint64_t header_len = 0) {
  std::string h = json;
  uint64_t n = header_len ? header_len : h.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += h;
  out += std::string(data_bytes, '\0');
  return out;
}

// True when both tensors hold bit-identical f32 data of one shape.
bool max_diff_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

using tessera::test::error_of;

struct RandomModel {
  int64_t d_model = 24, nhead = 3, enc = 2, dec = 2, ff = 40, vocab = 19, max_pos = 32;
  bool norm_first = false;
  std::string activation = "gelu";
};

// Writes an encoder-decoder TokenTransformer model directory with random weights.
fs::path make_model(const RandomModel& m, const std::string& name, unsigned seed) {
  fs::path dir = temp_dir(name);
  std::mt19937 rng(seed);
  std::vector<std::pair<std::string, Tensor>> w;
  const int64_t e = m.d_model;
  auto attn = [&](const std::string& p) {
    w.emplace_back(p + ".in_proj_weight", random_tensor({3 * e, e}, rng, 0.2f));
    w.emplace_back(p + ".in_proj_bias", random_tensor({3 * e}, rng, 0.1f));
    w.emplace_back(p + ".out_proj.weight", random_tensor({e, e}, rng, 0.2f));
    w.emplace_back(p + ".out_proj.bias", random_tensor({e}, rng, 0.1f));
  };
  auto norm = [&](const std::string& p) {
    Tensor g = random_tensor({e}, rng, 0.1f);
    for (int64_t i = 0; i < e; ++i) g.data<float>()[i] += 1.0f;
    w.emplace_back(p + ".weight", g);
    w.emplace_back(p + ".bias", random_tensor({e}, rng, 0.1f));
  };
  auto layer = [&](const std::string& p, bool decoder) {
    attn(p + ".self_attn");
    if (decoder) attn(p + ".multihead_attn");
    w.emplace_back(p + ".linear1.weight", random_tensor({m.ff, e}, rng, 0.2f));
    w.emplace_back(p + ".linear1.bias", random_tensor({m.ff}, rng, 0.1f));
    w.emplace_back(p + ".linear2.weight", random_tensor({e, m.ff}, rng, 0.2f));
    w.emplace_back(p + ".linear2.bias", random_tensor({e}, rng, 0.1f));
    norm(p + ".norm1");
    norm(p + ".norm2");
    if (decoder) norm(p + ".norm3");
  };
  for (int64_t l = 0; l < m.enc; ++l) layer("encoder.layers." + std::to_string(l), false);
  for (int64_t l = 0; l < m.dec; ++l) layer("decoder.layers." + std::to_string(l), true);
  norm("encoder.norm");
  norm("decoder.norm");
  w.emplace_back("src_embed.weight", random_tensor({m.vocab, e}, rng, 1.0f));
  w.emplace_back("tgt_embed.weight", random_tensor({m.vocab, e}, rng, 1.0f));
  w.emplace_back("generator.weight", random_tensor({m.vocab, e}, rng, 0.3f));
  w.emplace_back("generator.bias", random_tensor({m.vocab}, rng, 0.1f));
  write_safetensors((dir / "model.safetensors").string(), w);
  std::ofstream(dir / "config.json")
      << "{\"model_type\": \"transformer\", \"d_model\": " << e << ", \"nhead\": " << m.nhead
      << ", \"num_encoder_layers\": " << m.enc << ", \"num_decoder_layers\": " << m.dec
      << ", \"dim_feedforward\": " << m.ff << ", \"activation\": \"" << m.activation
      << "\", \"layer_norm_eps\": 1e-5, \"norm_first\": " << (m.norm_first ? "true" : "false")
      << ", \"src_vocab_size\": " << m.vocab << ", \"tgt_vocab_size\": " << m.vocab
      << ", \"max_position\": " << m.max_pos
      << ", \"positional\": \"sinusoidal\", \"scale_embedding\": true, \"bos_id\": 1, "
         "\"eos_id\": 2, \"pad_id\": 0}";
  return dir;
}

Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows) {
  const int64_t b = static_cast<int64_t>(rows.size()), t = static_cast<int64_t>(rows[0].size());
  Tensor out(DType::i64, {b, t});
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j) out.data<int64_t>()[i * t + j] = rows[i][j];
  return out;
}

Tensor causal_mask(int64_t t) {
  Tensor m(DType::boolean, {t, t});
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < t; ++j) m.data<uint8_t>()[i * t + j] = j > i;
  return m;
}

}  // namespace

TEST_CASE("safetensors: write, map and read back every dtype") {
  fs::path dir = temp_dir("st_roundtrip");
  std::mt19937 rng(1);
  Tensor a = random_tensor({3, 5}, rng, 1.0f);
  Tensor b(DType::i64, {4});
  for (int i = 0; i < 4; ++i) b.data<int64_t>()[i] = int64_t{1} << (10 * i);
  Tensor c(DType::boolean, {2, 2});
  c.data<uint8_t>()[1] = 1;
  Tensor empty(DType::f32, {0, 7});
  const std::string path = (dir / "x.safetensors").string();
  write_safetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"empty", empty}}, {{"format", "pt"}});
  SafetensorsFile f(path);
  CHECK(f.names().size() == 4);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.shape("a") == Shape{3, 5});
  CHECK(std::memcmp(f.get("a").raw(), a.raw(), a.nbytes()) == 0);
  CHECK(f.get("b").data<int64_t>()[3] == int64_t{1} << 30);
  CHECK(f.get("c").dtype() == DType::boolean);
  CHECK(f.get("c").data<uint8_t>()[1] == 1);
  CHECK(f.get("empty").numel() == 0);
  CHECK_THROWS_AS(f.get("nope"), Error);
  fs::remove_all(dir);
}

TEST_CASE("safetensors: every malformed file is rejected with a message naming the problem") {
  fs::path dir = temp_dir("st_bad");
  const std::string p = (dir / "bad.safetensors").string();
  auto expect = [&](const std::string& bytes, const std::string& needle) {
    write_bytes(p, bytes);
    const std::string msg = error_of([&] { SafetensorsFile f(p); });
    INFO("message: " << msg);
    CHECK(msg.find(needle) != std::string::npos);
    CHECK(msg.find(p) != std::string::npos);
  };
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect("abc", "too short");
  expect(safetensors_bytes(ok, 8, 1000), "runs past the end");
  expect(safetensors_bytes(ok, 8, 2ull << 30), "100 MB limit");
  expect(safetensors_bytes(R"({"w": {"dtype": )", 0), "not valid JSON");
  expect(safetensors_bytes("[1, 2]", 0), "not a JSON object");
  expect(safetensors_bytes(R"({"w":{"dtype":"X8","shape":[2],"data_offsets":[0,8]}})", 8),
         "unknown dtype 'X8'");
  expect(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8),
         "run past the data section");
  expect(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
         "needs 12 bytes");
  expect(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12),
         "overlapping");
  expect(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                           16),
         "duplicate tensor name 'a'");
  expect(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
         "non-integer or negative");
  expect(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
         "end before they begin");
  expect(safetensors_bytes(
             R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8),
         "too large");
  // __metadata__ is allowed; a non-string value in it is not.
  write_bytes(
      p,
      safetensors_bytes(
          R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
  CHECK_NOTHROW(SafetensorsFile{p});
  expect(safetensors_bytes(R"({"__metadata__":{"k":1}})", 0), "is not a string");
  fs::remove_all(dir);
}

TEST_CASE("transformer: decoding with the KV cache equals recomputing the whole prefix") {
  // With every pass, with none, and with the attention-shaping passes off one at a time (the
  // unfused attention reads and extends the cache through attention_scores/attention_context).
  for (const char* spec : {"all", "none", "-fuse_attention", "-fuse_qkv", "-fuse_residual"})
    for (bool norm_first : {false, true}) {
      passes::set_default(passes::parse(spec));
      RandomModel m;
      m.norm_first = norm_first;
      fs::path dir = make_model(m, norm_first ? "kv_pre" : "kv_post", 7);
      ModelDir md(dir.string());
      models::TransformerModel model(md);
      passes::set_default(passes::parse("all"));
      INFO("passes " << std::string(spec));

      const std::vector<std::vector<int64_t>> src_rows = {{5, 6, 7, 8, 9, 2}, {10, 11, 2, 0, 0, 0}};
      Tensor src = ids_tensor(src_rows);
      Tensor pad(DType::u8, {2, 6});
      for (int j = 3; j < 6; ++j) pad.data<uint8_t>()[6 + j] = 1;
      auto enc = model.encode(src, pad);

      // Step by step: feed bos, then the argmax, 8 times; keep each step's logits.
      const int64_t steps = 8, vocab = m.vocab;
      KVCache cache;
      cache.reset(static_cast<int>(m.dec), 2, steps, m.d_model);
      std::vector<std::vector<int64_t>> tokens = {{1}, {1}};
      std::vector<float> step_logits;  // [step][b][v]
      for (int64_t s = 0; s < steps; ++s) {
        Tensor cur = ids_tensor({{tokens[0].back()}, {tokens[1].back()}});
        Tensor logits = model.decode_step(enc, cur, cache, s);
        REQUIRE(logits.shape() == Shape{2, 1, vocab});
        for (int b = 0; b < 2; ++b) {
          const float* row = logits.data<float>() + b * vocab;
          step_logits.insert(step_logits.end(), row, row + vocab);
          tokens[b].push_back(std::max_element(row, row + vocab) - row);
        }
      }
      // Full recomputation through the forward graph with a causal mask over the whole prefix.
      std::vector<std::vector<int64_t>> prefix = {{tokens[0].begin(), tokens[0].end() - 1},
                                                  {tokens[1].begin(), tokens[1].end() - 1}};
      TensorMap in{{"src_ids", src},
                   {"tgt_ids", ids_tensor(prefix)},
                   {"src_key_padding_mask", pad},
                   {"memory_key_padding_mask", pad},
                   {"tgt_mask", causal_mask(steps)}};
      Tensor full = model.run(in).at("logits");  // [2, steps, V]
      double max_err = 0;
      for (int64_t s = 0; s < steps; ++s)
        for (int b = 0; b < 2; ++b)
          for (int64_t v = 0; v < vocab; ++v)
            max_err = std::max<double>(max_err,
                                       std::fabs(step_logits[(s * 2 + b) * vocab + v] -
                                                 full.data<float>()[(b * steps + s) * vocab + v]));
      MESSAGE("passes " << std::string(spec) << ", norm_first=" << norm_first
                        << ": max |logits(step) - logits(full)| = " << max_err);
      CHECK(max_err <= 1e-5);
      // And the argmax of the full pass reproduces the tokens.
      for (int b = 0; b < 2; ++b)
        for (int64_t s = 0; s < steps; ++s) {
          const float* row = full.data<float>() + (b * steps + s) * vocab;
          CHECK(std::max_element(row, row + vocab) - row == tokens[b][s + 1]);
        }
      // greedy() on the same sources gives the same tokens up to the first eos.
      auto g = model.greedy({{5, 6, 7, 8, 9, 2}, {10, 11, 2}}, steps);
      for (int b = 0; b < 2; ++b) {
        std::vector<int64_t> want;
        for (int64_t s = 1; s <= steps && tokens[b][s] != 2; ++s) want.push_back(tokens[b][s]);
        CHECK(g[b] == want);
      }
      fs::remove_all(dir);
    }
}

TEST_CASE("transformer: encode removes padding: a ragged batch equals each source alone") {
  // Odd sizes: head_dim 7 (21 / 3), ragged lengths 1, 3, 17 and 11 in a batch padded to 17,
  // post- and pre-LN, every pass and none. A row alone has no padding: the dense encode graph.
  for (const char* spec : {"all", "none"})
    for (bool norm_first : {false, true}) {
      passes::set_default(passes::parse(spec));
      RandomModel m;
      m.d_model = 21;
      m.ff = 33;
      m.norm_first = norm_first;
      fs::path dir = make_model(m, norm_first ? "ragged_pre" : "ragged_post", 11);
      ModelDir md(dir.string());
      models::TransformerModel model(md);
      passes::set_default(passes::parse("all"));
      INFO("passes " << std::string(spec) << ", norm_first=" << norm_first);

      std::mt19937 rng(5);
      std::vector<std::vector<int64_t>> rows;
      for (int64_t n : {1, 3, 17, 11}) {
        std::vector<int64_t> r;
        for (int64_t i = 0; i < n; ++i) r.push_back(3 + static_cast<int64_t>(rng() % 16));
        rows.push_back(r);
      }
      const int64_t batch = 4, len = 17, e = m.d_model;
      Tensor src(DType::i64, {batch, len});
      Tensor pad(DType::u8, {batch, len});
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t t = 0; t < len; ++t) {
          const bool real = t < static_cast<int64_t>(rows[b].size());
          src.data<int64_t>()[b * len + t] = real ? rows[b][t] : 0;
          pad.data<uint8_t>()[b * len + t] = real ? 0 : 1;
        }
      const auto all = model.encode(src, pad);
      REQUIRE(all.memory_kv.size() == static_cast<size_t>(2 * m.dec));
      double max_err = 0;
      bool pads_zero = true;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t n = static_cast<int64_t>(rows[b].size());
        const auto alone = model.encode(ids_tensor({rows[b]}), Tensor(DType::u8, {1, n}));
        for (const auto& [name, t] : all.memory_kv) {
          REQUIRE(t.shape() == Shape{batch, len, e});
          const Tensor& one = alone.memory_kv.at(name);
          REQUIRE(one.shape() == Shape{1, n, e});
          for (int64_t i = 0; i < n * e; ++i)
            max_err = std::max<double>(
                max_err, std::fabs(t.data<float>()[b * len * e + i] - one.data<float>()[i]));
          for (int64_t i = n * e; i < len * e; ++i)
            pads_zero = pads_zero && t.data<float>()[b * len * e + i] == 0.0f;
        }
      }
      MESSAGE("passes " << std::string(spec) << ", norm_first=" << norm_first
                        << ": max |memory(ragged batch) - memory(alone)| = " << max_err);
      CHECK(max_err <= 1e-5);
      CHECK(pads_zero);
      // A batch without padding takes the dense graph and gives the same as with an all-zero
      // padding mask absent.
      const auto dense = model.encode(ids_tensor({rows[2]}), Tensor());
      const auto alone = model.encode(ids_tensor({rows[2]}), Tensor(DType::u8, {1, 17}));
      for (const auto& [name, t] : dense.memory_kv)
        for (int64_t i = 0; i < t.numel(); ++i)
          CHECK(t.data<float>()[i] == alone.memory_kv.at(name).data<float>()[i]);
      fs::remove_all(dir);
    }
}

TEST_CASE("transformer: outputs are bit-identical for 1, 2 and 3 threads") {
  RandomModel m;
  m.d_model = 48;
  m.nhead = 4;
  m.ff = 100;
  fs::path dir = make_model(m, "threads", 11);
  ModelDir md(dir.string());
  models::TransformerModel model(md);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int64_t> tok(3, m.vocab - 1);
  std::vector<std::vector<int64_t>> src(3, std::vector<int64_t>(29)),
      tgt(3, std::vector<int64_t>(17));
  for (auto& r : src)
    for (auto& x : r) x = tok(rng);
  for (auto& r : tgt)
    for (auto& x : r) x = tok(rng);
  Tensor pad(DType::u8, {3, 29});
  for (int j = 20; j < 29; ++j) pad.data<uint8_t>()[29 + j] = 1;
  TensorMap in{{"src_ids", ids_tensor(src)},
               {"tgt_ids", ids_tensor(tgt)},
               {"src_key_padding_mask", pad},
               {"memory_key_padding_mask", pad},
               {"tgt_mask", causal_mask(17)}};
  const int before = kernels::num_threads();
  std::vector<Tensor> outs;
  for (int t : {1, 2, 3}) {
    kernels::set_num_threads(t);
    outs.push_back(model.run(in).at("logits"));
  }
  kernels::set_num_threads(before);
  CHECK(std::memcmp(outs[0].raw(), outs[1].raw(), outs[0].nbytes()) == 0);
  CHECK(std::memcmp(outs[0].raw(), outs[2].raw(), outs[0].nbytes()) == 0);
  fs::remove_all(dir);
}

TEST_CASE("transformer: checkpoints that disagree with the config are rejected by name") {
  RandomModel m;
  fs::path dir = make_model(m, "mismatch", 5);
  // One more layer in the config than in the weights: the missing tensor is named.
  {
    std::ifstream in(dir / "config.json");
    std::string cfg((std::istreambuf_iterator<char>(in)), {});
    in.close();
    std::string bad = cfg;
    bad.replace(bad.find("\"num_encoder_layers\": 2"), 23, "\"num_encoder_layers\": 3");
    std::ofstream(dir / "config.json") << bad;
    ModelDir md(dir.string());
    const std::string msg = error_of([&] { models::TransformerModel model(md); });
    CHECK(msg.find("encoder.layers.2.self_attn.in_proj_weight") != std::string::npos);
    // Fewer layers than the weights: the extra tensor is named.
    bad = cfg;
    bad.replace(bad.find("\"num_encoder_layers\": 2"), 23, "\"num_encoder_layers\": 1");
    std::ofstream(dir / "config.json") << bad;
    ModelDir md2(dir.string());
    const std::string msg2 = error_of([&] { models::TransformerModel model(md2); });
    CHECK(msg2.find("unexpected tensor 'encoder.layers.1.") != std::string::npos);
    // A feed-forward size that disagrees: shape error naming the tensor.
    bad = cfg;
    bad.replace(bad.find("\"dim_feedforward\": 40"), 21, "\"dim_feedforward\": 41");
    std::ofstream(dir / "config.json") << bad;
    ModelDir md3(dir.string());
    const std::string msg3 = error_of([&] { models::TransformerModel model(md3); });
    CHECK(msg3.find("encoder.layers.0.linear1.weight' has shape [40, 24], expected [41, 24]") !=
          std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("transformer: generation past max_position is an error naming the limit") {
  RandomModel m;
  m.max_pos = 8;
  fs::path dir = make_model(m, "maxpos", 9);
  ModelDir md(dir.string());
  models::TransformerModel model(md);
  const std::string msg = error_of([&] { model.greedy({{5, 6, 2}}, 9); });
  CHECK(msg.find("max_position is 8") != std::string::npos);
  const std::string msg2 = error_of([&] { model.greedy({std::vector<int64_t>(9, 5)}, 4); });
  CHECK(msg2.find("exceeds max_position 8") != std::string::npos);
  CHECK(model.greedy({{5, 6, 2}}, 8).size() == 1);
  fs::remove_all(dir);
}

TEST_CASE("transformer: a second run with the same shapes allocates only its outputs") {
  RandomModel m;
  fs::path dir = make_model(m, "alloc", 11);
  ModelDir md(dir.string());
  passes::set_default(passes::parse("all"));  // whatever TESSERA_PASSES says
  models::TransformerModel model(md);
  const std::vector<std::vector<int64_t>> rows = {{5, 6, 7, 8, 9, 2, 3}, {10, 11, 2, 4, 4, 4, 4}};
  TensorMap in{
      {"src_ids", ids_tensor(rows)}, {"tgt_ids", ids_tensor(rows)}, {"tgt_mask", causal_mask(7)}};
  Tensor first = model.run(in).at("logits");
  const size_t arena = model.forward_session().arena_bytes();
  long counted = 0, model_run = 0;
  {
    // The graph run itself (TransformerModel::run adds the input validation's strings).
    RunContext ctx;
    const long before = g_news.load();
    TensorMap out = model.forward_session().run(in, ctx);
    counted = g_news.load() - before;
    CHECK(max_diff_equal(out.at("logits"), first));
    const long before2 = g_news.load();
    model.run(in);
    model_run = g_news.load() - before2;
  }
  // The one output "logits": its map node, its shape vector and its storage's control block.
  MESSAGE("operator new calls in a second graph run: "
          << counted << " (arena " << arena << " bytes); in a whole model.run(): " << model_run);
  CHECK(counted == 3);
  CHECK(model.forward_session().arena_bytes() == arena);
  CHECK(model.forward_session().cached_plans() == 1);
  // Another shape: a new plan (allocations allowed), then again none per node.
  TensorMap in2{{"src_ids", ids_tensor({{5, 6, 2}})}, {"tgt_ids", ids_tensor({{1, 7}})}};
  RunContext ctx;
  model.forward_session().run(in2, ctx);
  const long before = g_news.load();
  model.forward_session().run(in2, ctx);
  CHECK(g_news.load() - before == 3);
  CHECK(model.forward_session().cached_plans() == 2);
  fs::remove_all(dir);
}
