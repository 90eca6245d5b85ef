#include "models/transformer.h"

#include "engine/io/limits.h"

#include "engine/graph/passes/passes.h"
#include "models/layers.h"
#include "models/ragged.h"

#include <cmath>
#include <cstring>
#include <set>
#include <sstream>

namespace tessera::models {

namespace {

using kernels::Activation;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------
TransformerConfig read_config(const ModelDir& dir) {
  const std::string cfg_path = dir.config_path();
  const std::string type = dir.get_string("model_type", "");
  if (type != "transformer")
    throw Error("'" + cfg_path + "': model_type is '" + type + "', expected 'transformer'");
  TransformerConfig c;
  // Defaults are nn.Transformer's constructor defaults.
  c.d_model = dir.get_int("d_model", 512);
  c.nhead = dir.get_int("nhead", 8);
  c.num_encoder_layers = dir.get_int("num_encoder_layers", 6);
  c.num_decoder_layers = dir.get_int("num_decoder_layers", 6);
  c.dim_feedforward = dir.get_int("dim_feedforward", 2048);
  c.layer_norm_eps = static_cast<float>(dir.get_float("layer_norm_eps", 1e-5));
  c.norm_first = dir.get_bool("norm_first", false);
  const std::string act = dir.get_string("activation", "relu");
  if (act == "relu")
    c.activation = Activation::relu;
  else if (act == "gelu")
    c.activation = Activation::gelu_erf;
  else
    throw Error("'" + cfg_path + "': activation '" + act + "' is not supported (relu, gelu)");
  if (c.d_model <= 0 || c.nhead <= 0 || c.d_model % c.nhead != 0)
    throw Error("'" + cfg_path + "': d_model " + std::to_string(c.d_model) +
                " must be a positive multiple of nhead " + std::to_string(c.nhead));
  if (c.dim_feedforward <= 0 || c.num_encoder_layers < 0 || c.num_decoder_layers < 0 ||
      (c.num_encoder_layers == 0 && c.num_decoder_layers == 0))
    throw Error("'" + cfg_path +
                "': dim_feedforward must be positive and at least one stack must have layers");
  if (!(c.layer_norm_eps > 0)) throw Error("'" + cfg_path + "': layer_norm_eps must be > 0");

  c.embeddings = dir.has("tgt_embed.weight") || dir.has("src_embed.weight") ||
                 dir.get_int("tgt_vocab_size", 0) > 0;
  if (c.embeddings) {
    if (!c.has_decoder())
      throw Error("'" + cfg_path + "': token embeddings need a decoder (num_decoder_layers > 0)");
    if (c.has_encoder()) c.src_vocab_size = dir.get_int("src_vocab_size");
    c.tgt_vocab_size = dir.get_int("tgt_vocab_size");
    c.max_position = dir.get_int("max_position");
    const std::string pos = dir.get_string("positional", "sinusoidal");
    if (pos != "sinusoidal")
      throw Error("'" + cfg_path + "': positional '" + pos + "' is not supported (sinusoidal)");
    c.scale_embedding = dir.get_bool("scale_embedding", false);
    c.bos_id = dir.get_int("bos_id", -1);
    c.eos_id = dir.get_int("eos_id", -1);
    c.pad_id = dir.get_int("pad_id", 0);
    if ((c.has_encoder() && c.src_vocab_size <= 0) || c.tgt_vocab_size <= 0 || c.max_position <= 0)
      throw Error("'" + cfg_path + "': vocabulary sizes and max_position must be positive");
  }
  // The weights this config asks for, before any is allocated (checked arithmetic, compared
  // with physical memory).
  ParamCount p(cfg_path);
  const int64_t d = c.d_model, ff = c.dim_feedforward;
  const int64_t le = c.num_encoder_layers, ld = c.num_decoder_layers;
  p.add("num_encoder_layers x 4 x d_model x d_model", {le, 4, d, d});
  p.add("num_encoder_layers x 2 x d_model x dim_feedforward", {le, 2, d, ff});
  p.add("num_encoder_layers x 9 x d_model", {le, 9, d});
  p.add("num_encoder_layers x dim_feedforward", {le, ff});
  p.add("num_decoder_layers x 8 x d_model x d_model", {ld, 8, d, d});
  p.add("num_decoder_layers x 2 x d_model x dim_feedforward", {ld, 2, d, ff});
  p.add("num_decoder_layers x 15 x d_model", {ld, 15, d});
  p.add("num_decoder_layers x dim_feedforward", {ld, ff});
  if (c.embeddings) {
    p.add("src_vocab_size x d_model", {c.src_vocab_size, d});
    p.add("tgt_vocab_size x d_model (embedding and generator)", {c.tgt_vocab_size, 2, d});
    p.add("max_position x d_model (positions)", {c.max_position, d});
  }
  p.check_fits_memory();
  return c;
}

// ---------------------------------------------------------------------------------------------
// Weights: every tensor is checked for presence, dtype and shape, and marked used; anything
// left unused at the end is an error (a checkpoint that does not match its config).
// ---------------------------------------------------------------------------------------------
class WeightLoader {
 public:
  WeightLoader(const ModelDir& dir, const TransformerConfig& c, WeightSet& ws)
      : dir_(dir), c_(c), ws_(ws) {
    // A bare nn.TransformerEncoder / nn.TransformerDecoder names its layers "layers.N...".
    bare_ = (c.num_decoder_layers == 0 || c.num_encoder_layers == 0) &&
            dir.has("layers.0.self_attn.in_proj_weight");
  }

  bool has(const std::string& name) const { return dir_.has(resolve(name)); }

  // The tensor of the expected shape as `want` reads it (models/weights.h): f32 (a view when the
  // file holds f32, else a converted copy), or for a GEMM weight BF16 / I8 as stored.
  StoredWeight stored(const std::string& name, const Shape& expected, Want want) {
    const std::string real = resolve(name);
    if (!dir_.has(real))
      throw Error("model directory '" + dir_.dir() + "' has no tensor '" + real +
                  "' (required by config.json: " + summary() + ")");
    used_.insert(real);
    StoredWeight w = read_weight(dir_, real, expected, summary(), want, ws_.gemm_type);
    if (w.tensor.dtype() == DType::i8) used_.insert(scale_name(real));
    return w;
  }

  // A whole tensor as one weight (a view of the file where it holds f32).
  int whole(const std::string& name, const Shape& shape, Want want = Want::gemm) {
    return add_weight(ws_, name, stored(name, shape, want), resolve(name));
  }
  int vec(const std::string& name, int64_t n) { return whole(name, {n}, Want::f32); }
  int table(const std::string& name, const Shape& shape) { return whole(name, shape, Want::f32); }
  // Rows [begin, begin + count) of an already loaded matrix or vector `full` (stored as
  // `name`), as a view (the prepack pass packs the matrices the GEMMs read).
  int rows(const std::string& label, const StoredWeight& full, const std::string& name,
           int64_t begin, int64_t count) {
    return ws_.add_rows(label, full.tensor, begin, count, full.mapped, full.scale, {resolve(name)});
  }

  void check_all_used() const {
    for (const auto& name : dir_.names())
      if (!used_.count(name))
        throw Error("'" + dir_.file_of(name) + "': unexpected tensor '" + name +
                    "' (not part of a transformer with " + summary() + ")");
  }

 private:
  std::string resolve(const std::string& name) const {
    if (!bare_) return name;
    for (const char* prefix : {"encoder.", "decoder."})
      if (name.rfind(prefix, 0) == 0) return name.substr(std::string(prefix).size());
    return name;
  }
  std::string summary() const {
    std::ostringstream os;
    os << "d_model=" << c_.d_model << ", nhead=" << c_.nhead
       << ", num_encoder_layers=" << c_.num_encoder_layers
       << ", num_decoder_layers=" << c_.num_decoder_layers
       << ", dim_feedforward=" << c_.dim_feedforward;
    return os.str();
  }

  const ModelDir& dir_;
  const TransformerConfig& c_;
  WeightSet& ws_;
  bool bare_ = false;
  std::set<std::string> used_;
};

// The modules of one encoder or decoder layer under nn.Transformer's names. Attention: the q, k,
// v rows of in_proj_weight/in_proj_bias as three projections (the fuse_qkv pass joins them
// again), and the output projection.
struct LayerWeights {
  Attention self_attn, cross_attn;  // cross_attn: decoder layers only
  FeedForward ff;                   // linear1 -> activation -> linear2
  Norm norm1, norm2, norm3;         // norm3: decoder layers only
};

Attention load_attention(WeightLoader& L, const TransformerConfig& c, const std::string& p) {
  const int64_t e = c.d_model;
  Attention a;
  a.name = p;
  a.heads = c.nhead;
  a.head_dim = c.head_dim();
  const std::string w = p + ".in_proj_weight", b = p + ".in_proj_bias";
  const StoredWeight in_w = L.stored(w, {3 * e, e}, Want::gemm);
  const StoredWeight in_b = L.stored(b, {3 * e}, Want::f32);
  a.q = Dense{p + ".q_proj", L.rows(w + "[q]", in_w, w, 0, e), -1};
  a.k = Dense{p + ".k_proj", L.rows(w + "[k]", in_w, w, e, e), -1};
  a.v = Dense{p + ".v_proj", L.rows(w + "[v]", in_w, w, 2 * e, e), -1};
  a.q.bias = L.rows(b + "[q]", in_b, b, 0, e);
  a.k.bias = L.rows(b + "[k]", in_b, b, e, e);
  a.v.bias = L.rows(b + "[v]", in_b, b, 2 * e, e);
  a.out.name = p + ".out_proj";
  a.out.weight = L.whole(p + ".out_proj.weight", {e, e});
  a.out.bias = L.vec(p + ".out_proj.bias", e);
  return a;
}

Norm load_norm(WeightLoader& L, const TransformerConfig& c, const std::string& p) {
  const int gamma = L.vec(p + ".weight", c.d_model);
  return Norm{p, gamma, L.vec(p + ".bias", c.d_model), c.layer_norm_eps};
}

Dense load_dense(WeightLoader& L, const std::string& p, int64_t out, int64_t in) {
  const int weight = L.whole(p + ".weight", {out, in});
  return Dense{p, weight, L.vec(p + ".bias", out)};
}

LayerWeights load_layer(WeightLoader& L, const TransformerConfig& c, const std::string& p,
                        bool decoder) {
  const int64_t e = c.d_model, f = c.dim_feedforward;
  LayerWeights w;
  w.self_attn = load_attention(L, c, p + ".self_attn");
  if (decoder) w.cross_attn = load_attention(L, c, p + ".multihead_attn");
  w.ff.up = load_dense(L, p + ".linear1", f, e);
  w.ff.down = load_dense(L, p + ".linear2", e, f);
  w.ff.act = c.activation;
  w.norm1 = load_norm(L, c, p + ".norm1");
  w.norm2 = load_norm(L, c, p + ".norm2");
  if (decoder) w.norm3 = load_norm(L, c, p + ".norm3");
  return w;
}

struct ModelWeights {
  std::vector<LayerWeights> enc, dec;
  Norm enc_norm, dec_norm;  // when config encoder_norm / decoder_norm
  // Token models: table[ids] [* sqrt(d_model)] + sinusoidal positions; the output projection.
  Embedding src_embed, tgt_embed;
  Dense generator;
};

// One weight over the consecutive rows of `ids` (q, k, v of one in_proj_weight, or its k, v): a
// view, recorded where the fuse_qkv pass looks, so the graphs it fuses share the same entry.
int joined_rows(WeightSet& ws, const std::vector<int>& ids, const std::string& name) {
  if (auto it = ws.concatenated.find(ids); it != ws.concatenated.end()) return it->second;
  const Tensor base = ws.at(ids[0]).base, base_scale = ws.at(ids[0]).base_scale;
  const int64_t first_row = ws.at(ids[0]).base_row;
  const bool mapped = ws.at(ids[0]).mapped;
  const std::vector<std::string> sources = ws.at(ids[0]).sources;
  int64_t rows = 0;
  for (int id : ids) {
    const auto& e = ws.at(id);
    if (e.base.empty() || e.base.raw() != base.raw() || e.base_row != first_row + rows)
      throw Error("internal: '" + e.name + "' is not a consecutive row block of its matrix");
    rows += e.tensor.dim(0);
  }
  const int out = ws.add_rows(name, base, first_row, rows, mapped, base_scale, sources);
  ws.concatenated[ids] = out;
  return out;
}

// The fused projection `name` ("<attention>.qkv_proj", "<attention>.kv_proj") over the
// consecutive rows of the given projections' weights and biases.
Dense joined(WeightSet& ws, const std::string& name, const std::vector<const Dense*>& parts) {
  std::vector<int> weights, biases;
  for (const Dense* d : parts) weights.push_back(d->weight);
  for (const Dense* d : parts) biases.push_back(d->bias);
  const int bias = joined_rows(ws, biases, name + ".bias");  // (registered first, as it was)
  return Dense{name, joined_rows(ws, weights, name + ".weight"), bias};
}

// ---------------------------------------------------------------------------------------------
// Graph building: nn.Transformer's encoder and decoder layers, each sub-layer
// x = norm(x + f(x)) (post-LN) or x = x + f(norm(x)) (norm_first).
// ---------------------------------------------------------------------------------------------
class Builder {
 public:
  Builder(const TransformerConfig& c, const ModelWeights& w, Graph& g)
      : c_(c), w_(w), nn_(g), ln_(c.norm_first ? NormPlacement::pre : NormPlacement::post) {}

  // table[ids] [* sqrt(d_model)] + positions (counted from the KV cache in decode steps).
  ValueId embed(const Embedding& e, ValueId ids, bool from_cache = false) {
    return nn_.embedding(e, ids, from_cache);
  }

  ValueId encoder(ValueId x, const Masks& m) {
    for (const LayerWeights& L : w_.enc) {
      x = nn_.sublayer(ln_, L.norm1, x, [&](ValueId in, ValueId res) {
        return nn_.self_attention(L.self_attn, in, m, res);
      });
      x = feed_forward(L.norm2, L.ff, x);
    }
    return encoder_final_norm(x);
  }

  // Encoder layer L split around its self-attention heads, for the packed encode path (attention
  // runs per source between the halves). The fused q|k|v projection [.., 3E] of the layer's
  // input:
  ValueId encoder_qkv(const LayerWeights& L, ValueId x, const Dense& qkv) {
    return nn_.dense(qkv, nn_.norm_input(ln_, L.norm1, x));
  }
  // ... and the rest of the layer after the heads' output `heads` [.., E].
  ValueId encoder_after_attention(const LayerWeights& L, ValueId heads, ValueId x) {
    x = nn_.norm_output(ln_, L.norm1, nn_.dense(L.self_attn.out, heads, Activation::none, x));
    return feed_forward(L.norm2, L.ff, x);
  }
  ValueId encoder_final_norm(ValueId x) { return c_.encoder_norm ? nn_.norm(w_.enc_norm, x) : x; }

  // Cross-attention keys and values of decoder layer l, projected from the memory: [B, S, E]
  // each.
  KV memory_kv(int64_t l, ValueId memory) { return nn_.project_kv(w_.dec[l].cross_attn, memory); }

  // memory[l]: the cross-attention keys/values of layer l. With use_cache, self-attention reads
  // and extends KV-cache slot l.
  ValueId decoder(ValueId y, const std::vector<KV>& memory, const Masks& self, const Masks& cross,
                  bool use_cache) {
    for (size_t l = 0; l < w_.dec.size(); ++l) {
      const LayerWeights& L = w_.dec[l];
      const int slot = use_cache ? static_cast<int>(l) : -1;
      y = nn_.sublayer(ln_, L.norm1, y, [&](ValueId in, ValueId res) {
        return nn_.self_attention(L.self_attn, in, self, res, slot);
      });
      y = nn_.sublayer(ln_, L.norm2, y, [&](ValueId in, ValueId res) {
        return nn_.cross_attention(L.cross_attn, in, memory[l], cross, res);
      });
      y = feed_forward(L.norm3, L.ff, y);
    }
    return c_.decoder_norm ? nn_.norm(w_.dec_norm, y) : y;
  }

  ValueId generator(ValueId y) { return nn_.dense(w_.generator, y); }
  ValueId dense(const Dense& d, ValueId x) { return nn_.dense(d, x); }

 private:
  // The feed-forward sub-layer (the last of either layer kind) with its norm.
  ValueId feed_forward(const Norm& n, const FeedForward& ff, ValueId x) {
    return nn_.sublayer(ln_, n, x,
                        [&](ValueId in, ValueId res) { return nn_.feed_forward(ff, in, res); });
  }

  const TransformerConfig& c_;
  const ModelWeights& w_;
  Layers nn_;
  const NormPlacement ln_;
};

// ---------------------------------------------------------------------------------------------
// Input validation for `tessera run`
// ---------------------------------------------------------------------------------------------
std::string describe(const Tensor& t) {
  return std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape());
}

bool bool_like(DType dt) {
  return dt == DType::boolean || dt == DType::u8;
}

void check_float3(const TensorMap& in, const std::string& name, int64_t e, int64_t batch) {
  const Tensor& t = in.at(name);
  if (t.dtype() != DType::f32 || t.rank() != 3 || t.dim(2) != e ||
      (batch >= 0 && t.dim(0) != batch))
    throw Error("input '" + name + "' must be F32 [" + (batch >= 0 ? std::to_string(batch) : "B") +
                ", L, " + std::to_string(e) + "], got " + describe(t));
}

void check_ids(const TensorMap& in, const std::string& name, int64_t vocab, int64_t max_pos,
               int64_t batch, const char* vocab_key) {
  const Tensor& t = in.at(name);
  if (t.dtype() != DType::i64 || t.rank() != 2 || (batch >= 0 && t.dim(0) != batch))
    throw Error("input '" + name + "' must be I64 [" + (batch >= 0 ? std::to_string(batch) : "B") +
                ", L], got " + describe(t));
  if (t.dim(1) > max_pos)
    throw Error("input '" + name + "' has " + std::to_string(t.dim(1)) +
                " positions, more than max_position " + std::to_string(max_pos));
  const int64_t* p = t.data<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (p[i] < 0 || p[i] >= vocab)
      throw Error("input '" + name + "': token id " + std::to_string(p[i]) + " at [" +
                  std::to_string(i / t.dim(1)) + ", " + std::to_string(i % t.dim(1)) +
                  "] is out of range for " + vocab_key + " " + std::to_string(vocab));
}

void check_attn_mask(const TensorMap& in, const std::string& name, int64_t batch, int64_t heads,
                     int64_t t_len, int64_t s_len) {
  auto it = in.find(name);
  if (it == in.end()) return;
  const Tensor& m = it->second;
  const Shape a{t_len, s_len}, b{batch * heads, t_len, s_len};
  if ((!bool_like(m.dtype()) && m.dtype() != DType::f32) || (m.shape() != a && m.shape() != b))
    throw Error("input '" + name + "' must be BOOL, U8 or F32 " + shape_str(a) + " or " +
                shape_str(b) + ", got " + describe(m));
}

void check_padding(const TensorMap& in, const std::string& name, int64_t batch, int64_t len) {
  auto it = in.find(name);
  if (it == in.end()) return;
  const Tensor& m = it->second;
  if (!bool_like(m.dtype()) || m.shape() != Shape{batch, len})
    throw Error("input '" + name + "' must be BOOL or U8 " + shape_str(Shape{batch, len}) +
                ", got " + describe(m));
}

}  // namespace

// -------------------------------------------------------------------------------------------------

TransformerModel::TransformerModel(const ModelDir& dir, const LoadOptions& o)
    : cfg_(read_config(dir)), weights_(std::make_shared<WeightSet>()) {
  auto& c = cfg_;
  weights_->gemm_type = resolve_weight_type(dir, o);
  WeightLoader L(dir, c, *weights_);
  const int64_t e = c.d_model;
  ModelWeights w;
  for (int64_t l = 0; l < c.num_encoder_layers; ++l)
    w.enc.push_back(load_layer(L, c, "encoder.layers." + std::to_string(l), false));
  for (int64_t l = 0; l < c.num_decoder_layers; ++l)
    w.dec.push_back(load_layer(L, c, "decoder.layers." + std::to_string(l), true));
  c.encoder_norm = c.has_encoder() && L.has("encoder.norm.weight");
  c.decoder_norm = c.has_decoder() && L.has("decoder.norm.weight");
  if (c.encoder_norm) w.enc_norm = load_norm(L, c, "encoder.norm");
  if (c.decoder_norm) w.dec_norm = load_norm(L, c, "decoder.norm");
  if (c.embeddings) {
    if (c.has_encoder()) w.src_embed.table = L.table("src_embed.weight", {c.src_vocab_size, e});
    w.tgt_embed.table = L.table("tgt_embed.weight", {c.tgt_vocab_size, e});
    w.generator = {"generator", L.whole("generator.weight", {c.tgt_vocab_size, e}), -1};
    if (L.has("generator.bias")) w.generator.bias = L.vec("generator.bias", c.tgt_vocab_size);
    Tensor pe(DType::f32, {c.max_position, e});
    kernels::sinusoidal_positions(c.max_position, e, pe.data<float>());
    const int positions = weights_->add("positions", std::move(pe));
    for (Embedding* emb : {&w.src_embed, &w.tgt_embed}) {
      emb->positions = positions;
      if (c.scale_embedding) emb->scale = static_cast<float>(std::sqrt(static_cast<double>(e)));
    }
    w.src_embed.name = "src_embed";
    w.tgt_embed.name = "tgt_embed";
  }
  L.check_all_used();

  // forward: the `tessera run` contract.
  forward_ = std::make_unique<Graph>(weights_);
  {
    Graph& g = *forward_;
    Builder b(c, w, g);
    ValueId memory = kNone;
    if (c.has_encoder()) {
      ValueId src =
          c.embeddings ? b.embed(w.src_embed, g.add_input("src_ids")) : g.add_input("src");
      ValueId src_mask = g.add_input("src_mask", true);
      ValueId src_padding = g.add_input("src_key_padding_mask", true);
      memory = b.encoder(src, {.attn_mask = src_mask, .key_padding = src_padding});
      if (!c.has_decoder()) g.mark_output(memory, "output");
    }
    if (c.has_decoder()) {
      if (!c.has_encoder()) memory = g.add_input("memory");
      ValueId tgt =
          c.embeddings ? b.embed(w.tgt_embed, g.add_input("tgt_ids")) : g.add_input("tgt");
      ValueId tgt_mask = g.add_input("tgt_mask", true);
      ValueId memory_mask = g.add_input("memory_mask", true);
      ValueId tgt_padding = g.add_input("tgt_key_padding_mask", true);
      ValueId memory_padding = g.add_input("memory_key_padding_mask", true);
      std::vector<KV> kv;
      for (int64_t l = 0; l < c.num_decoder_layers; ++l) kv.push_back(b.memory_kv(l, memory));
      ValueId y = b.decoder(tgt, kv, {.attn_mask = tgt_mask, .key_padding = tgt_padding},
                            {.attn_mask = memory_mask, .key_padding = memory_padding}, false);
      if (c.embeddings)
        g.mark_output(b.generator(y), "logits");
      else
        g.mark_output(y, "output");
    }
  }

  // encode + decode_step: generation with a KV cache.
  if (c.embeddings && c.has_encoder()) {
    encode_ = std::make_unique<Graph>(weights_);
    {
      Graph& g = *encode_;
      Builder b(c, w, g);
      ValueId src = b.embed(w.src_embed, g.add_input("src_ids"));
      ValueId padding = g.add_input("src_key_padding_mask", true);
      ValueId memory = b.encoder(src, {.key_padding = padding});
      for (int64_t l = 0; l < c.num_decoder_layers; ++l) {
        const KV kv = b.memory_kv(l, memory);
        g.mark_output(kv.k.value, "memory_k." + std::to_string(l));
        g.mark_output(kv.v.value, "memory_v." + std::to_string(l));
      }
    }
    // The packed encode path (padding removal): the embeddings of the padded batch, then one
    // graph per gap between self-attentions over the real tokens only [1, total, E].
    if (c.has_decoder()) {
      enc_embed_ = std::make_unique<Graph>(weights_);
      Builder b(c, w, *enc_embed_);
      enc_embed_->mark_output(b.embed(w.src_embed, enc_embed_->add_input("src_ids")), "x");
      std::vector<Dense> qkv;  // the fused q|k|v projection of each encoder layer
      for (const LayerWeights& L : w.enc) {
        const Attention& a = L.self_attn;
        qkv.push_back(joined(*weights_, a.name + ".qkv_proj", {&a.q, &a.k, &a.v}));
      }
      for (int64_t s = 0; s <= c.num_encoder_layers; ++s) {
        auto g = std::make_unique<Graph>(weights_);
        Builder b(c, w, *g);
        ValueId x = g->add_input("x");
        if (s > 0) {
          x = b.encoder_after_attention(w.enc[s - 1], g->add_input("attn"), x);
          if (s < c.num_encoder_layers) g->mark_output(x, "x");
        }
        if (s < c.num_encoder_layers) {
          g->mark_output(b.encoder_qkv(w.enc[s], x, qkv[s]), "qkv");
        } else {
          x = b.encoder_final_norm(x);
          for (int64_t l = 0; l < c.num_decoder_layers; ++l) {
            const Attention& a = w.dec[l].cross_attn;
            g->mark_output(b.dense(joined(*weights_, a.name + ".kv_proj", {&a.k, &a.v}), x),
                           "memory_kv." + std::to_string(l));
          }
        }
        enc_segments_.push_back(std::move(g));
      }
    }
    step_ = std::make_unique<Graph>(weights_);
    {
      Graph& g = *step_;
      Builder b(c, w, g);
      ValueId tgt = b.embed(w.tgt_embed, g.add_input("tgt_ids"), /*from_cache=*/true);
      std::vector<KV> kv;
      for (int64_t l = 0; l < c.num_decoder_layers; ++l) {
        const ValueId k = g.add_input("memory_k." + std::to_string(l));
        kv.push_back(KV{k, g.add_input("memory_v." + std::to_string(l))});
      }
      ValueId memory_padding = g.add_input("memory_key_padding_mask", true);
      // Each new token attends to the cache and itself; the cross-attention to the real sources.
      ValueId y = b.decoder(tgt, kv, {.causal = true}, {.key_padding = memory_padding}, true);
      g.mark_output(b.generator(y), "logits");
    }
  }

  // The fixed pipeline of graph passes (fusions, dead nodes, prepacking) over all three graphs.
  std::vector<Graph*> graphs{forward_.get()};
  if (encode_) graphs.push_back(encode_.get());
  if (step_) graphs.push_back(step_.get());
  if (enc_embed_) graphs.push_back(enc_embed_.get());
  for (auto& g : enc_segments_) graphs.push_back(g.get());
  pass_stats_ = passes::run(graphs);
}

TensorMap TransformerModel::run(const TensorMap& inputs, NodeObserver* observer) const {
  const auto& c = cfg_;
  std::set<std::string> allowed;
  for (ValueId v : forward_->inputs()) allowed.insert(forward_->values()[v].name);
  std::string expected;
  for (const auto& n : allowed) expected += (expected.empty() ? "" : ", ") + n;
  for (const auto& [name, t] : inputs)
    if (!allowed.count(name))
      throw Error("unknown input '" + name + "' (this model takes: " + expected + ")");
  for (ValueId v : forward_->inputs()) {
    const Value& val = forward_->values()[v];
    if (!val.optional && !inputs.count(val.name))
      throw Error("missing input '" + val.name + "' (this model takes: " + expected + ")");
  }

  const int64_t e = c.d_model, h = c.nhead;
  int64_t batch = -1, s_len = 0, t_len = 0;
  if (c.has_encoder()) {
    const std::string src = c.embeddings ? "src_ids" : "src";
    if (c.embeddings)
      check_ids(inputs, src, c.src_vocab_size, c.max_position, -1, "src_vocab_size");
    else
      check_float3(inputs, src, e, -1);
    batch = inputs.at(src).dim(0);
    s_len = inputs.at(src).dim(1);
    check_attn_mask(inputs, "src_mask", batch, h, s_len, s_len);
    check_padding(inputs, "src_key_padding_mask", batch, s_len);
  }
  if (c.has_decoder()) {
    if (!c.has_encoder()) {
      check_float3(inputs, "memory", e, -1);
      batch = inputs.at("memory").dim(0);
      s_len = inputs.at("memory").dim(1);
    }
    const std::string tgt = c.embeddings ? "tgt_ids" : "tgt";
    if (c.embeddings)
      check_ids(inputs, tgt, c.tgt_vocab_size, c.max_position, batch, "tgt_vocab_size");
    else
      check_float3(inputs, tgt, e, batch);
    t_len = inputs.at(tgt).dim(1);
    check_attn_mask(inputs, "tgt_mask", batch, h, t_len, t_len);
    check_attn_mask(inputs, "memory_mask", batch, h, t_len, s_len);
    check_padding(inputs, "tgt_key_padding_mask", batch, t_len);
    check_padding(inputs, "memory_key_padding_mask", batch, s_len);
  }
  RunContext ctx;
  ctx.observer = observer;
  return session(*forward_).run(inputs, ctx);
}

TransformerModel::EncoderState TransformerModel::encode(const Tensor& src_ids,
                                                        const Tensor& src_key_padding,
                                                        NodeObserver* observer) const {
  if (!encode_) throw Error("this model has no encoder with token embeddings to generate from");
  bool padded = false;
  if (!src_key_padding.empty()) {
    if (src_key_padding.dtype() != DType::u8 || src_key_padding.shape() != src_ids.shape())
      throw Error("encode: src_key_padding_mask must be U8 " + shape_str(src_ids.shape()) +
                  ", got " + shape_str(src_key_padding.shape()));
    const uint8_t* pad = src_key_padding.data<uint8_t>();
    for (int64_t i = 0; i < src_key_padding.numel() && !padded; ++i) padded = pad[i] != 0;
  }
  EncoderState st;
  st.memory_key_padding = src_key_padding;
  if (padded && !enc_segments_.empty()) {
    st.memory_kv = encode_packed(src_ids, src_key_padding, observer);
    return st;
  }
  RunContext ctx;
  ctx.observer = observer;
  TensorMap in{{"src_ids", src_ids}};
  if (!src_key_padding.empty()) in["src_key_padding_mask"] = src_key_padding;
  st.memory_kv = session(*encode_).run(in, ctx);
  return st;
}

TensorMap TransformerModel::encode_packed(const Tensor& src_ids, const Tensor& src_key_padding,
                                          NodeObserver* observer) const {
  const auto& c = cfg_;
  const int64_t batch = src_ids.dim(0), len = src_ids.dim(1), e = c.d_model;
  RunContext ctx;
  ctx.observer = observer;
  // Embeddings of the padded batch (positions as the dense encoder sees them), cheap next to
  // the layers; then the real tokens of every row, in order: row b owns packed positions
  // [begin[b], begin[b + 1]), taken from padded position where[i] = b * len + t.
  const Tensor embedded = session(*enc_embed_).run({{"src_ids", src_ids}}, ctx).at("x");
  std::vector<int64_t> begin(static_cast<size_t>(batch) + 1, 0), where;
  const uint8_t* pad = src_key_padding.data<uint8_t>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < len; ++t)
      if (!pad[b * len + t]) where.push_back(b * len + t);
    begin[b + 1] = static_cast<int64_t>(where.size());
  }
  const int64_t total = static_cast<int64_t>(where.size());
  TensorMap out;
  for (int64_t l = 0; l < c.num_decoder_layers; ++l)  // zeros at padded positions (never read)
    for (const char* kv : {"memory_k.", "memory_v."})
      out[kv + std::to_string(l)] = Tensor(DType::f32, {batch, len, e});
  if (total == 0) return out;

  Tensor x(DType::f32, {1, total, e}, false);
  for (int64_t i = 0; i < total; ++i)
    std::memcpy(x.data<float>() + i * e, embedded.data<float>() + where[i] * e,
                sizeof(float) * static_cast<size_t>(e));
  TensorMap state = session(*enc_segments_[0]).run({{"x", x}}, ctx);
  state["x"] = x;
  for (size_t s = 1; s < enc_segments_.size(); ++s) {
    // Self-attention of each source over its own tokens, read in place from the fused projection.
    const Tensor attn = ragged_self_attention(state.at("qkv"), begin, c.nhead, c.head_dim());
    TensorMap next = session(*enc_segments_[s]).run({{"x", state.at("x")}, {"attn", attn}}, ctx);
    state = std::move(next);
  }
  // Cross-attention keys/values [1, total, 2E] back to the padded layout [B, S, E] each.
  for (int64_t l = 0; l < c.num_decoder_layers; ++l) {
    const float* kv = state.at("memory_kv." + std::to_string(l)).data<float>();
    float* k = out.at("memory_k." + std::to_string(l)).data<float>();
    float* v = out.at("memory_v." + std::to_string(l)).data<float>();
    for (int64_t i = 0; i < total; ++i) {
      std::memcpy(k + where[i] * e, kv + i * 2 * e, sizeof(float) * static_cast<size_t>(e));
      std::memcpy(v + where[i] * e, kv + i * 2 * e + e, sizeof(float) * static_cast<size_t>(e));
    }
  }
  return out;
}

Tensor TransformerModel::decode_step(const EncoderState& enc, const Tensor& tgt_ids, KVCache& cache,
                                     int64_t past_len, NodeObserver* observer) const {
  TensorMap in = enc.memory_kv;
  in["tgt_ids"] = tgt_ids;
  in["memory_key_padding_mask"] = enc.memory_key_padding;
  RunContext ctx{&cache, past_len, observer, {}};
  return session(*step_).run(in, ctx).at("logits");
}

std::vector<std::vector<int64_t>> TransformerModel::greedy(
    const std::vector<std::vector<int64_t>>& sources, int64_t max_new_tokens,
    NodeObserver* observer) const {
  const auto& c = cfg_;
  if (!encode_) throw Error("greedy decoding needs an encoder-decoder model with token embeddings");
  if (c.bos_id < 0 || c.bos_id >= c.tgt_vocab_size || c.eos_id < 0)
    throw Error("config.json needs bos_id and eos_id within the target vocabulary to generate");
  if (max_new_tokens < 1) throw Error("max new tokens must be at least 1");
  if (max_new_tokens > c.max_position)
    throw Error("cannot generate " + std::to_string(max_new_tokens) +
                " tokens: the model's max_position is " + std::to_string(c.max_position));
  const int64_t batch = static_cast<int64_t>(sources.size());
  std::vector<std::vector<int64_t>> result(sources.size());
  if (batch == 0) return result;
  int64_t s_len = 1;
  for (const auto& s : sources) s_len = std::max<int64_t>(s_len, static_cast<int64_t>(s.size()));
  if (s_len > c.max_position)
    throw Error("a source of " + std::to_string(s_len) + " tokens exceeds max_position " +
                std::to_string(c.max_position));

  Tensor src(DType::i64, {batch, s_len});
  Tensor padding(DType::u8, {batch, s_len});
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < s_len; ++t) {
      const bool real = t < static_cast<int64_t>(sources[b].size());
      const int64_t id = real ? sources[b][t] : c.pad_id;
      if (id < 0 || id >= c.src_vocab_size)
        throw Error("source " + std::to_string(b) + ": token id " + std::to_string(id) +
                    " is out of range for src_vocab_size " + std::to_string(c.src_vocab_size));
      src.data<int64_t>()[b * s_len + t] = id;
      padding.data<uint8_t>()[b * s_len + t] = real ? 0 : 1;
    }
    // An empty source would leave every key masked; let it attend to its (pad) first position.
    if (sources[b].empty()) padding.data<uint8_t>()[b * s_len] = 0;
  }
  const EncoderState enc = encode(src, padding, observer);

  KVCache cache;
  cache.reset(static_cast<int>(c.num_decoder_layers), batch, max_new_tokens, c.d_model);
  Tensor step_ids(DType::i64, {batch, 1});
  for (int64_t b = 0; b < batch; ++b) step_ids.data<int64_t>()[b] = c.bos_id;
  std::vector<bool> done(sources.size(), false);
  int64_t remaining = batch;
  for (int64_t step = 0; step < max_new_tokens && remaining > 0; ++step) {
    Tensor logits = decode_step(enc, step_ids, cache, step, observer);  // [B, 1, V]
    const int64_t vocab = logits.dim(2);
    for (int64_t b = 0; b < batch; ++b) {
      const float* row = logits.data<float>() + b * vocab;
      int64_t best = 0;
      for (int64_t i = 1; i < vocab; ++i)
        if (row[i] > row[best]) best = i;
      step_ids.data<int64_t>()[b] = best;
      if (done[b]) continue;
      if (best == c.eos_id) {
        done[b] = true;
        --remaining;
      } else {
        result[b].push_back(best);
      }
    }
  }
  return result;
}

}  // namespace tessera::models
