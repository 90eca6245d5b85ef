// tessera attention: the attention weights of one head as a labelled heatmap PNG, for every family:
// a transformer's encoder self-attention or its decoder's self-/cross-attention over the greedy
// output, a gpt2 block's causal self-attention (over the prompt, or the prompt and its greedy
// continuation), a bert layer's self-attention. Input: text through the model directory's
// tokenizer, or token ids (--ids).
//
// The fused attention kernel never materializes the [T, S] weights, so they are computed here by
// an unfused path: a NodeObserver whose before() sees the chosen attention node's inputs (q_src,
// kv_src, masks) and evaluates softmax(scale · Q_h K_hᵀ + masks) in double precision, with the
// masks applied exactly as the kernel applies them (kernels/kernels.h).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>

#include "engine/io/safetensors.h"
#include "engine/observe/heatmap.h"
#include "engine/observe/png.h"
#include "engine/text/tokenizer.h"
#include "engine/text/tokenizers.h"
#include "models/bert.h"
#include "models/gpt2.h"
#include "models/rnn_attention.h"
#include "tools/cli.h"

namespace tessera::cli {

namespace {

// Captures the weights [T, S] of head `head`, batch row 0, of the attention node named `node`.
class AttentionCapture : public NodeObserver {
 public:
  AttentionCapture(std::string node, int64_t head) : node_(std::move(node)), head_(head) {}

  void before(const Graph&, const Node& n, const std::vector<Tensor>& env,
              const RunContext& ctx) override {
    // The fused node, or (graph passes off) the scores node of the unfused chain: same inputs.
    const bool fused = n.op == Op::attention && n.name == node_;
    const bool unfused = n.op == Op::attention_scores && n.name == node_ + ".scores";
    if (!fused && !unfused) return;
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

struct Options {
  std::string model, text, out, dump;
  int64_t layer = 0, head = 0, max_new_tokens = 0;
  bool tgt = false, cross = false, ids = false;
  int threads = 0;
};

// What one family's map shows: the attention node (its layer and head checked), the labels of
// its rows (queries) and columns (keys), a subtitle; `capture` has watched the run.
struct Map {
  std::string node;
  std::vector<std::string> row_labels, col_labels;
  std::string subtitle;
  std::optional<AttentionCapture> capture;
  std::vector<double> values;  // [rows, cols] when the family gives its weights itself (no capture)
};

void check_layer_head(const Options& o, int64_t layers, int64_t heads, const std::string& stack) {
  if (o.layer < 0 || o.layer >= layers)
    throw Error("--layer " + std::to_string(o.layer) + " is out of range: the " + stack + " has " +
                std::to_string(layers) + " layers (0.." + std::to_string(layers - 1) + ")");
  if (o.head < 0 || o.head >= heads)
    throw Error("--head " + std::to_string(o.head) + " is out of range: the model has " +
                std::to_string(heads) + " heads (0.." + std::to_string(heads - 1) + ")");
}

// --ids: the text argument as space-separated token ids, each in [0, vocab), at least one.
std::vector<int64_t> ids_argument(const std::string& text, int64_t vocab) {
  std::vector<int64_t> ids = parse_token_ids(text, "--ids", vocab);
  if (ids.empty()) throw Error("--ids: the input has no token ids");
  return ids;
}

Tensor ids_tensor(const std::vector<int64_t>& ids) {
  Tensor t(DType::i64, {1, static_cast<int64_t>(ids.size())});
  std::copy(ids.begin(), ids.end(), t.data<int64_t>());
  return t;
}

// A row/column label: the vocabulary string for WordPiece and special tokens ("##ing", "[CLS]"),
// the decoded text for byte-level BPE (" world"), the id without a tokenizer.
std::string hf_label(const TextTokenizer* tok, int64_t id) {
  if (tok == nullptr || id >= tok->vocab_size()) return std::to_string(id);
  if (std::string(tok->kind()) == "wordpiece" || tok->is_special(id)) return tok->token(id);
  return tok->decode({id});
}

std::string char_label(const CharTokenizer* tok, const models::TransformerConfig& c, int64_t id) {
  if (id == c.eos_id) return "</s>";
  if (id == c.bos_id) return "<s>";
  if (id == c.pad_id) return "<pad>";
  if (tok == nullptr || id >= tok->vocab_size()) return std::to_string(id);
  return tok->decode({id});
}

// transformer: encoder self-attention over the source, or (--tgt/--cross) the decoder's self- or
// cross-attention over bos + the greedy output. Text is read with the model's tokenizer.json
// (eos appended); --ids are the source as given.
Map transformer_map(const Options& o, const models::TransformerModel& model) {
  const auto& c = model.config();
  std::unique_ptr<CharTokenizer> tok;
  if (!o.ids || std::filesystem::exists(o.model + "/tokenizer.json"))
    tok = std::make_unique<CharTokenizer>(load_text_tokenizer(o.model, model, "attention"));
  else if (!c.embeddings || !c.has_encoder())
    throw Error("attention needs a transformer with token embeddings and an encoder");
  const bool decoder = o.tgt || o.cross;
  const char* stack = decoder ? "decoder" : "encoder";
  check_layer_head(o, decoder ? c.num_decoder_layers : c.num_encoder_layers, c.nhead, stack);
  if (decoder && !c.has_decoder())
    throw Error(std::string(o.tgt ? "--tgt" : "--cross") + ": the model has no decoder");
  Map map;
  map.node = std::string(stack) + ".layers." + std::to_string(o.layer) +
             (o.cross ? ".multihead_attn" : ".self_attn");

  std::vector<int64_t> src;
  if (o.ids) {
    src = ids_argument(o.text, c.src_vocab_size);
  } else {
    src = tok->encode(o.text);
    src.push_back(c.eos_id);
  }
  if (static_cast<int64_t>(src.size()) > c.max_position)
    throw Error("the input has " + std::to_string(src.size()) + " tokens" +
                (o.ids ? "" : " (with eos)") + ", more than max_position " +
                std::to_string(c.max_position));
  const int64_t s_len = static_cast<int64_t>(src.size());
  const Tensor src_ids = ids_tensor(src);
  std::vector<std::string> src_labels;
  for (int64_t id : src) src_labels.push_back(char_label(tok.get(), c, id));

  map.capture.emplace(map.node, o.head);
  if (!decoder) {
    Tensor padding(DType::u8, {1, s_len});  // zero-filled: no padding
    model.encode(src_ids, padding, &*map.capture);
    map.row_labels = map.col_labels = src_labels;
    map.subtitle = "rows: queries, columns: keys";
    return map;
  }
  // The target run is bos + the generated tokens: at most max_position positions.
  int64_t max_new = o.max_new_tokens;
  if (max_new <= 0) max_new = std::min<int64_t>(64, c.max_position - 1);
  if (max_new > c.max_position - 1)
    throw Error("--max-new-tokens " + std::to_string(max_new) +
                " is too many: bos + the generated tokens must fit max_position " +
                std::to_string(c.max_position) + " (at most " + std::to_string(c.max_position - 1) +
                ")");
  if (max_new < 1) throw Error("the model's max_position leaves no room to generate");
  const std::vector<int64_t> gen = model.greedy({src}, max_new).at(0);
  std::vector<int64_t> tgt_ids{c.bos_id};
  tgt_ids.insert(tgt_ids.end(), gen.begin(), gen.end());
  const int64_t t_len = static_cast<int64_t>(tgt_ids.size());
  if (t_len > c.max_position)
    throw Error("bos + " + std::to_string(gen.size()) + " generated tokens exceed max_position " +
                std::to_string(c.max_position));
  Tensor tgt_mask(DType::boolean, {t_len, t_len});
  for (int64_t i = 0; i < t_len; ++i)
    for (int64_t j = 0; j < t_len; ++j) tgt_mask.data<uint8_t>()[i * t_len + j] = j > i;
  model.run({{"src_ids", src_ids}, {"tgt_ids", ids_tensor(tgt_ids)}, {"tgt_mask", tgt_mask}},
            &*map.capture);
  for (int64_t id : tgt_ids) map.row_labels.push_back(char_label(tok.get(), c, id));
  map.col_labels = o.cross ? src_labels : map.row_labels;
  std::string out;
  if (tok)
    out = "\"" + tok->decode(gen) + "\"";
  else
    for (int64_t id : gen) out += (out.empty() ? "" : " ") + std::to_string(id);
  map.subtitle = "output " + out +
                 "; rows: target queries, columns: " + (o.cross ? "source keys" : "target keys");
  return map;
}

// The tokens of the text argument for a Hugging Face family: --ids as given, else the model
// directory's tokenizer (`special`: with the special tokens it adds, [CLS] ... [SEP] for BERT).
// `tok` is set when the directory has a tokenizer (for the labels).
std::vector<int64_t> hf_tokens(const Options& o, int64_t vocab, bool special,
                               std::unique_ptr<TextTokenizer>& tok) {
  if (has_tokenizer(o.model)) tok = load_tokenizer(o.model);
  if (o.ids) return ids_argument(o.text, vocab);
  if (!tok)
    throw Error("model directory '" + o.model +
                "' has no tokenizer (tokenizer.json, vocab.json + merges.txt, or vocab.txt) to "
                "read text with; give token ids with --ids");
  std::vector<int64_t> ids = tok->encode(o.text, special);
  if (ids.empty()) throw Error("the text has no tokens");
  for (int64_t id : ids)
    if (id >= vocab)
      throw Error("the tokenizer of '" + o.model + "' gave token id " + std::to_string(id) +
                  ", out of range for the model's vocab_size " + std::to_string(vocab));
  return ids;
}

// gpt2: causal self-attention of block --layer over the prompt, or (--tgt) over the prompt and
// its greedy continuation (until eos or --max-new-tokens).
Map gpt2_map(const Options& o, const models::Gpt2Model& model) {
  const auto& c = model.config();
  if (o.cross)
    throw Error(
        "--cross: gpt2 is decoder-only and has no cross-attention (its self-attention "
        "is the default; --tgt adds the generated tokens)");
  check_layer_head(o, c.n_layer, c.n_head, "model");
  std::unique_ptr<TextTokenizer> tok;
  std::vector<int64_t> ids = hf_tokens(o, c.vocab_size, false, tok);
  const int64_t len = static_cast<int64_t>(ids.size());
  if (len > c.n_positions)
    throw Error("the input has " + std::to_string(len) + " tokens, more than the model's " +
                "n_positions " + std::to_string(c.n_positions));
  std::string subtitle = "rows: queries, columns: keys (causal)";
  if (o.tgt) {
    int64_t max_new = o.max_new_tokens;
    if (max_new <= 0) max_new = std::min<int64_t>(64, c.n_positions - len);
    if (len + max_new > c.n_positions)
      throw Error("--max-new-tokens " + std::to_string(max_new) + " is too many: the prompt's " +
                  std::to_string(len) + " tokens + the generated ones must fit n_positions " +
                  std::to_string(c.n_positions) + " (at most " +
                  std::to_string(c.n_positions - len) + ")");
    if (max_new < 1) throw Error("the prompt fills n_positions, leaving no room to generate");
    int64_t eos = c.eos_token_id;
    if (eos < 0 && tok && tok->special().eos) eos = *tok->special().eos;
    auto session = model.new_session(max_new);
    Tensor logits = session->start({ids});
    std::vector<int64_t> gen;
    while (true) {
      const float* row = logits.data<float>();
      const int64_t next = std::max_element(row, row + logits.dim(1)) - row;
      gen.push_back(next);
      if (next == eos || static_cast<int64_t>(gen.size()) == max_new) break;
      logits = session->step({next});
    }
    ids.insert(ids.end(), gen.begin(), gen.end());
    std::string out;
    if (tok)
      out = "\"" + tok->decode(gen) + "\"";
    else
      for (int64_t id : gen) out += (out.empty() ? "" : " ") + std::to_string(id);
    subtitle = "prompt + " + std::to_string(gen.size()) + " generated tokens " + out +
               "; rows: queries, columns: keys (causal)";
  }
  Map map;
  map.node = "h." + std::to_string(o.layer) + ".attn";
  map.capture.emplace(map.node, o.head);
  model.run({{"input_ids", ids_tensor(ids)}}, &*map.capture);
  for (int64_t id : ids) map.row_labels.push_back(hf_label(tok.get(), id));
  map.col_labels = map.row_labels;
  map.subtitle = subtitle;
  return map;
}

// bert: self-attention of layer --layer over the text as the tokenizer gives it with [CLS] and
// [SEP] (or --ids as given).
Map bert_map(const Options& o, const models::BertModel& model) {
  const auto& c = model.config();
  if (o.tgt || o.cross)
    throw Error(std::string(o.tgt ? "--tgt" : "--cross") +
                ": bert is an encoder; it has only self-attention (leave out --tgt and --cross)");
  check_layer_head(o, c.num_hidden_layers, c.num_attention_heads, "encoder");
  std::unique_ptr<TextTokenizer> tok;
  const std::vector<int64_t> ids = hf_tokens(o, c.vocab_size, true, tok);
  const int64_t len = static_cast<int64_t>(ids.size());
  if (len > c.max_position_embeddings)
    throw Error("the input has " + std::to_string(len) + " tokens" +
                (o.ids ? "" : " (with [CLS] and [SEP])") + ", more than the model's " +
                "max_position_embeddings " + std::to_string(c.max_position_embeddings));
  Map map;
  map.node = "encoder.layer." + std::to_string(o.layer) + ".attention.self";
  map.capture.emplace(map.node, o.head);
  model.run({{"input_ids", ids_tensor(ids)}}, &*map.capture);
  for (int64_t id : ids) map.row_labels.push_back(hf_label(tok.get(), id));
  map.col_labels = map.row_labels;
  map.subtitle = "rows: queries, columns: keys";
  return map;
}

// rnn_attention: the decoder's additive attention over the source at every step of the greedy
// translation, as Bahdanau et al. draw it: source tokens across, output tokens down (each row is
// the alignment alpha_i the step that produced output token i used; the last row the one that
// produced eos, if it came). --layer and --head must be 0 (one attention, one "head").
Map rnn_map(const Options& o, const models::RnnAttentionModel& model) {
  const auto& c = model.config();
  if (!c.additive)
    throw Error("attention: this rnn_attention model has attention 'none' (no alignment to draw)");
  if (o.tgt)
    throw Error(
        "--tgt: rnn_attention has no decoder self-attention (its attention is "
        "the decoder's over the source; leave out --tgt)");
  check_layer_head(o, 1, 1, "decoder attention");
  std::unique_ptr<CharTokenizer> tok;
  const std::string path = o.model + "/tokenizer.json";
  if (std::filesystem::exists(path)) tok = std::make_unique<CharTokenizer>(path);
  std::vector<int64_t> src;
  if (o.ids) {
    src = ids_argument(o.text, c.src_vocab_size);
  } else {
    if (!tok)
      throw Error("model directory '" + o.model +
                  "' has no tokenizer.json to read text with; give token ids with --ids");
    src = tok->encode(o.text);
    if (src.empty()) throw Error("the text has no tokens");
    src.push_back(c.eos_id);  // as tessera generate encodes a text source
  }
  int64_t max_new = o.max_new_tokens > 0 ? o.max_new_tokens : std::min<int64_t>(64, c.max_length);
  if (max_new > c.max_length)
    throw Error("--max-new-tokens " + std::to_string(max_new) + " exceeds the model's max_length " +
                std::to_string(c.max_length));
  auto label = [&](int64_t id, bool target) {
    if (target && id == c.eos_id) return std::string("</s>");
    if (!target && id == c.pad_id) return std::string("<pad>");
    if (!target && id == c.eos_id) return std::string("</s>");
    if (!tok || id >= tok->vocab_size()) return std::to_string(id);
    return tok->decode({id});
  };
  models::RnnAttentionLM lm(model);
  Tensor logits = lm.start({src});
  Map map;
  map.node = "attention";
  const int64_t s_len = static_cast<int64_t>(src.size());
  std::vector<int64_t> gen;
  for (int64_t i = 0; i < max_new; ++i) {
    const float* row = logits.data<float>();
    const int64_t next = std::max_element(row, row + c.tgt_vocab_size) - row;
    const float* alpha = lm.attention().data<float>();
    map.values.insert(map.values.end(), alpha, alpha + s_len);
    map.row_labels.push_back(label(next, true));
    if (next == c.eos_id) break;
    gen.push_back(next);
    if (i + 1 < max_new) logits = lm.step({next});
  }
  for (int64_t id : src) map.col_labels.push_back(label(id, false));
  std::string out;
  if (tok)
    out = "\"" + tok->decode(gen) + "\"";
  else
    for (int64_t id : gen) out += (out.empty() ? "" : " ") + std::to_string(id);
  map.subtitle = "output " + out + "; rows: output tokens, columns: source tokens";
  return map;
}

}  // namespace

Action add_attention_command(CLI::App& app) {
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "attention",
      "Attention weights of one head as a heatmap PNG: a transformer's encoder self-attention "
      "(or its decoder's self-/cross-attention over the generated output), a gpt2 block's causal "
      "self-attention (--tgt: over the prompt and its continuation), a bert layer's "
      "self-attention, an rnn_attention decoder's additive attention over the source (the "
      "alignment of its greedy translation)");
  cmd->add_option("--model", o->model,
                  "Model directory (transformer or rnn_attention with tokenizer.json; gpt2 or bert "
                  "with their "
                  "tokenizer files, or any with --ids)")
      ->required();
  cmd->add_option("--layer", o->layer, "Layer index (default 0)");
  cmd->add_option("--head", o->head, "Head index (default 0)");
  auto* tgt = cmd->add_flag("--tgt", o->tgt,
                            "transformer: decoder self-attention over [bos + generated tokens] "
                            "(causal); gpt2: self-attention over the prompt + its greedy "
                            "continuation");
  auto* cross = cmd->add_flag("--cross", o->cross,
                              "transformer: decoder cross-attention, generated tokens x source");
  tgt->excludes(cross);
  cross->excludes(tgt);
  cmd->add_flag("--ids", o->ids,
                "The input is space-separated token ids, taken as given (no special tokens "
                "added, no eos appended)");
  cmd->add_option("--out", o->out, "PNG file (default attention-L<l>-H<h>[-tgt|-cross].png)");
  cmd->add_option("--dump", o->dump,
                  "Also write the weights as F32 [T, S] tensor 'weights' to this .safetensors");
  cmd->add_option("--max-new-tokens", o->max_new_tokens,
                  "Most tokens generated for --tgt/--cross (default: 64, at most what the "
                  "model's positions leave)");
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)");
  cmd->add_option("text", o->text, "Input text (token ids with --ids)")->required();
  return [o] {
    setup_threads(o->threads);
    ModelDir dir(o->model);
    auto model = load_any_model(dir);
    Map map;
    if (const auto* m = model->transformer())
      map = transformer_map(*o, *m);
    else if (const auto* m = model->gpt2())
      map = gpt2_map(*o, *m);
    else if (const auto* m = model->bert())
      map = bert_map(*o, *m);
    else if (const auto* m = model->rnn_attention())
      map = rnn_map(*o, *m);
    else
      throw Error(std::string("attention: model_type '") + model->family() + "' is not supported");
    const std::string& node = map.node;
    if (map.capture) {
      const AttentionCapture& capture = *map.capture;
      if (capture.seen() != 1)
        throw Error("attention node '" + node + "' ran " + std::to_string(capture.seen()) +
                    " times (expected once)");
      if (capture.rows() != static_cast<int64_t>(map.row_labels.size()) ||
          capture.cols() != static_cast<int64_t>(map.col_labels.size()))
        throw Error("attention node '" + node + "' gave weights of an unexpected shape");
      map.values = capture.weights();
    }
    const int64_t n_rows = static_cast<int64_t>(map.row_labels.size());
    const int64_t n_cols = static_cast<int64_t>(map.col_labels.size());

    png::Heatmap hm;
    hm.title = node + " head " + std::to_string(o->head);
    hm.subtitle = map.subtitle;
    hm.row_labels = map.row_labels;
    hm.col_labels = map.col_labels;
    hm.values = map.values;
    std::string out = o->out;
    if (out.empty())
      out = "attention-L" + std::to_string(o->layer) + "-H" + std::to_string(o->head) +
            (o->tgt     ? "-tgt"
             : o->cross ? "-cross"
                        : "") +
            ".png";
    if (!o->dump.empty()) {
      Tensor w(DType::f32, {n_rows, n_cols});
      for (size_t i = 0; i < map.values.size(); ++i)
        w.data<float>()[i] = static_cast<float>(map.values[i]);
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
