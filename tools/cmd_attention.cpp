// tessera attention: the attention weights of one head as a labelled heatmap PNG.
//
// The fused attention kernel never materializes the [T, S] weights, so they are computed here by
// an unfused path: a NodeObserver whose before() sees the chosen attention node's inputs (q_src,
// kv_src, masks) and evaluates softmax(scale · Q_h K_hᵀ + masks) in double precision, with the
// masks applied exactly as the kernel applies them (kernels/kernels.h).
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>

#include "engine/observe/heatmap.h"
#include "engine/observe/png.h"
#include "engine/io/safetensors.h"
#include "engine/text/tokenizer.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

// Captures the weights [T, S] of head `head`, batch row 0, of the attention node named `node`.
class AttentionCapture : public NodeObserver {
 public:
  AttentionCapture(std::string node, int64_t head) : node_(std::move(node)), head_(head) {}

  void before(const Graph&, const Node& n, const std::vector<Tensor>& env,
              const RunContext& ctx) override {
    if (n.op != Op::attention || n.name != node_) return;
    const auto& a = n.attrs;
    if (head_ < 0 || head_ >= a.heads)
      throw Error(n.name + ": head " + std::to_string(head_) + " is out of range (" +
                  std::to_string(a.heads) + " heads)");
    const Tensor& qs = env[n.inputs[0]];
    const Tensor& kvs = env[n.inputs[1]];
    if (qs.dtype() != DType::f32 || kvs.dtype() != DType::f32 || qs.rank() != 3 || kvs.rank() != 3)
      throw Error(n.name + ": expected F32 [B, T, C] queries and keys");
    const int64_t batch = qs.dim(0), t_len = qs.dim(1), new_len = kvs.dim(1);
    const int64_t cq = qs.dim(2), ckv = kvs.dim(2), d = a.head_dim;

    // Key rows: the cached ones (decode steps) followed by this call's new rows.
    std::vector<const float*> keys;
    int64_t causal_offset = 0;
    if (a.cache_slot >= 0) {
      const KVCache* cache = ctx.cache;
      if (!cache || a.cache_slot >= static_cast<int>(cache->k.size()))
        throw Error(n.name + ": no KV cache slot " + std::to_string(a.cache_slot));
      const float* kc = cache->k[a.cache_slot].data<float>();
      for (int64_t s = 0; s < ctx.past_len; ++s)
        keys.push_back(kc + s * cache->width + head_ * d);  // batch row 0
      causal_offset = ctx.past_len;
    }
    for (int64_t s = 0; s < new_len; ++s)
      keys.push_back(kvs.data<float>() + s * ckv + a.k_col + head_ * d);
    const int64_t s_len = static_cast<int64_t>(keys.size());

    const Tensor* mask = optional(n, 2, env);
    const Tensor* padding = optional(n, 3, env);
    int64_t m_sbh = 0;
    if (mask) {
      const Shape want2{t_len, s_len}, want3{batch * a.heads, t_len, s_len};
      if (mask->shape() != want2 && mask->shape() != want3)
        throw Error(n.name + ": attention mask has shape " + shape_str(mask->shape()));
      m_sbh = mask->rank() == 3 ? t_len * s_len : 0;
    }
    if (padding && padding->shape() != Shape{batch, s_len})
      throw Error(n.name + ": key padding mask has shape " + shape_str(padding->shape()));

    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const float* q0 = qs.data<float>() + a.q_col + head_ * d;
    const int64_t mask_base = head_ * m_sbh;  // batch 0, head h: (0 * H + h) * m_sbh
    weights_.assign(static_cast<size_t>(t_len * s_len), 0.0);
    std::vector<double> score(static_cast<size_t>(s_len));
    std::vector<bool> allowed(static_cast<size_t>(s_len));
    for (int64_t t = 0; t < t_len; ++t) {
      const float* q = q0 + t * cq;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < s_len; ++s) {
        bool ok = true;
        if (a.causal && s > t + causal_offset) ok = false;
        if (padding && is_true(*padding, s)) ok = false;
        double add = 0;
        if (mask) {
          const int64_t idx = mask_base + t * s_len + s;
          if (mask->dtype() == DType::f32)
            add = mask->data<float>()[idx];
          else if (is_true(*mask, idx))
            ok = false;
        }
        double dot = 0;
        for (int64_t i = 0; i < d; ++i)
          dot += static_cast<double>(q[i]) * static_cast<double>(keys[s][i]);
        score[s] = scale * dot + add;
        if (std::isinf(score[s]) && score[s] < 0) ok = false;
        allowed[s] = ok;
        if (ok) mx = std::max(mx, score[s]);
      }
      if (!(mx > -std::numeric_limits<double>::infinity())) continue;  // fully masked: zeros
      double sum = 0;
      for (int64_t s = 0; s < s_len; ++s)
        if (allowed[s]) sum += std::exp(score[s] - mx);
      for (int64_t s = 0; s < s_len; ++s)
        if (allowed[s]) weights_[t * s_len + s] = std::exp(score[s] - mx) / sum;
    }
    rows_ = t_len;
    cols_ = s_len;
    ++seen_;
  }
  void after(const Graph&, const Node&, const std::vector<Tensor>&, const RunContext&) override {}

  int seen() const { return seen_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const std::vector<double>& weights() const { return weights_; }

 private:
  static const Tensor* optional(const Node& n, size_t i, const std::vector<Tensor>& env) {
    if (i >= n.inputs.size() || n.inputs[i] == kNone) return nullptr;
    const Tensor& t = env[n.inputs[i]];
    return t.empty() ? nullptr : &t;
  }
  static bool is_true(const Tensor& m, int64_t i) {
    if (m.dtype() != DType::u8 && m.dtype() != DType::boolean)
      throw Error("masks must be BOOL or U8 (or F32 additive attention masks)");
    return m.data<uint8_t>()[i] != 0;
  }

  std::string node_;
  int64_t head_;
  std::vector<double> weights_;
  int64_t rows_ = 0, cols_ = 0;
  int seen_ = 0;
};

std::string token_label(const CharTokenizer& tok, const models::TransformerConfig& c, int64_t id) {
  if (id == c.eos_id) return "</s>";
  if (id == c.bos_id) return "<s>";
  if (id == c.pad_id) return "<pad>";
  return tok.decode({id});
}

}  // namespace

Action add_attention_command(CLI::App& app) {
  struct Options {
    std::string model, text, out, dump;
    int64_t layer = 0, head = 0, max_new_tokens = 0;
    bool tgt = false, cross = false;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "attention",
      "Attention weights of one head as a heatmap PNG (encoder self-attention, or "
      "the decoder's self-/cross-attention over the generated output)");
  cmd->add_option("--model", o->model, "Model directory with tokenizer.json")->required();
  cmd->add_option("--layer", o->layer, "Layer index (default 0)");
  cmd->add_option("--head", o->head, "Head index (default 0)");
  auto* tgt = cmd->add_flag("--tgt", o->tgt,
                            "Decoder self-attention over [bos + generated tokens] (causal)");
  auto* cross = cmd->add_flag("--cross", o->cross,
                              "Decoder cross-attention: generated tokens x source characters");
  tgt->excludes(cross);
  cross->excludes(tgt);
  cmd->add_option("--out", o->out, "PNG file (default attention-L<l>-H<h>[-tgt|-cross].png)");
  cmd->add_option("--dump", o->dump,
                  "Also write the weights as F32 [T, S] tensor 'weights' to this .safetensors");
  cmd->add_option(
      "--max-new-tokens", o->max_new_tokens,
      "Most tokens generated for --tgt/--cross (default: 64, at most max_position - 1)");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_option("text", o->text, "Input text")->required();
  return [o] {
    setup_threads(o->threads);
    ModelDir dir(o->model);
    auto model = load_model(dir);
    const CharTokenizer tok = load_text_tokenizer(o->model, *model, "attention");
    const auto& c = model->config();

    const bool decoder = o->tgt || o->cross;
    const int64_t layers = decoder ? c.num_decoder_layers : c.num_encoder_layers;
    const char* stack = decoder ? "decoder" : "encoder";
    if (o->layer < 0 || o->layer >= layers)
      throw Error("--layer " + std::to_string(o->layer) + " is out of range: the " + stack +
                  " has " + std::to_string(layers) + " layers (0.." + std::to_string(layers - 1) +
                  ")");
    if (o->head < 0 || o->head >= c.nhead)
      throw Error("--head " + std::to_string(o->head) + " is out of range: the model has " +
                  std::to_string(c.nhead) + " heads (0.." + std::to_string(c.nhead - 1) + ")");
    const std::string node = std::string(stack) + ".layers." + std::to_string(o->layer) +
                             (o->cross ? ".multihead_attn" : ".self_attn");

    std::vector<int64_t> src = tok.encode(o->text);
    src.push_back(c.eos_id);
    if (static_cast<int64_t>(src.size()) > c.max_position)
      throw Error("the input has " + std::to_string(src.size()) +
                  " tokens (with eos), more than max_position " + std::to_string(c.max_position));
    const int64_t s_len = static_cast<int64_t>(src.size());
    Tensor src_ids(DType::i64, {1, s_len});
    std::copy(src.begin(), src.end(), src_ids.data<int64_t>());
    std::vector<std::string> src_labels;
    for (int64_t id : src) src_labels.push_back(token_label(tok, c, id));

    AttentionCapture capture(node, o->head);
    std::vector<std::string> row_labels, col_labels;
    std::string subtitle;
    if (!decoder) {
      Tensor padding(DType::u8, {1, s_len});  // zero-filled: no padding
      model->encode(src_ids, padding, &capture);
      row_labels = col_labels = src_labels;
      subtitle = "rows: queries, columns: keys";
    } else {
      // The target run is bos + the generated tokens: at most max_position positions.
      int64_t max_new = o->max_new_tokens;
      if (max_new <= 0) max_new = std::min<int64_t>(64, c.max_position - 1);
      if (max_new > c.max_position - 1)
        throw Error("--max-new-tokens " + std::to_string(max_new) +
                    " is too many: bos + the generated tokens must fit max_position " +
                    std::to_string(c.max_position) + " (at most " +
                    std::to_string(c.max_position - 1) + ")");
      if (max_new < 1) throw Error("the model's max_position leaves no room to generate");
      const std::vector<int64_t> gen = model->greedy({src}, max_new).at(0);
      std::vector<int64_t> tgt_ids{c.bos_id};
      tgt_ids.insert(tgt_ids.end(), gen.begin(), gen.end());
      const int64_t t_len = static_cast<int64_t>(tgt_ids.size());
      if (t_len > c.max_position)
        throw Error("bos + " + std::to_string(gen.size()) +
                    " generated tokens exceed max_position " + std::to_string(c.max_position));
      Tensor tgt_t(DType::i64, {1, t_len});
      std::copy(tgt_ids.begin(), tgt_ids.end(), tgt_t.data<int64_t>());
      Tensor tgt_mask(DType::boolean, {t_len, t_len});
      for (int64_t i = 0; i < t_len; ++i)
        for (int64_t j = 0; j < t_len; ++j) tgt_mask.data<uint8_t>()[i * t_len + j] = j > i;
      model->run({{"src_ids", src_ids}, {"tgt_ids", tgt_t}, {"tgt_mask", tgt_mask}}, &capture);
      for (int64_t id : tgt_ids) row_labels.push_back(token_label(tok, c, id));
      col_labels = o->cross ? src_labels : row_labels;
      subtitle = "output \"" + tok.decode(gen) +
                 "\"; rows: target queries, columns: " + (o->cross ? "source keys" : "target keys");
    }
    if (capture.seen() != 1)
      throw Error("attention node '" + node + "' ran " + std::to_string(capture.seen()) +
                  " times (expected once)");
    if (capture.rows() != static_cast<int64_t>(row_labels.size()) ||
        capture.cols() != static_cast<int64_t>(col_labels.size()))
      throw Error("attention node '" + node + "' gave weights of an unexpected shape");

    png::Heatmap hm;
    hm.title = node + " head " + std::to_string(o->head);
    hm.subtitle = subtitle;
    hm.row_labels = row_labels;
    hm.col_labels = col_labels;
    hm.values = capture.weights();
    std::string out = o->out;
    if (out.empty())
      out = "attention-L" + std::to_string(o->layer) + "-H" + std::to_string(o->head) +
            (o->tgt     ? "-tgt"
             : o->cross ? "-cross"
                        : "") +
            ".png";
    if (!o->dump.empty()) {
      Tensor w(DType::f32, {capture.rows(), capture.cols()});
      for (size_t i = 0; i < capture.weights().size(); ++i)
        w.data<float>()[i] = static_cast<float>(capture.weights()[i]);
      write_safetensors(o->dump, {{"weights", w}});
      log_verbose("wrote " + o->dump);
    }
    png::write(out, png::render_heatmap(hm));
    log_verbose("wrote " + out);
    std::cout << out << '\n';
    return 0;
  };
}

}  // namespace tessera::cli
