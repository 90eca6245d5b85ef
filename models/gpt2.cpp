#include "models/gpt2.h"

#include "engine/io/limits.h"

#include "engine/graph/passes/passes.h"
#include "models/layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

namespace tessera::models {

namespace {

using kernels::Activation;

Gpt2Config read_config(const ModelDir& dir) {
  const std::string path = dir.config_path();
  const std::string type = dir.get_string("model_type", "");
  if (type != "gpt2") throw Error("'" + path + "': model_type is '" + type + "', expected 'gpt2'");
  Gpt2Config c;
  c.n_layer = dir.get_int("n_layer");
  c.n_embd = dir.get_int("n_embd");
  c.n_head = dir.get_int("n_head");
  c.n_positions =
      dir.config().contains("n_positions") ? dir.get_int("n_positions") : dir.get_int("n_ctx");
  c.vocab_size = dir.get_int("vocab_size");
  c.n_inner = 4 * c.n_embd;
  if (dir.config().contains("n_inner") && !dir.config().at("n_inner").is_null())
    c.n_inner = dir.get_int("n_inner");
  c.layer_norm_epsilon = static_cast<float>(dir.get_float("layer_norm_epsilon", 1e-5));
  const std::string act = dir.get_string("activation_function", "gelu_new");
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
    c.activation = Activation::gelu_tanh;
  else if (act == "gelu")
    c.activation = Activation::gelu_erf;
  else if (act == "relu")
    c.activation = Activation::relu;
  else
    throw Error("'" + path + "': activation_function '" + act +
                "' is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu)");
  c.scale_attn_weights = dir.get_bool("scale_attn_weights", true);
  c.scale_attn_by_inverse_layer_idx = dir.get_bool("scale_attn_by_inverse_layer_idx", false);
  if (dir.get_bool("reorder_and_upcast_attn", false))
    throw Error("'" + path + "': reorder_and_upcast_attn is not supported");
  auto opt_int = [&](const char* key) -> int64_t {
    if (!dir.config().contains(key) || dir.config().at(key).is_null()) return -1;
    return dir.get_int(key);
  };
  c.bos_token_id = opt_int("bos_token_id");
  c.eos_token_id = opt_int("eos_token_id");
  if (c.n_layer < 1 || c.n_embd < 1 || c.n_head < 1 || c.n_embd % c.n_head != 0)
    throw Error("'" + path + "': n_embd " + std::to_string(c.n_embd) +
                " must be a positive multiple of n_head " + std::to_string(c.n_head) +
                " and n_layer must be at least 1");
  if (c.n_positions < 1 || c.vocab_size < 1 || c.n_inner < 1)
    throw Error("'" + path + "': n_positions, vocab_size and n_inner must be positive");
  if (!(c.layer_norm_epsilon > 0)) throw Error("'" + path + "': layer_norm_epsilon must be > 0");
  // The weights this config asks for, before any is allocated.
  ParamCount p(path);
  const int64_t e = c.n_embd;
  p.add("vocab_size x n_embd", {c.vocab_size, e});
  p.add("n_positions x n_embd", {c.n_positions, e});
  p.add("n_layer x 4 x n_embd x n_embd", {c.n_layer, 4, e, e});
  p.add("n_layer x 2 x n_embd x n_inner", {c.n_layer, 2, e, c.n_inner});
  p.add("n_layer x 9 x n_embd", {c.n_layer, 9, e});
  p.add("n_layer x n_inner", {c.n_layer, c.n_inner});
  p.check_fits_memory();
  return c;
}

std::string summary(const Gpt2Config& c) {
  std::ostringstream os;
  os << "n_layer=" << c.n_layer << ", n_embd=" << c.n_embd << ", n_head=" << c.n_head
     << ", n_positions=" << c.n_positions << ", vocab_size=" << c.vocab_size
     << ", n_inner=" << c.n_inner;
  return os.str();
}

// The modules under GPT-2's names (h.N.ln_1, h.N.attn.c_attn, ...).
struct Layer {
  Norm ln_1, ln_2;
  Attention attn;   // one fused c_attn [3E] projection, c_proj out
  FeedForward mlp;  // c_fc -> activation -> c_proj
};
struct Weights {
  Embedding wte, wpe;  // token and position tables
  std::vector<Layer> layers;
  Norm ln_f;
  Dense lm_head;  // the wte table when tied
};

// GPT-2 (pre-LN): h = wte[ids] + wpe[positions]; each block h += attn(ln_1(h)), h += mlp(ln_2(h));
// logits = lm_head(ln_f(h)).
class Builder {
 public:
  Builder(const Weights& w, Graph& g) : w_(w), nn_(g) {}

  // input_ids, position_ids [B, T] -> hidden states before ln_f [B, T, E]. Attention is causal
  // over the key padding; `cached`: block l reads and extends KV-cache slot l.
  ValueId blocks(ValueId ids, ValueId positions, ValueId padding, bool cached) {
    const ValueId tokens = nn_.embedding(w_.wte, ids);
    ValueId x = nn_.add("embeddings", tokens, nn_.embedding(w_.wpe, positions));
    const Masks causal{.key_padding = padding, .causal = true};
    for (size_t l = 0; l < w_.layers.size(); ++l) {
      const Layer& L = w_.layers[l];
      const int slot = cached ? static_cast<int>(l) : -1;
      x = nn_.self_attention(L.attn, nn_.norm(L.ln_1, x), causal, x, slot);
      x = nn_.feed_forward(L.mlp, nn_.norm(L.ln_2, x), x);
    }
    return x;
  }
  ValueId head(ValueId x) { return nn_.dense(w_.lm_head, nn_.norm(w_.ln_f, x)); }

 private:
  const Weights& w_;
  Layers nn_;
};

// ---------------------------------------------------------------------------------------------
// The generation session.
// ---------------------------------------------------------------------------------------------
class Gpt2Session final : public CausalLM {
 public:
  Gpt2Session(const Gpt2Model& m, int64_t max_new_tokens, NodeObserver* observer)
      : m_(m), max_new_(max_new_tokens), observer_(observer) {
    if (max_new_tokens < 0) throw Error("max new tokens must not be negative");
  }
  int64_t vocab_size() const override { return m_.config().vocab_size; }
  int64_t max_positions() const override { return m_.config().n_positions; }

  Tensor start(const std::vector<std::vector<int64_t>>& prompts) override {
    const auto& c = m_.config();
    if (prompts.empty()) throw Error("generation needs at least one prompt");
    int64_t longest = 0;
    for (size_t b = 0; b < prompts.size(); ++b) {
      if (prompts[b].empty()) throw Error("prompt " + std::to_string(b) + " is empty");
      longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[b].size()));
      for (int64_t id : prompts[b])
        if (id < 0 || id >= c.vocab_size)
          throw Error("prompt " + std::to_string(b) + ": token id " + std::to_string(id) +
                      " is out of range for vocab_size " + std::to_string(c.vocab_size));
    }
    if (longest + max_new_ > c.n_positions)
      throw Error("a prompt of " + std::to_string(longest) + " tokens plus " +
                  std::to_string(max_new_) + " new tokens exceeds the model's n_positions " +
                  std::to_string(c.n_positions));
    batch_ = static_cast<int64_t>(prompts.size());
    capacity_ = longest + max_new_;
    cache_.reset(static_cast<int>(c.n_layer), batch_, capacity_, c.n_embd);
    padding_ = Tensor(DType::u8, {batch_, capacity_});
    next_pos_.assign(static_cast<size_t>(batch_), 0);
    Tensor ids(DType::i64, {batch_, longest}), pos(DType::i64, {batch_, longest});
    for (int64_t b = 0; b < batch_; ++b) {
      const auto& p = prompts[b];
      const int64_t pad = longest - static_cast<int64_t>(p.size());
      for (int64_t t = 0; t < longest; ++t) {
        const bool real = t >= pad;
        ids.data<int64_t>()[b * longest + t] = real ? p[t - pad] : 0;
        pos.data<int64_t>()[b * longest + t] = real ? t - pad : 0;
        padding_.data<uint8_t>()[b * capacity_ + t] = real ? 0 : 1;
      }
      next_pos_[b] = static_cast<int64_t>(p.size());
    }
    len_ = 0;
    return run(ids, pos);
  }

  Tensor step(const std::vector<int64_t>& tokens) override {
    const auto& c = m_.config();
    if (batch_ == 0) throw Error("step() before start()");
    if (static_cast<int64_t>(tokens.size()) != batch_)
      throw Error("step() got " + std::to_string(tokens.size()) + " tokens for a batch of " +
                  std::to_string(batch_));
    if (len_ + 1 > capacity_)
      throw Error("the generation session holds " + std::to_string(capacity_) +
                  " positions (longest prompt + max new tokens) and is full");
    Tensor ids(DType::i64, {batch_, 1}), pos(DType::i64, {batch_, 1});
    for (int64_t b = 0; b < batch_; ++b) {
      const int64_t id = tokens[b];
      if (id < 0 || id >= c.vocab_size)
        throw Error("step(): token id " + std::to_string(id) + " of row " + std::to_string(b) +
                    " is out of range for vocab_size " + std::to_string(c.vocab_size));
      if (next_pos_[b] >= c.n_positions)
        throw Error("row " + std::to_string(b) + " would pass the model's n_positions " +
                    std::to_string(c.n_positions));
      ids.data<int64_t>()[b] = id;
      pos.data<int64_t>()[b] = next_pos_[b];
    }
    Tensor logits = run(ids, pos);
    for (auto& p : next_pos_) ++p;
    return logits;
  }

  void select_rows(const std::vector<int64_t>& rows) override {
    if (batch_ == 0) throw Error("select_rows() before start()");
    const int64_t nb = static_cast<int64_t>(rows.size());
    if (nb == 0) throw Error("select_rows() needs at least one row");
    for (int64_t r : rows)
      if (r < 0 || r >= batch_)
        throw Error("select_rows(): row " + std::to_string(r) + " is out of range for a batch of " +
                    std::to_string(batch_));
    bool identity = nb == batch_;
    for (int64_t i = 0; i < nb && identity; ++i) identity = rows[i] == i;
    if (identity) return;
    KVCache next;
    next.reset(static_cast<int>(cache_.k.size()), nb, capacity_, cache_.width);
    const size_t row_floats = static_cast<size_t>(len_ * cache_.width);
    const int64_t stride = capacity_ * cache_.width;
    for (size_t s = 0; s < cache_.k.size(); ++s)
      for (int64_t i = 0; i < nb; ++i) {
        std::memcpy(next.k[s].data<float>() + i * stride,
                    cache_.k[s].data<float>() + rows[i] * stride, row_floats * sizeof(float));
        std::memcpy(next.v[s].data<float>() + i * stride,
                    cache_.v[s].data<float>() + rows[i] * stride, row_floats * sizeof(float));
      }
    Tensor padding(DType::u8, {nb, capacity_});
    std::vector<int64_t> next_pos(static_cast<size_t>(nb));
    for (int64_t i = 0; i < nb; ++i) {
      std::memcpy(padding.data<uint8_t>() + i * capacity_,
                  padding_.data<uint8_t>() + rows[i] * capacity_, static_cast<size_t>(capacity_));
      next_pos[i] = next_pos_[rows[i]];
    }
    cache_ = std::move(next);
    padding_ = std::move(padding);
    next_pos_ = std::move(next_pos);
    batch_ = nb;
  }

 private:
  // Runs new tokens [B, T] (positions pos) after the len_ cached ones; returns [B, V] logits of
  // the last new token.
  Tensor run(const Tensor& ids, const Tensor& pos) {
    const int64_t t = ids.dim(1), total = len_ + t;
    Tensor kp(DType::u8, {batch_, total});  // [B, len_ + T] view of the session's padding
    for (int64_t b = 0; b < batch_; ++b)
      std::memcpy(kp.data<uint8_t>() + b * total, padding_.data<uint8_t>() + b * capacity_,
                  static_cast<size_t>(total));
    Tensor logits = m_.decode(ids, pos, kp, cache_, len_, observer_);
    len_ = total;
    return logits;
  }

  const Gpt2Model& m_;
  int64_t max_new_;
  NodeObserver* observer_;
  int64_t batch_ = 0, capacity_ = 0, len_ = 0;
  KVCache cache_;
  Tensor padding_;                 // [B, capacity] U8, 1 = padding
  std::vector<int64_t> next_pos_;  // position of each row's next token
};

// ---------------------------------------------------------------------------------------------
// Continuous batching: rows with KV caches of their own.
// ---------------------------------------------------------------------------------------------
class Gpt2Rows final : public RowModel {
 public:
  Gpt2Rows(const Gpt2Model& m, int64_t prefill_chunk, NodeObserver* observer)
      : m_(m), chunk_(prefill_chunk), observer_(observer) {
    if (prefill_chunk < 1) throw Error("the prefill chunk must be at least 1 token");
  }
  int64_t vocab_size() const override { return m_.config().vocab_size; }
  int64_t max_positions() const override { return m_.config().n_positions; }
  bool prompts_are_decoder_prefix() const override { return true; }
  int64_t prefill_chunk() const override { return chunk_; }
  uint64_t row_bytes(int64_t prompt_tokens, int64_t max_new_tokens) const override {
    const auto& c = m_.config();
    return 2ull * static_cast<uint64_t>(c.n_layer) * static_cast<uint64_t>(c.n_embd) * 4ull *
           static_cast<uint64_t>(std::max<int64_t>(0, prompt_tokens + max_new_tokens));
  }

  Row add(const std::vector<int64_t>& prompt, int64_t max_new_tokens) override {
    const auto& c = m_.config();
    if (prompt.empty()) throw Error("the prompt is empty");
    if (max_new_tokens < 1) throw Error("max new tokens must be at least 1");
    for (int64_t id : prompt)
      if (id < 0 || id >= c.vocab_size)
        throw Error("token id " + std::to_string(id) + " is out of range for vocab_size " +
                    std::to_string(c.vocab_size));
    const int64_t len = static_cast<int64_t>(prompt.size());
    if (len + max_new_tokens > c.n_positions)
      throw Error("a prompt of " + std::to_string(len) + " tokens plus " +
                  std::to_string(max_new_tokens) + " new tokens exceeds the model's n_positions " +
                  std::to_string(c.n_positions));
    auto row = std::make_unique<State>();
    row->prompt = prompt;
    row->cache.reset(static_cast<int>(c.n_layer), 1, len + max_new_tokens, c.n_embd,
                     /*touch=*/true);
    const Row id = next_id_++;
    rows_.emplace(id, std::move(row));
    return id;
  }

  bool prefill(Row r, Tensor* last) override {
    State& s = get(r);
    const int64_t len = static_cast<int64_t>(s.prompt.size());
    if (s.len >= len) throw Error("row " + std::to_string(r) + " is already prefilled");
    const int64_t n = std::min(chunk_, len - s.len);
    Tensor ids(DType::i64, {1, n}), pos(DType::i64, {1, n});
    for (int64_t t = 0; t < n; ++t) {
      ids.data<int64_t>()[t] = s.prompt[static_cast<size_t>(s.len + t)];
      pos.data<int64_t>()[t] = s.len + t;
    }
    Tensor logits = m_.decode_rows(ids, pos, {{&s.cache, s.len}}, observer_);  // [1, V]
    s.len += n;
    if (s.len < len) return false;
    if (last) *last = logits.reshaped({logits.dim(1)});
    return true;
  }

  Tensor step(const std::vector<Row>& rows, const std::vector<int64_t>& tokens) override {
    const auto& c = m_.config();
    const int64_t b = static_cast<int64_t>(rows.size());
    if (b == 0 || tokens.size() != rows.size())
      throw Error("step() needs one token for each of at least one row");
    Tensor ids(DType::i64, {b, 1}), pos(DType::i64, {b, 1});
    std::vector<RunContext::RowCache> caches(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i) {
      State& s = get(rows[i]);
      if (s.len < static_cast<int64_t>(s.prompt.size()))
        throw Error("row " + std::to_string(rows[i]) + " is still prefilling");
      if (s.len >= s.cache.capacity)
        throw Error("row " + std::to_string(rows[i]) + " has generated its max new tokens");
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
        throw Error("step(): token id " + std::to_string(tokens[i]) +
                    " is out of range for vocab_size " + std::to_string(c.vocab_size));
      for (int64_t j = 0; j < i; ++j)
        if (rows[j] == rows[i]) throw Error("step(): row " + std::to_string(rows[i]) + " twice");
      ids.data<int64_t>()[i] = tokens[i];
      pos.data<int64_t>()[i] = s.len;
      caches[static_cast<size_t>(i)] = {&s.cache, s.len};
    }
    Tensor logits = m_.decode_rows(ids, pos, std::move(caches), observer_);
    for (Row r : rows) ++get(r).len;
    return logits;
  }

  void remove(Row r) override {
    if (rows_.erase(r) == 0) throw Error("remove(): no row " + std::to_string(r));
  }
  int64_t rows() const override { return static_cast<int64_t>(rows_.size()); }

 private:
  struct State {
    std::vector<int64_t> prompt;
    KVCache cache;    // batch 1, prompt + max new tokens positions
    int64_t len = 0;  // positions in the cache
  };
  State& get(Row r) {
    auto it = rows_.find(r);
    if (it == rows_.end()) throw Error("no row " + std::to_string(r));
    return *it->second;
  }

  const Gpt2Model& m_;
  int64_t chunk_;
  NodeObserver* observer_;
  Row next_id_ = 0;
  std::map<Row, std::unique_ptr<State>> rows_;
};

}  // namespace

// -------------------------------------------------------------------------------------------------

Gpt2Model::Gpt2Model(const ModelDir& dir, const LoadOptions& o)
    : cfg_(read_config(dir)), weights_(std::make_shared<WeightSet>()) {
  auto& c = cfg_;
  hf::CheckpointReader R(dir, "transformer.", summary(c));
  WeightSet& ws = *weights_;
  ws.gemm_type = resolve_weight_type(dir, o);
  const int64_t e = c.n_embd, in = c.n_inner;
  auto vec = [&](const std::string& name, int64_t n) { return R.add_copy(ws, name, {n}); };
  auto norm = [&](const std::string& p) {
    return Norm{p, vec(p + ".weight", e), vec(p + ".bias", e), c.layer_norm_epsilon};
  };
  // Conv1D weights [in, out] registered as they are stored (views of the mapped file); the
  // prepack pass packs them [K, N] (kn_layout) and releases the mapped pages.
  auto conv = [&](const std::string& p, int64_t k, int64_t n) {
    const int weight = R.add(ws, p + ".weight", {k, n}, /*kn=*/true);
    return Dense{p, weight, vec(p + ".bias", n)};
  };
  Weights w;
  // wte: the token table, and the LM head when tied (the prepack pass packs it for the head and
  // the gathers then read its rows from the packed copy: one resident copy of the table).
  w.wte = Embedding{"wte", R.add(ws, "wte.weight", {c.vocab_size, e}), {}, -1};
  w.wpe = Embedding{"wpe", R.add_copy(ws, "wpe.weight", {c.n_positions, e}), {}, -1};
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l);
    Layer L;
    L.ln_1 = norm(p + ".ln_1");
    L.attn.name = p + ".attn";
    L.attn.heads = c.n_head;
    L.attn.head_dim = c.head_dim();
    // The attention scale is applied by the attention operator as 1/sqrt(head_dim); other
    // scalings (scale_attn_weights false, 1/(layer+1)) are folded into the query projection.
    double q_scale = c.scale_attn_weights ? 1.0 : std::sqrt(static_cast<double>(c.head_dim()));
    if (c.scale_attn_by_inverse_layer_idx) q_scale /= static_cast<double>(l + 1);
    if (q_scale == 1.0) {
      L.attn.qkv = conv(p + ".attn.c_attn", e, 3 * e);
    } else {
      Tensor aw = R.get(p + ".attn.c_attn.weight", {e, 3 * e});
      Tensor ab = R.get(p + ".attn.c_attn.bias", {3 * e});
      Tensor aw2(DType::f32, aw.shape(), false), ab2(DType::f32, ab.shape(), false);
      std::memcpy(aw2.raw(), aw.raw(), aw.nbytes());
      std::memcpy(ab2.raw(), ab.raw(), ab.nbytes());
      const float s = static_cast<float>(q_scale);
      for (int64_t i = 0; i < e; ++i)
        for (int64_t j = 0; j < e; ++j) aw2.data<float>()[i * 3 * e + j] *= s;
      for (int64_t j = 0; j < e; ++j) ab2.data<float>()[j] *= s;
      // (A scaled copy: a quantized directory keeps c_attn as stored, f32; it is converted at
      // load like any f32 weight.)
      const int weight =
          ws.add(p + ".attn.c_attn.weight", aw2, {R.stored_name(p + ".attn.c_attn.weight")});
      ws.at_mut(weight).kn_layout = true;
      ws.at_mut(weight).exact = false;
      L.attn.qkv = Dense{p + ".attn.c_attn", weight, ws.add(p + ".attn.c_attn.bias", ab2)};
    }
    L.attn.out = conv(p + ".attn.c_proj", e, e);
    L.ln_2 = norm(p + ".ln_2");
    L.mlp.up = conv(p + ".mlp.c_fc", e, in);
    L.mlp.down = conv(p + ".mlp.c_proj", in, e);
    L.mlp.act = c.activation;
    w.layers.push_back(L);
  }
  w.ln_f = norm("ln_f");
  c.tied_head = !R.has("lm_head.weight");
  w.lm_head = Dense{"lm_head",
                    c.tied_head ? w.wte.table : R.add(ws, "lm_head.weight", {c.vocab_size, e}), -1};
  R.check_all_used([](const std::string& name) {
    // Causal-mask buffers of old checkpoints.
    auto ends_with = [&](const char* s) {
      const std::string suf(s);
      return name.size() >= suf.size() &&
             name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
    };
    return name.rfind("h.", 0) == 0 && (ends_with(".attn.bias") || ends_with(".attn.masked_bias"));
  });

  forward_ = std::make_unique<Graph>(weights_);
  {
    Graph& g = *forward_;
    Builder b(w, g);
    ValueId ids = g.add_input("input_ids");
    ValueId pos = g.add_input("position_ids");
    ValueId pad = g.add_input("key_padding_mask", true);
    g.mark_output(b.head(b.blocks(ids, pos, pad, false)), "logits");
  }
  cached_ = std::make_unique<Graph>(weights_);
  {
    Graph& g = *cached_;
    Builder b(w, g);
    ValueId ids = g.add_input("input_ids");
    ValueId pos = g.add_input("position_ids");
    ValueId pad = g.add_input("key_padding_mask", true);  // absent for rows with own caches
    g.mark_output(b.blocks(ids, pos, pad, true), "hidden");
  }
  head_ = std::make_unique<Graph>(weights_);
  {
    Graph& g = *head_;
    Builder b(w, g);
    g.mark_output(b.head(g.add_input("hidden")), "logits");
  }
  // The fixed pipeline of graph passes over the three graphs (one shared weight set), then one
  // session (arena, memory plans) per graph.
  pass_stats_ = passes::run({forward_.get(), cached_.get(), head_.get()});
}

TensorMap Gpt2Model::run(const TensorMap& inputs, NodeObserver* observer) const {
  const auto& c = cfg_;
  hf::check_names(inputs, {"input_ids", "attention_mask", "position_ids"}, {"input_ids"});
  const Tensor& ids = inputs.at("input_ids");
  hf::check_ids(ids, "input_ids", -1, c.vocab_size, "vocab_size");
  const int64_t batch = ids.dim(0), len = ids.dim(1);
  if (len > c.n_positions)
    throw Error("input 'input_ids' has " + std::to_string(len) +
                " positions, more than the model's n_positions " + std::to_string(c.n_positions));
  if (batch < 1 || len < 1)
    throw Error("input 'input_ids' must have at least one row and one position, got " +
                hf::describe(ids));
  TensorMap in{{"input_ids", ids}};
  if (auto it = inputs.find("position_ids"); it != inputs.end()) {
    if (it->second.shape() != Shape{batch, len})
      throw Error("input 'position_ids' must be I64 " + shape_str({batch, len}) + ", got " +
                  hf::describe(it->second));
    hf::check_ids(it->second, "position_ids", batch, c.n_positions, "n_positions");
    in["position_ids"] = it->second;
  } else {
    Tensor pos(DType::i64, {batch, len});
    for (int64_t i = 0; i < pos.numel(); ++i) pos.data<int64_t>()[i] = i % len;
    in["position_ids"] = pos;
  }
  if (auto it = inputs.find("attention_mask"); it != inputs.end())
    in["key_padding_mask"] =
        hf::key_padding_from_attention_mask(it->second, "attention_mask", batch, len);
  RunContext ctx;
  ctx.observer = observer;
  return session(*forward_).run(in, ctx);
}

Tensor Gpt2Model::decode(const Tensor& ids, const Tensor& positions, const Tensor& key_padding,
                         KVCache& cache, int64_t past_len, NodeObserver* observer) const {
  RunContext ctx{&cache, past_len, observer, {}};
  Tensor hidden =
      session(*cached_)
          .run({{"input_ids", ids}, {"position_ids", positions}, {"key_padding_mask", key_padding}},
               ctx)
          .at("hidden");  // [B, T, E]
  return last_logits(hidden, observer);
}

Tensor Gpt2Model::decode_rows(const Tensor& ids, const Tensor& positions,
                              std::vector<RunContext::RowCache> rows,
                              NodeObserver* observer) const {
  RunContext ctx;
  ctx.observer = observer;
  ctx.rows = std::move(rows);
  Tensor hidden =
      session(*cached_).run({{"input_ids", ids}, {"position_ids", positions}}, ctx).at("hidden");
  return last_logits(hidden, observer);
}

Tensor Gpt2Model::last_logits(const Tensor& hidden, NodeObserver* observer) const {
  const int64_t batch = hidden.dim(0), t = hidden.dim(1), e = hidden.dim(2);
  Tensor last = hidden;
  if (t != 1) {
    last = Tensor(DType::f32, {batch, 1, e}, false);
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(last.data<float>() + b * e, hidden.data<float>() + (b * t + t - 1) * e,
                  sizeof(float) * static_cast<size_t>(e));
  }
  RunContext head_ctx;
  head_ctx.observer = observer;
  Tensor logits = session(*head_).run({{"hidden", last}}, head_ctx).at("logits");  // [B, 1, V]
  return logits.reshaped({batch, logits.dim(2)});
}

std::unique_ptr<CausalLM> Gpt2Model::new_session(int64_t max_new_tokens,
                                                 NodeObserver* observer) const {
  return std::make_unique<Gpt2Session>(*this, max_new_tokens, observer);
}

std::unique_ptr<RowModel> Gpt2Model::new_rows(int64_t prefill_chunk, NodeObserver* observer) const {
  return std::make_unique<Gpt2Rows>(*this, prefill_chunk, observer);
}

}  // namespace tessera::models
