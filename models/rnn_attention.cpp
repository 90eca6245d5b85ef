#include "models/rnn_attention.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>

#include "engine/io/limits.h"

namespace tessera::models {

namespace k = kernels;

namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

RnnAttentionConfig read_config(const ModelDir& dir) {
  const std::string path = dir.config_path();
  RnnAttentionConfig c;
  const std::string cell = dir.get_string("cell", "");
  if (cell == "gru")
    c.cell = k::RnnCell::gru;
  else if (cell == "lstm")
    c.cell = k::RnnCell::lstm;
  else
    throw Error("'" + path + "': cell '" + cell + "' is not supported (gru or lstm)");
  const std::string att = dir.get_string("attention", "");
  if (att != "additive" && att != "none")
    throw Error("'" + path + "': attention '" + att + "' is not supported (additive or none)");
  c.additive = att == "additive";
  c.embed_dim = dir.get_int("embed_dim");
  c.hidden_size = dir.get_int("hidden_size");
  c.num_encoder_layers = dir.get_int("num_encoder_layers");
  c.attention_dim = c.additive ? dir.get_int("attention_dim") : dir.get_int("attention_dim", 0);
  c.src_vocab_size = dir.get_int("src_vocab_size");
  c.tgt_vocab_size = dir.get_int("tgt_vocab_size");
  c.bos_id = dir.get_int("bos_id");
  c.eos_id = dir.get_int("eos_id");
  c.pad_id = dir.get_int("pad_id");
  c.max_length = dir.get_int("max_length");
  auto positive = [&](const char* key, int64_t v) {
    if (v < 1) throw Error("'" + path + "': " + key + " must be at least 1, got " + str(v));
  };
  positive("embed_dim", c.embed_dim);
  positive("hidden_size", c.hidden_size);
  positive("num_encoder_layers", c.num_encoder_layers);
  if (c.additive) positive("attention_dim", c.attention_dim);
  positive("src_vocab_size", c.src_vocab_size);
  positive("tgt_vocab_size", c.tgt_vocab_size);
  positive("max_length", c.max_length);
  auto in_vocab = [&](const char* key, int64_t v, int64_t vocab, const char* vocab_key) {
    if (v < 0 || v >= vocab)
      throw Error("'" + path + "': " + key + " " + str(v) + " is outside " + vocab_key + " " +
                  str(vocab));
  };
  in_vocab("bos_id", c.bos_id, c.tgt_vocab_size, "tgt_vocab_size");
  in_vocab("eos_id", c.eos_id, c.tgt_vocab_size, "tgt_vocab_size");
  in_vocab("pad_id", c.pad_id, c.src_vocab_size, "src_vocab_size");
  ParamCount p(path);
  const int64_t e = c.embed_dim, h = c.hidden_size, g = c.gates();
  p.add("src_vocab_size x embed_dim", {c.src_vocab_size, e});
  p.add("tgt_vocab_size x embed_dim", {c.tgt_vocab_size, e});
  p.add("2 x num_encoder_layers x gates x hidden_size x (2 x hidden_size + hidden_size + 2)",
        {2, c.num_encoder_layers, g, h, 3 * h + 2});
  p.add("2 x gates x hidden_size x embed_dim", {2, g, h, e});
  p.add("gates x hidden_size x (embed_dim + 3 x hidden_size + 2)", {g, h, e + 3 * h + 2});
  p.add("attention_dim x 3 x hidden_size", {c.attention_dim, 3 * h + 1});
  p.add("tgt_vocab_size x (3 x hidden_size + embed_dim + 1)", {c.tgt_vocab_size, 3 * h + e + 1});
  p.check_fits_memory();
  return c;
}

std::string summary(const RnnAttentionConfig& c) {
  std::ostringstream os;
  os << "cell=" << (c.lstm() ? "lstm" : "gru") << ", embed_dim=" << c.embed_dim
     << ", hidden_size=" << c.hidden_size << ", num_encoder_layers=" << c.num_encoder_layers
     << ", attention=" << (c.additive ? "additive" : "none");
  if (c.additive) os << ", attention_dim=" << c.attention_dim;
  os << ", src_vocab_size=" << c.src_vocab_size << ", tgt_vocab_size=" << c.tgt_vocab_size;
  return os.str();
}

// An owned f32 copy of a checkpoint tensor (biases, tables: read on every step).
Tensor owned(hf::CheckpointReader& r, const std::string& name, const Shape& shape) {
  Tensor t = r.get(name, shape);
  Tensor copy(DType::f32, t.shape(), false);
  std::memcpy(copy.raw(), t.raw(), t.nbytes());
  return copy;
}

}  // namespace

// One direction of an RNN: input projection (packed for the GEMM), recurrent weights (packed for
// the cell), biases.
// (Packed matrices live in the model's WeightSet, shared with the operators' graph: indices.)
struct RnnWeights {
  int w_ih = -1;      // [G*H, in], packed for the GEMM
  int w_hh = -1;      // packed for the cell (recurrent panels)
  Tensor b_ih, b_hh;  // [G*H]
};

struct RnnAttentionModel::Weights {
  Tensor src_embed, tgt_embed;     // [Vs, E], [Vt, E]
  std::vector<RnnWeights> enc;     // layer l: enc[2l] forward, enc[2l + 1] backward
  int bridge = -1, bridge_c = -1;  // [H, 2H]
  Tensor bridge_b, bridge_c_b;     // [H]
  int att_w = -1, att_u = -1;      // [A, H], [A, 2H]
  Tensor att_v;                    // [A]
  RnnWeights dec;                  // w_ih [G*H, E + 2H]
  int generator = -1;              // [Vt, E + 3H]: columns [embed | context | s]
  Tensor generator_b;              // [Vt]
};

// The profiler's view of the operators (nodes of graph_, never run by the executor).
struct RnnAttentionModel::Nodes {
  int src_embed = -1, bridge = -1, bridge_c = -1, keys = -1, tgt_embed = -1, query = -1,
      attention = -1, dec_proj = -1, dec_cell = -1, generator = -1;
  std::vector<int> enc_proj, enc_rnn;  // per layer and direction; per layer
};

namespace {

// Calls the observer around each operator with an environment of views (shapes for the cost).
class Probe {
 public:
  Probe(const Graph& g, NodeObserver* obs) : g_(g), obs_(obs) {
    if (obs_) env_.resize(g.values().size());
  }
  bool on() const { return obs_ != nullptr; }
  // fn runs the operator; ins/outs: the tensors (views) of the node's inputs and outputs.
  template <class Fn>
  void op(int node, std::initializer_list<Tensor> ins, std::initializer_list<Tensor> outs,
          const Fn& fn) {
    if (!obs_ || node < 0) {
      fn();
      return;
    }
    const Node& n = g_.nodes()[static_cast<size_t>(node)];
    size_t i = 0;
    for (const Tensor& t : ins)
      if (i < n.inputs.size()) env_[n.inputs[i++]] = t;
    i = 0;
    for (const Tensor& t : outs)
      if (i < n.outputs.size()) env_[n.outputs[i++]] = t;
    obs_->before(g_, n, env_, ctx_);
    fn();
    obs_->after(g_, n, env_, ctx_);
  }

 private:
  const Graph& g_;
  NodeObserver* obs_;
  std::vector<Tensor> env_;
  RunContext ctx_;
};

// The packed matrix of WeightSet entry i.
const k::PackedWeights& packed(const WeightSet& ws, int i) {
  return ws.at(i).packed;
}

Tensor view(const float* p, Shape s) {
  return Tensor::view(DType::f32, std::move(s), const_cast<float*>(p), nullptr);
}

}  // namespace

RnnAttentionModel::RnnAttentionModel(const ModelDir& dir, const LoadOptions& o)
    : cfg_(read_config(dir)),
      weights_(std::make_shared<WeightSet>()),
      w_(std::make_unique<Weights>()),
      nodes_(std::make_unique<Nodes>()) {
  const auto& c = cfg_;
  const int64_t e = c.embed_dim, h = c.hidden_size, g = c.gates(), a = c.attention_dim;
  hf::CheckpointReader r(dir, "", summary(c));
  Weights& w = *w_;
  weights_->gemm_type = resolve_weight_type(dir, o);
  w.src_embed = owned(r, "src_embed.weight", {c.src_vocab_size, e});
  w.tgt_embed = owned(r, "tgt_embed.weight", {c.tgt_vocab_size, e});
  // The GEMMs' matrices (input projections, bridge, attention, generator), packed as the
  // model's weight type from the data as stored (f32, or BF16 / I8); W_hh stays f32 (the cell).
  auto pack = [&](const std::string& name, const Shape& shape) {
    WeightSet::Entry e;
    e.name = name;
    StoredWeight sw = r.read(name, shape, weights_->gemm_type);
    e.tensor = std::move(sw.tensor);
    e.scale = std::move(sw.scale);
    return weights_->add_packed(name, pack_weight(e, weights_->gemm_type), {name});
  };
  auto rnn = [&](const std::string& prefix, const std::string& suffix, int64_t in) {
    RnnWeights rw;
    rw.w_ih = pack(prefix + "weight_ih_" + suffix, {g * h, in});
    const Tensor whh = r.get(prefix + "weight_hh_" + suffix, {g * h, h});
    rw.w_hh = weights_->add_packed(prefix + "weight_hh_" + suffix,
                                   k::pack_recurrent(whh.data<float>(), c.cell, h, h),
                                   {prefix + "weight_hh_" + suffix});
    rw.b_ih = owned(r, prefix + "bias_ih_" + suffix, {g * h});
    rw.b_hh = owned(r, prefix + "bias_hh_" + suffix, {g * h});
    return rw;
  };
  for (int64_t l = 0; l < c.num_encoder_layers; ++l) {
    const int64_t in = l == 0 ? e : 2 * h;
    // (Appended, not "l" + str(l): GCC 12 raises a false -Wrestrict on that, bug 105651.)
    const std::string layer = std::string("l").append(str(l));
    w.enc.push_back(rnn("encoder.", layer, in));
    w.enc.push_back(rnn("encoder.", layer + "_reverse", in));
  }
  w.bridge = pack("bridge.weight", {h, 2 * h});
  w.bridge_b = owned(r, "bridge.bias", {h});
  if (c.lstm()) {
    w.bridge_c = pack("bridge_c.weight", {h, 2 * h});
    w.bridge_c_b = owned(r, "bridge_c.bias", {h});
  }
  if (c.additive) {
    w.att_w = pack("attention.W.weight", {a, h});
    w.att_u = pack("attention.U.weight", {a, 2 * h});
    w.att_v = owned(r, "attention.v.weight", {1, a}).reshaped({a});
  }
  w.dec = rnn("decoder.", "l0", e + 2 * h);
  {
    // generator.weight's columns are [s (H) | context (2H) | embed (E)]; the decoder rows are
    // [embed | context | s]: permute the columns once.
    // (In the dtype it is held in: a permutation of each row's columns commutes with a
    // per-output-channel conversion.)
    const int64_t vt = c.tgt_vocab_size, width = c.row_width();
    StoredWeight gw = r.read("generator.weight", {vt, width}, weights_->gemm_type);
    const size_t es = dtype_size(gw.tensor.dtype());
    WeightSet::Entry perm;
    perm.name = "generator.weight";
    perm.tensor = Tensor(gw.tensor.dtype(), {vt, width}, false);
    perm.scale = std::move(gw.scale);
    for (int64_t v = 0; v < vt; ++v) {
      const char* src = static_cast<const char*>(gw.tensor.raw()) + v * width * es;
      char* dst = static_cast<char*>(perm.tensor.raw()) + v * width * es;
      std::memcpy(dst, src + 3 * h * es, es * e);
      std::memcpy(dst + e * es, src + h * es, es * 2 * h);
      std::memcpy(dst + (e + 2 * h) * es, src, es * h);
    }
    w.generator = weights_->add_packed("generator.weight", pack_weight(perm, weights_->gemm_type),
                                       {"generator.weight"});
    w.generator_b = owned(r, "generator.bias", {vt});
  }
  r.check_all_used(nullptr);

  // The forward graph: the run() inputs alone. The operators' graph: one node per operator, for
  // the profiler.
  graph_ = std::make_unique<Graph>(weights_);
  graph_->add_input("src_ids");
  graph_->add_input("tgt_ids");
  graph_->add_input("src_key_padding_mask", true);
  ops_ = std::make_unique<Graph>(weights_);
  Graph& gr = *ops_;
  const ValueId src = gr.add_input("src_ids");
  Nodes& nd = *nodes_;
  auto linear = [&](const std::string& name, int weight, bool bias) {
    NodeAttrs at;
    at.weight = weight;
    if (bias)
      at.bias =
          weights_->add(name + ".bias", Tensor(DType::f32, {weights_->at(weight).packed.n()}));
    const ValueId x = gr.add_value(name + ".in");
    gr.add_node(Op::linear, name, {x}, at);
    return static_cast<int>(gr.nodes().size()) - 1;
  };
  auto other = [&](Op op, const std::string& name, int w_hh, int64_t dirs, int inputs) {
    NodeAttrs at;
    at.weight = w_hh;
    at.heads = dirs;
    std::vector<ValueId> ins;
    for (int i = 0; i < inputs; ++i) ins.push_back(gr.add_value(name + ".in" + str(i)));
    gr.add_node(op, name, ins, at);
    return static_cast<int>(gr.nodes().size()) - 1;
  };
  {
    NodeAttrs at;
    gr.add_node(Op::gather, "src_embed", {src}, at);
    nd.src_embed = 0;
  }
  for (int64_t l = 0; l < c.num_encoder_layers; ++l) {
    nd.enc_proj.push_back(linear("encoder.l" + str(l) + ".input_proj", w.enc[2 * l].w_ih, true));
    nd.enc_proj.push_back(
        linear("encoder.l" + str(l) + "_reverse.input_proj", w.enc[2 * l + 1].w_ih, true));
    nd.enc_rnn.push_back(
        other(Op::rnn_cell, "encoder.l" + str(l) + ".recurrence", w.enc[2 * l].w_hh, 2, 2));
  }
  nd.bridge = linear("bridge", w.bridge, true);
  if (c.lstm()) nd.bridge_c = linear("bridge_c", w.bridge_c, true);
  if (c.additive) nd.keys = linear("attention.U", w.att_u, false);
  nd.tgt_embed = other(Op::gather, "tgt_embed", -1, 0, 1);
  if (c.additive) {
    nd.query = linear("attention.W", w.att_w, false);
    nd.attention = other(Op::additive_attention, "attention", -1, 0, 3);
  }
  nd.dec_proj = linear("decoder.input_proj", w.dec.w_ih, true);
  nd.dec_cell = other(Op::rnn_cell, "decoder.cell", w.dec.w_hh, 1, 2);
  nd.generator = linear("generator", w.generator, true);
}

RnnAttentionModel::~RnnAttentionModel() = default;

int64_t RnnAttentionModel::operator_events(int64_t t_len, int64_t steps) const {
  const auto& c = cfg_;
  const int64_t encode =
      1 + 3 * c.num_encoder_layers + 1 + (c.lstm() ? 1 : 0) + (c.additive ? 1 : 0);
  const int64_t per_step = 2 + (c.additive ? 2 : 0);        // (query, attention), projection, cell
  if (t_len > 0) return encode + 1 + t_len * per_step + 1;  // tgt_embed once, generator once
  return encode + steps * (per_step + 2);                   // tgt_embed and generator per step
}

GraphSession& RnnAttentionModel::forward_session() const {
  return SessionSet::current_or(sessions_).get(*graph_);
}

void RnnAttentionModel::pad_sources(const std::vector<std::vector<int64_t>>& sources, Tensor& ids,
                                    std::vector<int64_t>& lengths) const {
  if (sources.empty()) throw Error("no sources to encode");
  int64_t s_len = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (sources[i].empty()) throw Error("source " + str(static_cast<int64_t>(i)) + " is empty");
    for (int64_t id : sources[i])
      if (id < 0 || id >= cfg_.src_vocab_size)
        throw Error("source " + str(static_cast<int64_t>(i)) + ": token id " + str(id) +
                    " is out of range for src_vocab_size " + str(cfg_.src_vocab_size));
    s_len = std::max<int64_t>(s_len, static_cast<int64_t>(sources[i].size()));
  }
  const int64_t b = static_cast<int64_t>(sources.size());
  ids = Tensor(DType::i64, {b, s_len}, false);
  lengths.assign(sources.size(), 0);
  for (int64_t r = 0; r < b; ++r) {
    const auto& s = sources[r];
    lengths[r] = static_cast<int64_t>(s.size());
    for (int64_t t = 0; t < s_len; ++t)
      ids.data<int64_t>()[r * s_len + t] = t < lengths[r] ? s[t] : cfg_.pad_id;
  }
}

RnnAttentionModel::Encoded RnnAttentionModel::encode(const int64_t* ids,
                                                     const std::vector<int64_t>& lengths,
                                                     int64_t batch, int64_t s_len,
                                                     NodeObserver* observer) const {
  Encoded enc;
  encode(ids, lengths, batch, s_len, enc, observer);
  return enc;
}

namespace {

// `t` as an f32 tensor of shape `s`: kept when it has that shape, else a new one (not cleared).
void ensure_f32(Tensor& t, Shape s) {
  if (t.dtype() != DType::f32 || t.shape() != s) t = Tensor(DType::f32, std::move(s), false);
}

}  // namespace

void RnnAttentionModel::encode(const int64_t* ids, const std::vector<int64_t>& lengths,
                               int64_t batch, int64_t s_len, Encoded& enc,
                               NodeObserver* observer) const {
  const auto& c = cfg_;
  const Weights& w = *w_;
  const Nodes& nd = *nodes_;
  Probe probe(*ops_, observer);
  const int64_t e = c.embed_dim, h = c.hidden_size, gh = c.gates() * h, rows = batch * s_len;
  Encoded::Work& wk = enc.work;
  enc.batch = batch;
  enc.src_len = s_len;
  enc.lengths = lengths;
  ensure_f32(wk.x, {batch, s_len, e});
  Tensor& x = wk.x;  // [B, S, E] layer 0 input
  probe.op(nd.src_embed,
           {Tensor::view(DType::i64, {batch, s_len}, const_cast<int64_t*>(ids), nullptr)}, {x},
           [&] {
             k::embedding(rows, ids, w.src_embed.data<float>(), e, 1.0f, nullptr, nullptr,
                          x.data<float>(), e);
           });
  ensure_f32(wk.xf, {batch, s_len, gh});
  ensure_f32(wk.xb, {batch, s_len, gh});
  Tensor &xf = wk.xf, &xb = wk.xb;
  if (c.lstm()) {
    ensure_f32(wk.cf, {batch, h});
    ensure_f32(wk.cb, {batch, h});
  }
  Tensor &cf = wk.cf, &cb = wk.cb;
  const int64_t ws = k::rnn_layer_workspace(batch, h);
  ensure_f32(wk.directions, {2, ws});
  Tensor& work = wk.directions;
  Tensor layer_in = x;
  for (int64_t l = 0; l < c.num_encoder_layers; ++l) {
    const RnnWeights& f = w.enc[2 * l];
    const RnnWeights& b = w.enc[2 * l + 1];
    const int64_t in = layer_in.dim(2);
    // The input projections of every position: one GEMM per direction.
    probe.op(nd.enc_proj[2 * l], {layer_in}, {xf}, [&] {
      k::gemm(rows, layer_in.data<float>(), in, packed(*weights_, f.w_ih), xf.data<float>(), gh,
              {.bias = f.b_ih.data<float>()});
    });
    probe.op(nd.enc_proj[2 * l + 1], {layer_in}, {xb}, [&] {
      k::gemm(rows, layer_in.data<float>(), in, packed(*weights_, b.w_ih), xb.data<float>(), gh,
              {.bias = b.b_ih.data<float>()});
    });
    // The last layer writes the memory; the ones below alternate between two buffers.
    Tensor& out_t = l + 1 == c.num_encoder_layers ? enc.memory : wk.hidden[l % 2];
    ensure_f32(out_t, {batch, s_len, 2 * h});
    Tensor out = out_t;  // [B, S, 2H], zero at padding (the recurrence writes real steps only)
    for (int64_t r = 0; r < batch; ++r)
      std::fill(out.data<float>() + (r * s_len + lengths[r]) * 2 * h,
                out.data<float>() + (r + 1) * s_len * 2 * h, 0.0f);
    k::RnnDirectionArgs da{.w_hh = &packed(*weights_, f.w_hh),
                           .b_hh = f.b_hh.data<float>(),
                           .x = xf.data<float>(),
                           .out = out.data<float>(),
                           .ld_out = 2 * h,
                           .c_state = c.lstm() ? cf.data<float>() : nullptr,
                           .workspace = work.data<float>()};
    k::RnnDirectionArgs db{.w_hh = &packed(*weights_, b.w_hh),
                           .b_hh = b.b_hh.data<float>(),
                           .x = xb.data<float>(),
                           .out = out.data<float>() + h,
                           .ld_out = 2 * h,
                           .c_state = c.lstm() ? cb.data<float>() : nullptr,
                           .workspace = work.data<float>() + ws};
    probe.op(nd.enc_rnn[l], {xf, xb}, {out},
             [&] { k::rnn_bidirectional(c.cell, batch, s_len, h, lengths.data(), da, db); });
    layer_in = out;
  }
  const float* mem = enc.memory.data<float>();
  ensure_f32(enc.final, {batch, 2 * h});
  if (c.lstm()) ensure_f32(wk.cfinal, {batch, 2 * h});
  Tensor& cfinal = wk.cfinal;
  for (int64_t r = 0; r < batch; ++r) {
    float* fin = enc.final.data<float>() + r * 2 * h;
    std::memcpy(fin, mem + (r * s_len + lengths[r] - 1) * 2 * h, sizeof(float) * h);
    std::memcpy(fin + h, mem + r * s_len * 2 * h + h, sizeof(float) * h);
    if (c.lstm()) {
      std::memcpy(cfinal.data<float>() + r * 2 * h, cf.data<float>() + r * h, sizeof(float) * h);
      std::memcpy(cfinal.data<float>() + r * 2 * h + h, cb.data<float>() + r * h,
                  sizeof(float) * h);
    }
  }
  ensure_f32(enc.s0, {batch, h});
  probe.op(nd.bridge, {enc.final}, {enc.s0}, [&] {
    k::gemm(batch, enc.final.data<float>(), 2 * h, packed(*weights_, w.bridge),
            enc.s0.data<float>(), h, {.bias = w.bridge_b.data<float>()});
    k::vector_math(k::MathFunction::tanh, batch * h, enc.s0.data<float>(), enc.s0.data<float>());
  });
  if (c.lstm()) {
    ensure_f32(enc.c0, {batch, h});
    probe.op(nd.bridge_c, {cfinal}, {enc.c0}, [&] {
      k::gemm(batch, cfinal.data<float>(), 2 * h, packed(*weights_, w.bridge_c),
              enc.c0.data<float>(), h, {.bias = w.bridge_c_b.data<float>()});
      k::vector_math(k::MathFunction::tanh, batch * h, enc.c0.data<float>(), enc.c0.data<float>());
    });
  }
  if (c.additive) {
    const int64_t a = c.attention_dim;
    ensure_f32(enc.keys, {batch, s_len, a});
    probe.op(nd.keys, {enc.memory}, {enc.keys}, [&] {
      k::gemm(rows, mem, 2 * h, packed(*weights_, w.att_u), enc.keys.data<float>(), a);
    });
  }
}

void RnnAttentionModel::start_decoder(const Encoded& enc, const std::vector<int64_t>& src_rows,
                                      DecoderState& st) const {
  const auto& c = cfg_;
  const int64_t h = c.hidden_size, rw = c.row_width(), n = static_cast<int64_t>(src_rows.size());
  auto ensure = [](Tensor& t, Shape s) {
    if (t.shape() != s) t = Tensor(DType::f32, std::move(s), false);
  };
  ensure(st.io[0], {n, rw});
  ensure(st.io[1], {n, rw});
  ensure(st.gates, {n, c.gates() * h});
  if (c.additive) ensure(st.query, {n, c.attention_dim});
  ensure(st.logits, {n, c.tgt_vocab_size});
  ensure(st.alpha, {n, enc.src_len});
  if (c.lstm()) ensure(st.c, {n, h});
  st.ptrs.assign(static_cast<size_t>(5 * n), nullptr);
  st.rows = n;
  st.src_rows = src_rows;
  st.cur = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t s = src_rows[r];
    std::memcpy(st.io[0].data<float>() + r * rw + c.embed_dim + 2 * h, enc.s0.data<float>() + s * h,
                sizeof(float) * h);
    if (c.lstm())
      std::memcpy(st.c.data<float>() + r * h, enc.c0.data<float>() + s * h, sizeof(float) * h);
  }
  std::fill(st.alpha.data<float>(), st.alpha.data<float>() + st.alpha.numel(), 0.0f);
}

void RnnAttentionModel::decode_step(const Encoded& enc, DecoderState& st, const int64_t* tokens,
                                    NodeObserver* observer) const {
  const auto& c = cfg_;
  const Weights& w = *w_;
  const Nodes& nd = *nodes_;
  Probe probe(*ops_, observer);
  const int64_t e = c.embed_dim, h = c.hidden_size, gh = c.gates() * h, rw = c.row_width();
  const int64_t n = st.rows;
  float* prev = st.io[st.cur].data<float>();  // rows [embed | context | s_{i-1}]
  float* next = st.io[1 - st.cur].data<float>();
  probe.op(nd.tgt_embed, {Tensor::view(DType::i64, {n, 1}, const_cast<int64_t*>(tokens), nullptr)},
           {view(next, {n, 1, e})}, [&] {
             k::embedding(n, tokens, w.tgt_embed.data<float>(), e, 1.0f, nullptr, nullptr, next,
                          rw);
           });
  if (c.additive) {
    const int64_t a = c.attention_dim;
    probe.op(nd.query, {view(prev + e + 2 * h, {n, h})}, {st.query}, [&] {
      k::gemm(n, prev + e + 2 * h, rw, packed(*weights_, w.att_w), st.query.data<float>(), a);
    });
    k::AdditiveAttentionArgs aa{.rows = n,
                                .src_len = enc.src_len,
                                .attention_dim = a,
                                .memory_dim = 2 * h,
                                .query = st.query.data<float>(),
                                .ldq = a,
                                .keys = enc.keys.data<float>(),
                                .memory = enc.memory.data<float>(),
                                .v = w.att_v.data<float>(),
                                .lengths = enc.lengths.data(),
                                .src_rows = st.src_rows.data(),
                                .alpha = st.alpha.data<float>(),
                                .ld_alpha = enc.src_len,
                                .context = next + e,
                                .ldc = rw};
    probe.op(nd.attention, {st.query, enc.keys, enc.memory}, {st.alpha},
             [&] { k::additive_attention(aa); });
  } else {
    for (int64_t r = 0; r < n; ++r)
      std::memcpy(next + r * rw + e, enc.final.data<float>() + st.src_rows[r] * 2 * h,
                  sizeof(float) * 2 * h);
  }
  probe.op(nd.dec_proj, {view(next, {n, e + 2 * h})}, {st.gates}, [&] {
    k::gemm(n, next, rw, packed(*weights_, w.dec.w_ih), st.gates.data<float>(), gh,
            {.bias = w.dec.b_ih.data<float>()});
  });
  const float** xs = st.ptrs.data();
  const float** hs = xs + n;
  float** hos = const_cast<float**>(hs + n);
  const float** cs = const_cast<const float**>(hos + n);
  float** cos = const_cast<float**>(cs + n);
  for (int64_t r = 0; r < n; ++r) {
    xs[r] = st.gates.data<float>() + r * gh;
    hs[r] = prev + r * rw + e + 2 * h;
    hos[r] = next + r * rw + e + 2 * h;
    if (c.lstm()) cs[r] = cos[r] = st.c.data<float>() + r * h;
  }
  k::RnnCellArgs ca{.cell = c.cell,
                    .rows = n,
                    .hidden = h,
                    .x = xs,
                    .h = hs,
                    .h_out = hos,
                    .c = c.lstm() ? cs : nullptr,
                    .c_out = c.lstm() ? cos : nullptr,
                    .b_hh = w.dec.b_hh.data<float>()};
  probe.op(nd.dec_cell, {st.gates, view(prev, {n, rw})}, {view(next, {n, rw})},
           [&] { k::rnn_cell(packed(*weights_, w.dec.w_hh), ca); });
  probe.op(nd.generator, {view(next, {n, rw})}, {st.logits}, [&] {
    k::gemm(n, next, rw, packed(*weights_, w.generator), st.logits.data<float>(), c.tgt_vocab_size,
            {.bias = w.generator_b.data<float>()});
  });
  st.cur = 1 - st.cur;
}

void RnnAttentionModel::select_rows(DecoderState& st, const std::vector<int64_t>& rows) const {
  const auto& c = cfg_;
  const int64_t h = c.hidden_size, rw = c.row_width(), n = static_cast<int64_t>(rows.size());
  for (int64_t r : rows)
    if (r < 0 || r >= st.rows)
      throw Error("select_rows: row " + str(r) + " is out of range for a batch of " + str(st.rows));
  Tensor io(DType::f32, {n, rw}, false);
  Tensor cc;
  if (c.lstm()) cc = Tensor(DType::f32, {n, h}, false);
  std::vector<int64_t> src(rows.size());
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(io.data<float>() + i * rw, st.io[st.cur].data<float>() + rows[i] * rw,
                sizeof(float) * rw);
    if (c.lstm())
      std::memcpy(cc.data<float>() + i * h, st.c.data<float>() + rows[i] * h, sizeof(float) * h);
    src[i] = st.src_rows[rows[i]];
  }
  if (n != st.rows) {
    st.io[1 - st.cur] = Tensor(DType::f32, {n, rw}, false);
    st.gates = Tensor(DType::f32, {n, c.gates() * h}, false);
    if (c.additive) st.query = Tensor(DType::f32, {n, c.attention_dim}, false);
    st.logits = Tensor(DType::f32, {n, c.tgt_vocab_size}, false);
    st.alpha = Tensor(DType::f32, {n, st.alpha.dim(1)});
    st.ptrs.assign(static_cast<size_t>(5 * n), nullptr);
  }
  st.io[st.cur] = io;
  if (c.lstm()) st.c = cc;
  st.src_rows = std::move(src);
  st.rows = n;
}

TensorMap RnnAttentionModel::run(const TensorMap& in, NodeObserver* observer) const {
  const auto& c = cfg_;
  hf::check_names(in, {"src_ids", "tgt_ids", "src_key_padding_mask"}, {"src_ids", "tgt_ids"});
  const Tensor& src = in.at("src_ids");
  hf::check_ids(src, "src_ids", -1, c.src_vocab_size, "src_vocab_size");
  const int64_t batch = src.dim(0), s_len = src.dim(1);
  const Tensor& tgt = in.at("tgt_ids");
  hf::check_ids(tgt, "tgt_ids", batch, c.tgt_vocab_size, "tgt_vocab_size");
  const int64_t t_len = tgt.dim(1);
  if (batch < 1 || s_len < 1 || t_len < 1)
    throw Error("inputs 'src_ids' " + hf::describe(src) + " and 'tgt_ids' " + hf::describe(tgt) +
                " must have at least one row and one token");
  // Padding: the mask (1 = padding) or src_ids == pad_id; right padding only.
  std::vector<uint8_t> pad(static_cast<size_t>(batch * s_len));
  auto mask_it = in.find("src_key_padding_mask");
  if (mask_it != in.end()) {
    const Tensor& m = mask_it->second;
    const DType dt = m.dtype();
    if ((dt != DType::boolean && dt != DType::u8 && dt != DType::i64 && dt != DType::i32) ||
        m.shape() != Shape{batch, s_len})
      throw Error("input 'src_key_padding_mask' must be BOOL, U8, I32 or I64 " +
                  shape_str({batch, s_len}) + " (1 = padding), got " + hf::describe(m));
    for (int64_t i = 0; i < batch * s_len; ++i) {
      int64_t v = dt == DType::i64   ? m.data<int64_t>()[i]
                  : dt == DType::i32 ? m.data<int32_t>()[i]
                                     : m.data<uint8_t>()[i];
      if (v != 0 && v != 1)
        throw Error("input 'src_key_padding_mask': value " + str(v) + " at [" + str(i / s_len) +
                    ", " + str(i % s_len) + "] is neither 0 (token) nor 1 (padding)");
      pad[i] = static_cast<uint8_t>(v);
    }
  } else {
    for (int64_t i = 0; i < batch * s_len; ++i) pad[i] = src.data<int64_t>()[i] == c.pad_id ? 1 : 0;
  }
  std::vector<int64_t> lengths(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    int64_t len = 0;
    while (len < s_len && !pad[b * s_len + len]) ++len;
    for (int64_t t = len; t < s_len; ++t)
      if (!pad[b * s_len + t])
        throw Error("src row " + str(b) + " is not right-padded: token at position " + str(t) +
                    " after padding at " + str(len) +
                    " (sources are right-padded, as pack_padded_sequence takes them)");
    if (len == 0)
      throw Error("src row " + str(b) + " has no real token (every source needs at least one)");
    lengths[b] = len;
  }
  const Encoded enc = encode(src.data<int64_t>(), lengths, batch, s_len, observer);

  // Teacher-forced decoder: rows [embed | context | s] of every step in one buffer [B, T, E+3H];
  // the generator then runs once over all of them.
  const Weights& w = *w_;
  const Nodes& nd = *nodes_;
  Probe probe(*ops_, observer);
  const int64_t e = c.embed_dim, h = c.hidden_size, gh = c.gates() * h, rw = c.row_width();
  Tensor rows(DType::f32, {batch, t_len, rw}, false);
  Tensor logits(DType::f32, {batch, t_len, c.tgt_vocab_size}, false);
  Tensor attention(DType::f32, {batch, t_len, s_len});
  float* buf = rows.data<float>();
  probe.op(nd.tgt_embed, {tgt}, {view(buf, {batch, t_len, e})}, [&] {
    k::embedding(batch * t_len, tgt.data<int64_t>(), w.tgt_embed.data<float>(), e, 1.0f, nullptr,
                 nullptr, buf, rw);
  });
  Tensor gates(DType::f32, {batch, gh}, false), query, cstate;
  if (c.additive) query = Tensor(DType::f32, {batch, c.attention_dim}, false);
  if (c.lstm()) {
    cstate = Tensor(DType::f32, {batch, h}, false);
    std::memcpy(cstate.data<float>(), enc.c0.data<float>(), cstate.nbytes());
  }
  std::vector<const float*> ptrs(static_cast<size_t>(5 * batch));
  const float** xs = ptrs.data();
  const float** hs = xs + batch;
  float** hos = const_cast<float**>(hs + batch);
  const float** cs = const_cast<const float**>(hos + batch);
  float** cos = const_cast<float**>(cs + batch);
  const int64_t ld = t_len * rw;  // between batch rows of one step
  for (int64_t t = 0; t < t_len; ++t) {
    float* cur = buf + t * rw;
    const float* s_prev = t == 0 ? enc.s0.data<float>() : cur - rw + e + 2 * h;
    const int64_t ld_prev = t == 0 ? h : ld;
    if (c.additive) {
      const int64_t a = c.attention_dim;
      probe.op(nd.query, {view(s_prev, {batch, h})}, {query}, [&] {
        k::gemm(batch, s_prev, ld_prev, packed(*weights_, w.att_w), query.data<float>(), a);
      });
      k::AdditiveAttentionArgs aa{.rows = batch,
                                  .src_len = s_len,
                                  .attention_dim = a,
                                  .memory_dim = 2 * h,
                                  .query = query.data<float>(),
                                  .ldq = a,
                                  .keys = enc.keys.data<float>(),
                                  .memory = enc.memory.data<float>(),
                                  .v = w.att_v.data<float>(),
                                  .lengths = enc.lengths.data(),
                                  .src_rows = nullptr,
                                  .alpha = attention.data<float>() + t * s_len,
                                  .ld_alpha = t_len * s_len,
                                  .context = cur + e,
                                  .ldc = ld};
      probe.op(nd.attention, {query, enc.keys, enc.memory}, {view(aa.alpha, {batch, s_len})},
               [&] { k::additive_attention(aa); });
    } else {
      for (int64_t b = 0; b < batch; ++b)
        std::memcpy(cur + b * ld + e, enc.final.data<float>() + b * 2 * h, sizeof(float) * 2 * h);
    }
    probe.op(nd.dec_proj, {view(cur, {batch, e + 2 * h})}, {gates}, [&] {
      k::gemm(batch, cur, ld, packed(*weights_, w.dec.w_ih), gates.data<float>(), gh,
              {.bias = w.dec.b_ih.data<float>()});
    });
    for (int64_t b = 0; b < batch; ++b) {
      xs[b] = gates.data<float>() + b * gh;
      hs[b] = s_prev + b * ld_prev;
      hos[b] = cur + b * ld + e + 2 * h;
      if (c.lstm()) cs[b] = cos[b] = cstate.data<float>() + b * h;
    }
    k::RnnCellArgs ca{.cell = c.cell,
                      .rows = batch,
                      .hidden = h,
                      .x = xs,
                      .h = hs,
                      .h_out = hos,
                      .c = c.lstm() ? cs : nullptr,
                      .c_out = c.lstm() ? cos : nullptr,
                      .b_hh = w.dec.b_hh.data<float>()};
    probe.op(nd.dec_cell, {gates, view(s_prev, {batch, h})}, {view(cur, {batch, rw})},
             [&] { k::rnn_cell(packed(*weights_, w.dec.w_hh), ca); });
  }
  probe.op(nd.generator, {rows}, {logits}, [&] {
    k::gemm(batch * t_len, buf, rw, packed(*weights_, w.generator), logits.data<float>(),
            c.tgt_vocab_size, {.bias = w.generator_b.data<float>()});
  });
  return {{"logits", logits}, {"attention", attention}};
}

// ---------------------------------------------------------------------------------------------
// RnnAttentionLM
// ---------------------------------------------------------------------------------------------
RnnAttentionLM::RnnAttentionLM(const RnnAttentionModel& model, NodeObserver* observer)
    : model_(model), observer_(observer) {}

Tensor RnnAttentionLM::start(const std::vector<std::vector<int64_t>>& prompts) {
  Tensor ids;
  std::vector<int64_t> lengths;
  model_.pad_sources(prompts, ids, lengths);
  const int64_t b = ids.dim(0);
  model_.encode(ids.data<int64_t>(), lengths, b, ids.dim(1), enc_, observer_);
  std::vector<int64_t> rows(static_cast<size_t>(b));
  std::iota(rows.begin(), rows.end(), int64_t{0});
  model_.start_decoder(enc_, rows, st_);
  steps_ = 0;
  return step(std::vector<int64_t>(static_cast<size_t>(b), model_.config().bos_id));
}

Tensor RnnAttentionLM::step(const std::vector<int64_t>& tokens) {
  const auto& c = model_.config();
  if (st_.rows == 0) throw Error("step: start() was not called");
  if (static_cast<int64_t>(tokens.size()) != st_.rows)
    throw Error("step: " + str(static_cast<int64_t>(tokens.size())) + " tokens for a batch of " +
                str(st_.rows) + " rows");
  for (size_t r = 0; r < tokens.size(); ++r)
    if (tokens[r] < 0 || tokens[r] >= c.tgt_vocab_size)
      throw Error("step: token id " + str(tokens[r]) + " of row " + str(static_cast<int64_t>(r)) +
                  " is out of range for tgt_vocab_size " + str(c.tgt_vocab_size));
  model_.decode_step(enc_, st_, tokens.data(), observer_);
  ++steps_;
  return st_.logits;
}

void RnnAttentionLM::select_rows(const std::vector<int64_t>& rows) {
  if (st_.rows == 0) throw Error("select_rows: start() was not called");
  if (rows.empty()) throw Error("select_rows: no rows");
  model_.select_rows(st_, rows);
}

}  // namespace tessera::models
