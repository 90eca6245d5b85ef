#include "models/workload.h"

#include "engine/io/limits.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "models/bert.h"
#include "models/gpt2.h"
#include "models/rnn_attention.h"
#include "models/transformer.h"

namespace tessera::models {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int64_t argmax(const float* row, int64_t n) {
  return std::max_element(row, row + n) - row;
}

// Set while Workload::random sizes its inputs without making them: the helpers below return
// tensors of the right dtype and shape with no storage, for the memory plan's check.
thread_local bool shapes_only = false;

Tensor random_f32(Shape shape, std::mt19937& rng) {
  if (shapes_only) return Tensor::view(DType::f32, std::move(shape), nullptr, nullptr);
  Tensor t(DType::f32, std::move(shape), false);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

Tensor random_ids(int64_t batch, int64_t len, int64_t vocab, std::mt19937& rng) {
  if (shapes_only) return Tensor::view(DType::i64, {batch, len}, nullptr, nullptr);
  Tensor t(DType::i64, {batch, len}, false);
  const int64_t lo = std::min<int64_t>(4, vocab - 1);
  std::uniform_int_distribution<int64_t> d(lo, vocab - 1);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = d(rng);
  return t;
}

Tensor filled_i64(int64_t batch, int64_t len, int64_t value) {
  if (shapes_only) return Tensor::view(DType::i64, {batch, len}, nullptr, nullptr);
  Tensor t(DType::i64, {batch, len}, false);
  std::fill(t.data<int64_t>(), t.data<int64_t>() + t.numel(), value);
  return t;
}

int64_t nodes(const Graph& g) {
  return static_cast<int64_t>(g.nodes().size());
}

std::string str(int64_t v) {
  return std::to_string(v);
}

}  // namespace

struct GreedyBuffers {
  RnnAttentionModel::Encoded rnn_encoded;
  RnnAttentionModel::DecoderState rnn_state;
  Tensor first_logits;  // [B, V]
};

FixedGreedy greedy_fixed_steps(const Model& model, const Tensor& ids, int64_t steps,
                               NodeObserver* observer, GreedyBuffers* reuse) {
  if (steps < 0) throw Error("the number of decode steps must not be negative");
  if (ids.dtype() != DType::i64 || ids.rank() != 2 || ids.dim(0) < 1 || ids.dim(1) < 1)
    throw Error("token ids must be I64 [B, S] with B, S >= 1, got " + hf::describe(ids));
  const int64_t batch = ids.dim(0), len = ids.dim(1);
  FixedGreedy r;
  r.tokens.assign(static_cast<size_t>(batch), {});
  for (auto& row : r.tokens) row.reserve(static_cast<size_t>(steps) + 1);
  const auto t0 = Clock::now();
  if (const TransformerModel* m = model.transformer()) {
    const auto& c = m->config();
    if (!c.embeddings || !c.has_encoder() || !c.has_decoder())
      throw Error("generation needs an encoder-decoder transformer with token embeddings");
    Tensor padding(DType::u8, {batch, len});  // no padding
    const auto enc = m->encode(ids, padding, observer);
    r.prefill_s = since(t0);
    KVCache cache;
    cache.reset(static_cast<int>(c.num_decoder_layers), batch, steps, c.d_model);
    const int64_t bos = c.bos_id >= 0 && c.bos_id < c.tgt_vocab_size ? c.bos_id : 1;
    Tensor next = filled_i64(batch, 1, bos);
    for (int64_t step = 0; step < steps; ++step) {
      Tensor logits = m->decode_step(enc, next, cache, step, observer);  // [B, 1, V]
      const int64_t vocab = logits.dim(2);
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t id = argmax(logits.data<float>() + b * vocab, vocab);
        next.data<int64_t>()[b] = id;
        r.tokens[b].push_back(id);
      }
      if (step == 0) r.first_logits = logits.reshaped({batch, vocab});
    }
  } else if (const Gpt2Model* m = model.gpt2()) {
    std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b)
      prompts[b].assign(ids.data<int64_t>() + b * len, ids.data<int64_t>() + (b + 1) * len);
    auto session = m->new_session(steps, observer);
    Tensor logits = session->start(prompts);  // [B, V]
    const int64_t vocab = logits.dim(1);
    std::vector<int64_t> next(static_cast<size_t>(batch));
    auto choose = [&] {
      for (int64_t b = 0; b < batch; ++b) {
        next[b] = argmax(logits.data<float>() + b * vocab, vocab);
        r.tokens[b].push_back(next[b]);
      }
    };
    choose();
    r.first_logits = logits;
    r.prefill_s = since(t0);
    for (int64_t step = 0; step < steps; ++step) {
      logits = session->step(next);
      choose();
    }
  } else if (const RnnAttentionModel* m = model.rnn_attention()) {
    // The prefill encodes the sources; each step (the first from bos) yields a token.
    const std::vector<int64_t> lengths(static_cast<size_t>(batch), len);
    GreedyBuffers local;
    GreedyBuffers& buf = reuse ? *reuse : local;
    RnnAttentionModel::Encoded& enc = buf.rnn_encoded;
    m->encode(ids.data<int64_t>(), lengths, batch, len, enc, observer);
    r.prefill_s = since(t0);
    RnnAttentionModel::DecoderState& st = buf.rnn_state;
    std::vector<int64_t> rows(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) rows[b] = b;
    m->start_decoder(enc, rows, st);
    std::vector<int64_t> next(static_cast<size_t>(batch), m->config().bos_id);
    const int64_t vocab = m->config().tgt_vocab_size;
    for (int64_t step = 0; step < steps; ++step) {
      m->decode_step(enc, st, next.data(), observer);
      for (int64_t b = 0; b < batch; ++b) {
        next[b] = argmax(st.logits.data<float>() + b * vocab, vocab);
        r.tokens[b].push_back(next[b]);
      }
      if (step == 0) {
        // From the kept buffers when given (a fresh [16, 8000] here is 128 page faults a run).
        Tensor& first = buf.first_logits;
        if (first.shape() != Shape{batch, vocab}) first = Tensor(DType::f32, {batch, vocab}, false);
        r.first_logits = first;
        std::copy(st.logits.data<float>(), st.logits.data<float>() + batch * vocab,
                  r.first_logits.data<float>());
      }
    }
  } else {
    throw Error(std::string("model_type '") + model.family() +
                "' cannot generate (generation needs gpt2, rnn_attention or an encoder-decoder "
                "transformer with token embeddings)");
  }
  r.total_s = since(t0);
  return r;
}

// The per-family parts of Workload::random (friend of Workload).
struct WorkloadBuilder {
  static void transformer(Workload& w, const TransformerModel& m, std::mt19937& rng) {
    const auto& c = m.config();
    const int64_t batch = w.batch_, seq = w.seq_, n = w.generate_;
    if (c.embeddings && seq > c.max_position)
      throw Error("--seq " + str(seq) + " exceeds the model's max_position " + str(c.max_position));
    if (n > 0) {
      if (!c.embeddings || !c.has_encoder() || !c.has_decoder())
        throw Error("--generate needs an encoder-decoder transformer with token embeddings");
      if (n > c.max_position)
        throw Error("--generate " + str(n) + " exceeds the model's max_position " +
                    str(c.max_position));
      w.ids_ = random_ids(batch, seq, c.src_vocab_size, rng);
      w.tokens_ = batch * n;
      w.prefill_name_ = "encode";
      w.graph_nodes_ = nodes(*m.encode_graph()) + n * nodes(*m.decode_step_graph());
      return;
    }
    const int64_t e = c.d_model;
    if (c.has_encoder())
      w.inputs_[c.embeddings ? "src_ids" : "src"] =
          c.embeddings ? random_ids(batch, seq, c.src_vocab_size, rng)
                       : random_f32({batch, seq, e}, rng);
    if (c.has_decoder()) {
      if (!c.has_encoder()) w.inputs_["memory"] = random_f32({batch, seq, e}, rng);
      w.inputs_[c.embeddings ? "tgt_ids" : "tgt"] =
          c.embeddings ? random_ids(batch, seq, c.tgt_vocab_size, rng)
                       : random_f32({batch, seq, e}, rng);
    }
    w.graph_nodes_ = nodes(m.forward_graph());
  }

  static void gpt2(Workload& w, const Gpt2Model& m, std::mt19937& rng) {
    const auto& c = m.config();
    const int64_t batch = w.batch_, seq = w.seq_, n = w.generate_;
    if (seq > c.n_positions)
      throw Error("--seq " + str(seq) + " exceeds the model's n_positions " + str(c.n_positions));
    if (n > 0 && seq + n > c.n_positions)
      throw Error("--seq " + str(seq) + " + --generate " + str(n) + " = " + str(seq + n) +
                  " positions exceed the model's n_positions " + str(c.n_positions));
    Tensor ids = random_ids(batch, seq, c.vocab_size, rng);
    if (n > 0) {
      w.ids_ = ids;
      w.tokens_ = batch * (n + 1);
      w.prefill_name_ = "prompt";
      // start() and every step() run the cached blocks, then the head.
      w.graph_nodes_ = (n + 1) * (nodes(m.cached_graph()) + nodes(m.head_graph()));
      return;
    }
    w.inputs_["input_ids"] = ids;
    w.graph_nodes_ = nodes(m.forward_graph());
  }

  static void rnn_attention(Workload& w, const RnnAttentionModel& m, std::mt19937& rng) {
    const auto& c = m.config();
    const int64_t batch = w.batch_, seq = w.seq_, n = w.generate_;
    Tensor ids = random_ids(batch, seq, c.src_vocab_size, rng);
    if (n > 0) {
      if (n > c.max_length)
        throw Error("--generate " + str(n) + " exceeds the model's max_length " +
                    str(c.max_length));
      w.ids_ = ids;
      w.tokens_ = batch * n;
      w.prefill_name_ = "encode";
      w.graph_nodes_ = m.operator_events(0, n);
      return;
    }
    w.inputs_["src_ids"] = ids;
    // No padding (random ids may equal pad_id: the mask says every token is real).
    if (shapes_only)
      w.inputs_["src_key_padding_mask"] = Tensor::view(DType::u8, {batch, seq}, nullptr, nullptr);
    else
      w.inputs_["src_key_padding_mask"] = Tensor(DType::u8, {batch, seq});
    w.inputs_["tgt_ids"] = random_ids(batch, seq, c.tgt_vocab_size, rng);
    w.graph_nodes_ = m.operator_events(seq, 0);
  }

  static void bert(Workload& w, const BertModel& m, std::mt19937& rng) {
    const auto& c = m.config();
    const int64_t batch = w.batch_, seq = w.seq_;
    if (w.generate_ > 0)
      throw Error(
          "--generate: model_type 'bert' is an encoder and cannot generate (generation needs "
          "gpt2 or an encoder-decoder transformer); measure bert without --generate");
    if (seq > c.max_position_embeddings)
      throw Error("--seq " + str(seq) + " exceeds the model's max_position_embeddings " +
                  str(c.max_position_embeddings));
    w.inputs_["input_ids"] = random_ids(batch, seq, c.vocab_size, rng);
    w.inputs_["attention_mask"] = filled_i64(batch, seq, 1);  // no padding: the batched graph
    w.inputs_["token_type_ids"] = filled_i64(batch, seq, 0);
    const Graph* pooler = m.pooler_graph();
    w.graph_nodes_ = nodes(m.forward_graph()) + (pooler ? nodes(*pooler) : 0);
  }
};

Workload Workload::random(const Model& model, int64_t batch, int64_t seq, int64_t generate) {
  if (batch < 1) throw Error("--batch must be at least 1");
  if (seq < 1) throw Error("--seq must be at least 1");
  if (generate < 0) throw Error("--generate must be at least 0");
  Workload w;
  w.model_ = &model;
  w.batch_ = batch;
  w.seq_ = seq;
  w.generate_ = generate;
  w.tokens_ = batch * seq;
  auto build = [&](Workload& into) {
    std::mt19937 rng(1234);
    if (const auto* m = model.transformer())
      WorkloadBuilder::transformer(into, *m, rng);
    else if (const auto* m = model.gpt2())
      WorkloadBuilder::gpt2(into, *m, rng);
    else if (const auto* m = model.bert())
      WorkloadBuilder::bert(into, *m, rng);
    else if (const auto* m = model.rnn_attention())
      WorkloadBuilder::rnn_attention(into, *m, rng);
    else
      throw Error(std::string("model_type '") + model.family() + "' has no workload");
  };
  // First the shapes alone: the inputs, the forward pass's activations (its memory plan) or the
  // generation's KV cache must fit in memory before anything of this size is allocated.
  {
    Workload dry = w;
    shapes_only = true;
    try {
      build(dry);
    } catch (...) {
      shapes_only = false;
      throw;
    }
    shapes_only = false;
    const std::string shape = "--batch " + str(batch) + " x --seq " + str(seq);
    uint64_t input_bytes = 0;
    for (const auto& [name, t] : dry.inputs_)
      input_bytes = checked_add(input_bytes, t.nbytes(), "the inputs of " + shape);
    if (dry.ids_.rank() > 0) input_bytes = checked_add(input_bytes, dry.ids_.nbytes(), shape);
    check_fits_memory(input_bytes, "the inputs of " + shape);
    if (generate > 0) {
      int64_t layers = 0, width = 0, positions = seq + generate;
      if (const auto* m = model.transformer()) {
        layers = m->config().num_decoder_layers;
        width = m->config().d_model;
        positions = generate;
      } else if (const auto* m = model.gpt2()) {
        layers = m->config().n_layer;
        width = m->config().n_embd;
      }
      const std::string what = "the KV cache of --batch " + str(batch) + " x " + str(positions) +
                               " positions (" + str(layers) + " layers x 2 x width " + str(width) +
                               " x 4 bytes)";
      uint64_t bytes = 2;
      for (int64_t f : {batch, positions, layers, width, int64_t{4}})
        bytes = checked_mul(bytes, static_cast<uint64_t>(f), what);
      check_fits_memory(bytes, what);
    } else {
      // Inputs the model makes itself (gpt2's and bert's position_ids): shapes alone too.
      const Graph& g = model.forward_graph();
      for (ValueId v : g.inputs()) {
        const Value& val = g.values()[v];
        if (!val.optional && !dry.inputs_.count(val.name))
          dry.inputs_[val.name] = Tensor::view(DType::i64, {batch, seq}, nullptr, nullptr);
      }
      try {
        model.forward_session().plan(dry.inputs_);  // throws when the activations do not fit
      } catch (const LimitError&) {
        throw;
      } catch (const Error&) {  // shapes the graph cannot take: the model's checks say why
      }
    }
  }
  build(w);
  return w;
}

Workload Workload::given(const Model& model, TensorMap inputs) {
  Workload w;
  w.model_ = &model;
  for (const char* name : {"input_ids", "src", "src_ids", "tgt", "tgt_ids"}) {
    auto it = inputs.find(name);
    if (it != inputs.end() && it->second.rank() >= 2) {
      w.batch_ = it->second.dim(0);
      w.seq_ = it->second.dim(1);
      break;
    }
  }
  w.tokens_ = w.batch_ * w.seq_;
  w.inputs_ = std::move(inputs);
  // The activations of these shapes must fit in memory (other problems: when first run).
  try {
    model.forward_session().plan(w.inputs_);
  } catch (const LimitError&) {
    throw;
  } catch (const Error&) {
  }
  return w;
}

Workload::Times Workload::run(NodeObserver* observer) const {
  Times t;
  if (generate_ == 0) {
    const auto t0 = Clock::now();
    TensorMap out = model_->run(inputs_, observer);
    t.total = since(t0);
    return t;
  }
  if (!buffers_) buffers_ = std::make_shared<GreedyBuffers>();
  const FixedGreedy g = greedy_fixed_steps(*model_, ids_, generate_, observer, buffers_.get());
  t.total = g.total_s;
  t.prefill = g.prefill_s;
  t.decode = g.total_s - g.prefill_s;
  return t;
}

}  // namespace tessera::models
