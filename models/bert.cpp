#include "models/bert.h"

#include "engine/io/limits.h"

#include "engine/graph/passes/passes.h"
#include "models/layers.h"
#include "models/ragged.h"

#include <cmath>
#include <cstring>
#include <sstream>

namespace tessera::models {

namespace {

using kernels::Activation;

BertConfig read_config(const ModelDir& dir) {
  const std::string path = dir.config_path();
  const std::string type = dir.get_string("model_type", "");
  if (type != "bert") throw Error("'" + path + "': model_type is '" + type + "', expected 'bert'");
  BertConfig c;
  c.vocab_size = dir.get_int("vocab_size");
  c.hidden_size = dir.get_int("hidden_size");
  c.num_hidden_layers = dir.get_int("num_hidden_layers");
  c.num_attention_heads = dir.get_int("num_attention_heads");
  c.intermediate_size = dir.get_int("intermediate_size");
  c.max_position_embeddings = dir.get_int("max_position_embeddings");
  c.type_vocab_size = dir.get_int("type_vocab_size", 2);
  c.layer_norm_eps = static_cast<float>(dir.get_float("layer_norm_eps", 1e-12));
  if (dir.config().contains("pad_token_id") && !dir.config().at("pad_token_id").is_null())
    c.pad_token_id = dir.get_int("pad_token_id");
  const std::string act = dir.get_string("hidden_act", "gelu");
  if (act == "gelu")
    c.hidden_act = Activation::gelu_erf;
  else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
    c.hidden_act = Activation::gelu_tanh;
  else if (act == "relu")
    c.hidden_act = Activation::relu;
  else
    throw Error("'" + path + "': hidden_act '" + act +
                "' is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)");
  const std::string pos = dir.get_string("position_embedding_type", "absolute");
  if (pos != "absolute")
    throw Error("'" + path + "': position_embedding_type '" + pos +
                "' is not supported (absolute)");
  if (c.hidden_size < 1 || c.num_attention_heads < 1 || c.hidden_size % c.num_attention_heads)
    throw Error("'" + path + "': hidden_size " + std::to_string(c.hidden_size) +
                " must be a positive multiple of num_attention_heads " +
                std::to_string(c.num_attention_heads));
  if (c.vocab_size < 1 || c.num_hidden_layers < 1 || c.intermediate_size < 1 ||
      c.max_position_embeddings < 1 || c.type_vocab_size < 1)
    throw Error("'" + path +
                "': vocab_size, num_hidden_layers, intermediate_size, max_position_embeddings and "
                "type_vocab_size must be positive");
  if (!(c.layer_norm_eps > 0)) throw Error("'" + path + "': layer_norm_eps must be > 0");
  // The weights this config asks for, before any is allocated.
  ParamCount p(path);
  const int64_t h = c.hidden_size, in = c.intermediate_size;
  p.add("vocab_size x hidden_size", {c.vocab_size, h});
  p.add("max_position_embeddings x hidden_size", {c.max_position_embeddings, h});
  p.add("type_vocab_size x hidden_size", {c.type_vocab_size, h});
  p.add("num_hidden_layers x 4 x hidden_size x hidden_size", {c.num_hidden_layers, 4, h, h});
  p.add("num_hidden_layers x 2 x hidden_size x intermediate_size", {c.num_hidden_layers, 2, h, in});
  p.add("num_hidden_layers x 9 x hidden_size", {c.num_hidden_layers, 9, h});
  p.add("num_hidden_layers x intermediate_size", {c.num_hidden_layers, in});
  p.add("pooler hidden_size x hidden_size", {h, h});
  p.check_fits_memory();
  return c;
}

std::string summary(const BertConfig& c) {
  std::ostringstream os;
  os << "hidden_size=" << c.hidden_size << ", num_hidden_layers=" << c.num_hidden_layers
     << ", num_attention_heads=" << c.num_attention_heads
     << ", intermediate_size=" << c.intermediate_size << ", vocab_size=" << c.vocab_size
     << ", max_position_embeddings=" << c.max_position_embeddings
     << ", type_vocab_size=" << c.type_vocab_size;
  return os.str();
}

// The modules under BertModel's names (encoder.layer.N.attention.self, ...).
struct Layer {
  Attention attention;  // q, k, v stacked into one [3H] projection at load; output.dense out
  Norm attn_ln;         // attention.output.LayerNorm
  FeedForward ff;       // intermediate.dense -> activation -> output.dense
  Norm out_ln;          // output.LayerNorm
};
struct Weights {
  Embedding word, position, token_type;
  Norm emb_ln;
  std::vector<Layer> layers;
  Dense pooler;
};

// BERT (post-LN): x = LN(word[ids] + position[pos] + token_type[tt]); each layer
// x = LN(x + attention(x)), x = LN(x + ffn(x)).
class Builder {
 public:
  Builder(const Weights& w, Graph& g) : w_(w), nn_(g) {}

  ValueId embeddings(ValueId ids, ValueId pos, ValueId tt) {
    const ValueId words = nn_.embedding(w_.word, ids);
    ValueId sum = nn_.add("embeddings.add_positions", words, nn_.embedding(w_.position, pos));
    sum = nn_.add("embeddings.add_token_types", sum, nn_.embedding(w_.token_type, tt));
    return nn_.norm(w_.emb_ln, sum);
  }
  ValueId layer(int64_t l, ValueId x, const Masks& m) {
    const Layer& L = w_.layers[l];
    x = nn_.norm(L.attn_ln, nn_.self_attention(L.attention, x, m, x));
    return nn_.norm(L.out_ln, nn_.feed_forward(L.ff, x, x));
  }

  // Layer l split around its attention heads, for padding removal (attention runs per row
  // between the halves): the fused q/k/v projection [.., 3H] ...
  ValueId qkv(int64_t l, ValueId x) { return nn_.dense(w_.layers[l].attention.qkv, x); }
  // ... and the rest of the layer after the heads' output `heads` [.., H].
  ValueId after_attention(int64_t l, ValueId heads, ValueId x) {
    const Layer& L = w_.layers[l];
    x = nn_.norm(L.attn_ln, nn_.dense(L.attention.out, heads, Activation::none, x));
    return nn_.norm(L.out_ln, nn_.feed_forward(L.ff, x, x));
  }
  ValueId pooler(ValueId cls) { return nn_.dense(w_.pooler, cls); }

 private:
  const Weights& w_;
  Layers nn_;
};

}  // namespace

struct BertModel::Prepared {
  Tensor ids, pos, tt;  // I64 [B, T]
  Tensor padding;       // U8 [B, T] (1 = padding), empty when there is no attention_mask
  bool has_padding = false;
};

BertModel::BertModel(const ModelDir& dir, const LoadOptions& o)
    : cfg_(read_config(dir)), weights_(std::make_shared<WeightSet>()) {
  auto& c = cfg_;
  hf::CheckpointReader R(dir, "bert.", summary(c));
  WeightSet& ws = *weights_;
  ws.gemm_type = resolve_weight_type(dir, o);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  auto vec = [&](const std::string& name, int64_t n) { return R.add_copy(ws, name, {n}); };
  auto norm = [&](const std::string& p) {
    return Norm{p, vec(p + ".weight", h), vec(p + ".bias", h), c.layer_norm_eps};
  };
  // Linear weights as views of the mapped file: the prepack pass packs them and releases the
  // mapped pages.
  auto dense = [&](const std::string& p, int64_t out, int64_t in) {
    const int weight = R.add(ws, p + ".weight", {out, in});
    return Dense{p, weight, vec(p + ".bias", out)};
  };
  Weights w;
  w.word.name = "embeddings.word_embeddings";
  w.word.table = R.add(ws, "embeddings.word_embeddings.weight", {c.vocab_size, h});
  w.position.name = "embeddings.position_embeddings";
  w.position.table =
      R.add_copy(ws, "embeddings.position_embeddings.weight", {c.max_position_embeddings, h});
  w.token_type.name = "embeddings.token_type_embeddings";
  w.token_type.table =
      R.add_copy(ws, "embeddings.token_type_embeddings.weight", {c.type_vocab_size, h});
  w.emb_ln = norm("embeddings.LayerNorm");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l);
    Layer L;
    // q, k, v stacked into one [3H, H] projection (rows: q, then k, then v): the padding-removal
    // segments hand the fused projection to attention. The stored q/k/v stay registered as
    // views no node reads, so the prepack pass releases their mapped pages. (Joined in the
    // dtype they are held in: f32, or BF16 / I8 as stored.)
    std::vector<int> wq, bq;
    const char* parts[] = {"query", "key", "value"};
    for (int i = 0; i < 3; ++i) {
      const std::string q = p + ".attention.self." + parts[i];
      wq.push_back(R.add(ws, q + ".weight", {h, h}));
      bq.push_back(R.add_copy(ws, q + ".bias", {h}));
    }
    L.attention.name = p + ".attention.self";
    L.attention.heads = c.num_attention_heads;
    L.attention.head_dim = c.head_dim();
    const int qkv_w = ws.add_concat(p + ".attention.self.qkv.weight", wq);
    L.attention.qkv =
        Dense{p + ".attention.self.qkv", qkv_w, ws.add_concat(p + ".attention.self.qkv.bias", bq)};
    L.attention.out = dense(p + ".attention.output.dense", h, h);
    L.attn_ln = norm(p + ".attention.output.LayerNorm");
    L.ff.up = dense(p + ".intermediate.dense", inter, h);
    L.ff.down = dense(p + ".output.dense", h, inter);
    L.ff.act = c.hidden_act;
    L.out_ln = norm(p + ".output.LayerNorm");
    w.layers.push_back(L);
  }
  c.pooler = R.has("pooler.dense.weight");
  if (c.pooler) w.pooler = dense("pooler.dense", h, h);
  R.check_all_used([](const std::string& name) {
    // A buffer, and the task heads of BertFor* checkpoints (what BertModel drops too).
    for (const char* head : {"cls.", "classifier.", "qa_outputs."})
      if (name.rfind(head, 0) == 0) return true;
    return name == "embeddings.position_ids";
  });

  forward_ = std::make_unique<Graph>(weights_);
  {
    Graph& g = *forward_;
    Builder b(w, g);
    ValueId x = b.embeddings(g.add_input("input_ids"), g.add_input("position_ids"),
                             g.add_input("token_type_ids"));
    ValueId pad = g.add_input("key_padding_mask", true);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) x = b.layer(l, x, {.key_padding = pad});
    g.mark_output(x, "last_hidden_state");
  }
  for (int64_t s = 0; s <= c.num_hidden_layers; ++s) {
    auto g = std::make_unique<Graph>(weights_);
    Builder b(w, *g);
    ValueId x;
    if (s == 0) {
      x = b.embeddings(g->add_input("input_ids"), g->add_input("position_ids"),
                       g->add_input("token_type_ids"));
    } else {
      ValueId prev = g->add_input("x");
      x = b.after_attention(s - 1, g->add_input("attn"), prev);
    }
    if (s < c.num_hidden_layers) {
      g->mark_output(x, "x");
      g->mark_output(b.qkv(s, x), "qkv");
    } else {
      g->mark_output(x, "last_hidden_state");
    }
    segments_.push_back(std::move(g));
  }
  if (c.pooler) {
    pooler_ = std::make_unique<Graph>(weights_);
    Builder b(w, *pooler_);
    pooler_->mark_output(b.pooler(pooler_->add_input("cls")), "pooler_output");
  }
  // The fixed pipeline of graph passes over every graph (one shared weight set), then one
  // session (arena, memory plans) per graph.
  std::vector<Graph*> graphs{forward_.get()};
  for (auto& g : segments_) graphs.push_back(g.get());
  if (pooler_) graphs.push_back(pooler_.get());
  pass_stats_ = passes::run(graphs);
}

BertModel::Prepared BertModel::prepare(const TensorMap& inputs) const {
  const auto& c = cfg_;
  hf::check_names(inputs, {"input_ids", "attention_mask", "token_type_ids", "position_ids"},
                  {"input_ids"});
  Prepared p;
  p.ids = inputs.at("input_ids");
  hf::check_ids(p.ids, "input_ids", -1, c.vocab_size, "vocab_size");
  const int64_t batch = p.ids.dim(0), len = p.ids.dim(1);
  if (batch < 1 || len < 1)
    throw Error("input 'input_ids' must have at least one row and one position, got " +
                hf::describe(p.ids));
  if (len > c.max_position_embeddings)
    throw Error("input 'input_ids' has " + std::to_string(len) +
                " positions, more than the model's max_position_embeddings " +
                std::to_string(c.max_position_embeddings));
  auto optional_ids = [&](const char* name, int64_t limit, const char* limit_name) {
    auto it = inputs.find(name);
    if (it == inputs.end()) return Tensor();
    if (it->second.shape() != Shape{batch, len})
      throw Error(std::string("input '") + name + "' must be I64 " + shape_str({batch, len}) +
                  ", got " + hf::describe(it->second));
    hf::check_ids(it->second, name, batch, limit, limit_name);
    return it->second;
  };
  p.tt = optional_ids("token_type_ids", c.type_vocab_size, "type_vocab_size");
  if (p.tt.empty()) p.tt = Tensor(DType::i64, {batch, len});  // zeros
  p.pos = optional_ids("position_ids", c.max_position_embeddings, "max_position_embeddings");
  if (p.pos.empty()) {
    p.pos = Tensor(DType::i64, {batch, len}, false);
    for (int64_t i = 0; i < p.pos.numel(); ++i) p.pos.data<int64_t>()[i] = i % len;
  }
  if (auto it = inputs.find("attention_mask"); it != inputs.end()) {
    p.padding = hf::key_padding_from_attention_mask(it->second, "attention_mask", batch, len);
    for (int64_t i = 0; i < p.padding.numel() && !p.has_padding; ++i)
      p.has_padding = p.padding.data<uint8_t>()[i] != 0;
  }
  return p;
}

TensorMap BertModel::run(const TensorMap& inputs, NodeObserver* observer) const {
  const Prepared p = prepare(inputs);
  TensorMap out = p.has_padding ? run_packed(p, observer) : run_batched(p, observer);
  pool(out, observer);
  return out;
}

TensorMap BertModel::run_padded(const TensorMap& inputs, NodeObserver* observer) const {
  TensorMap out = run_batched(prepare(inputs), observer);
  pool(out, observer);
  return out;
}

TensorMap BertModel::run_batched(const Prepared& p, NodeObserver* observer) const {
  TensorMap in{{"input_ids", p.ids}, {"position_ids", p.pos}, {"token_type_ids", p.tt}};
  if (p.has_padding) in["key_padding_mask"] = p.padding;
  RunContext ctx;
  ctx.observer = observer;
  return session(*forward_).run(in, ctx);
}

TensorMap BertModel::run_packed(const Prepared& p, NodeObserver* observer) const {
  const auto& c = cfg_;
  const int64_t batch = p.ids.dim(0), len = p.ids.dim(1), h = c.hidden_size;
  // The real tokens of every row, in order: row b owns packed positions [begin[b], begin[b+1]).
  std::vector<int64_t> begin(static_cast<size_t>(batch) + 1, 0), where;  // where: b * len + t
  const uint8_t* pad = p.padding.data<uint8_t>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < len; ++t)
      if (!pad[b * len + t]) where.push_back(b * len + t);
    begin[b + 1] = static_cast<int64_t>(where.size());
  }
  const int64_t total = static_cast<int64_t>(where.size());
  Tensor hidden(DType::f32, {batch, len, h});  // zeros at padded positions
  if (total > 0) {
    Tensor ids(DType::i64, {1, total}, false), pos(DType::i64, {1, total}, false),
        tt(DType::i64, {1, total}, false);
    for (int64_t i = 0; i < total; ++i) {
      ids.data<int64_t>()[i] = p.ids.data<int64_t>()[where[i]];
      pos.data<int64_t>()[i] = p.pos.data<int64_t>()[where[i]];
      tt.data<int64_t>()[i] = p.tt.data<int64_t>()[where[i]];
    }
    RunContext ctx;
    ctx.observer = observer;
    TensorMap state =
        session(*segments_[0])
            .run({{"input_ids", ids}, {"position_ids", pos}, {"token_type_ids", tt}}, ctx);
    for (size_t s = 1; s < segments_.size(); ++s) {
      // Attention of each row over its own tokens, read in place from the fused projection.
      const Tensor attn =
          ragged_self_attention(state.at("qkv"), begin, c.num_attention_heads, c.head_dim());
      TensorMap in{{"x", state.at("x")}, {"attn", attn}};
      state = session(*segments_[s]).run(in, ctx);
    }
    const Tensor& packed = state.at("last_hidden_state");  // [1, total, H]
    for (int64_t i = 0; i < total; ++i)
      std::memcpy(hidden.data<float>() + where[i] * h, packed.data<float>() + i * h,
                  sizeof(float) * static_cast<size_t>(h));
  }
  return {{"last_hidden_state", hidden}};
}

void BertModel::pool(TensorMap& out, NodeObserver* observer) const {
  if (!pooler_) return;
  const Tensor& x = out.at("last_hidden_state");  // [B, T, H]
  const int64_t batch = x.dim(0), len = x.dim(1), h = x.dim(2);
  Tensor cls(DType::f32, {batch, h}, false);
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(cls.data<float>() + b * h, x.data<float>() + b * len * h,
                sizeof(float) * static_cast<size_t>(h));
  RunContext ctx;
  ctx.observer = observer;
  Tensor pooled = session(*pooler_).run({{"cls", cls}}, ctx).at("pooler_output");  // [B, H]
  // tanh: no activation kernel has it (yet); B x H elements once per call.
  float* y = pooled.data<float>();
  for (int64_t i = 0; i < pooled.numel(); ++i) y[i] = std::tanh(y[i]);
  out["pooler_output"] = pooled;
}

}  // namespace tessera::models
