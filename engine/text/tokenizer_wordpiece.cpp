#include "engine/text/tokenizer_wordpiece.h"

#include <utf8proc.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/error.h"
#include "engine/text/tokenizer_files.h"

namespace tessera {

namespace {

constexpr int64_t kMaxId = int64_t{1} << 26;  // a malformed file must not allocate gigabytes

// Unicode's White_Space property (Rust's char::is_whitespace, which the reference uses).
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Control characters BERT's cleanup drops: the "Other" categories, but not \t \n \r.
bool is_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  if (c < 0x80) return c < 0x20 || c == 0x7F;  // ASCII: no table lookup
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

// BERT's punctuation: every ASCII non-alphanumeric printable (so $ + < = > ^ ` | ~ too), and the
// Unicode punctuation categories.
bool is_punctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126))
    return true;
  if (c < 0x80) return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideographs blocks BERT treats as words of their own (not Hangul, Hiragana or
// Katakana, which are written with spaces).
bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// NFD of `s`, without nonspacing marks.
std::u32string strip_accents(const std::u32string& s) {
  std::string bytes;
  bytes.reserve(s.size());
  for (char32_t c : s) utf8::append(c, bytes);
  const auto* in = reinterpret_cast<const utf8proc_uint8_t*>(bytes.data());
  const auto len = static_cast<utf8proc_ssize_t>(bytes.size());
  std::vector<utf8proc_int32_t> buf(s.size() + 16);
  utf8proc_ssize_t n = utf8proc_decompose(
      in, len, buf.data(), static_cast<utf8proc_ssize_t>(buf.size()), UTF8PROC_DECOMPOSE);
  if (n > static_cast<utf8proc_ssize_t>(buf.size())) {  // too small: n is the size needed
    buf.resize(static_cast<size_t>(n));
    n = utf8proc_decompose(in, len, buf.data(), n, UTF8PROC_DECOMPOSE);
  }
  if (n < 0) throw Error(std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
  std::u32string out;
  out.reserve(static_cast<size_t>(n));
  for (utf8proc_ssize_t i = 0; i < n; ++i)
    if (utf8proc_category(buf[static_cast<size_t>(i)]) != UTF8PROC_CATEGORY_MN)
      out += static_cast<char32_t>(buf[static_cast<size_t>(i)]);
  return out;
}

std::u32string lowercase(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out += (c >= 'A' && c <= 'Z') ? c + 32 : c;
    } else if (c == 0x130) {  // İ: the one code point whose full lower case is two (i + U+0307)
      out += U'i';
      out += char32_t{0x307};
    } else {
      out += static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
    }
  }
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------
WordPieceTokenizer::WordPieceTokenizer(const std::vector<std::pair<std::string, int64_t>>& vocab,
                                       WordPieceOptions options, std::vector<AddedToken> added,
                                       std::string source)
    : options_(std::move(options)), added_(std::move(added)) {
  source_ = std::move(source);
  strip_accents_ = options_.strip_accents.value_or(options_.lowercase);
  if (options_.max_chars_per_word < 1)
    throw Error(source_ + ": max_input_chars_per_word must be at least 1");
  int64_t size = 0;
  for (const auto& [tok, id] : vocab) {
    if (id < 0 || id >= kMaxId)
      throw Error(source_ + ": token '" + tok + "' has id " + std::to_string(id) +
                  ", outside [0, " + std::to_string(kMaxId) + ")");
    size = std::max(size, id + 1);
  }
  for (const auto& a : added_) {
    if (a.id < 0 || a.id >= kMaxId)
      throw Error(source_ + ": added token '" + a.content + "' has id " + std::to_string(a.id) +
                  ", outside [0, " + std::to_string(kMaxId) + ")");
    size = std::max(size, a.id + 1);
  }
  if (size == 0) throw Error(source_ + ": the vocabulary is empty");
  detail::check_id_space(size, vocab.size() + added_.size(), source_);
  const auto usize = static_cast<size_t>(size);
  tokens_.assign(usize, "");
  present_.assign(usize, 0);
  special_flags_.assign(usize, 0);
  ids_.reserve(vocab.size());
  for (const auto& [tok, id] : vocab) {
    const auto i = static_cast<size_t>(id);
    if (present_[i])
      throw Error(source_ + ": tokens '" + tokens_[i] + "' and '" + tok + "' share the id " +
                  std::to_string(id));
    present_[i] = 1;
    tokens_[i] = tok;
    ids_[tok] = id;  // a token listed twice: the last id wins, as in the reference
    max_token_bytes_ = std::max(max_token_bytes_, tok.size());
  }
  for (const auto& a : added_) {
    const auto i = static_cast<size_t>(a.id);
    if (present_[i] && tokens_[i] != a.content)
      throw Error(source_ + ": added token '" + a.content + "' has the id " + std::to_string(a.id) +
                  " of token '" + tokens_[i] + "'");
    present_[i] = 1;
    tokens_[i] = a.content;
    ids_.emplace(a.content, a.id);
    special_flags_[i] = a.special ? 1 : 0;
  }
  auto named = [&](const std::string& name) -> std::optional<int64_t> {
    auto it = ids_.find(name);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  };
  special_.unk = named(options_.unk_token);
  if (!special_.unk)
    throw Error(source_ + ": the unknown token '" + options_.unk_token +
                "' is not in the vocabulary");
  unk_id_ = *special_.unk;
  special_.cls = named("[CLS]");
  special_.sep = named("[SEP]");
  special_.pad = named("[PAD]");
  special_.mask = named("[MASK]");
}

std::unique_ptr<WordPieceTokenizer> WordPieceTokenizer::from_vocab_txt(
    const std::string& path, const WordPieceOptions& options) {
  const std::string where = "tokenizer file '" + path + "'";
  const std::string text = detail::read_tokenizer_text(path);
  if (const size_t bad = utf8::first_invalid(text); bad != std::string_view::npos)
    throw Error(where + " is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<std::pair<std::string, int64_t>> vocab;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.remove_suffix(1);
    vocab.emplace_back(std::string(line), static_cast<int64_t>(vocab.size()));
  }
  if (vocab.empty()) throw Error(where + " is empty (expected one token per line)");
  std::vector<AddedToken> added;
  for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    for (auto it = vocab.rbegin(); it != vocab.rend(); ++it)
      if (it->first == name) {
        added.push_back({it->second, it->first, true});
        break;
      }
  return std::make_unique<WordPieceTokenizer>(vocab, options, std::move(added), where);
}

std::unique_ptr<WordPieceTokenizer> WordPieceTokenizer::from_hf_json(const nlohmann::json& j,
                                                                     const std::string& path) {
  const std::string where = "tokenizer file '" + path + "'";
  const nlohmann::json& m = j.at("model");
  if (!m.contains("vocab") || !m["vocab"].is_object())
    throw Error(where + ": model.vocab must be a JSON object {\"token\": id, ...}");
  std::vector<std::pair<std::string, int64_t>> vocab;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer())
      throw Error(where + ": the id of token '" + it.key() + "' is not an integer");
    vocab.emplace_back(it.key(), it.value().get<int64_t>());
  }
  WordPieceOptions o;
  auto get_string = [&](const nlohmann::json& obj, const char* key, std::string& dst) {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_string()) throw Error(where + ": " + key + " must be a string");
    dst = obj[key].get<std::string>();
  };
  auto get_bool = [&](const nlohmann::json& obj, const char* key, bool& dst) {
    if (!obj.contains(key) || obj[key].is_null()) return;
    if (!obj[key].is_boolean()) throw Error(where + ": " + key + " must be true or false");
    dst = obj[key].get<bool>();
  };
  get_string(m, "unk_token", o.unk_token);
  get_string(m, "continuing_subword_prefix", o.prefix);
  if (m.contains("max_input_chars_per_word")) {
    if (!m["max_input_chars_per_word"].is_number_integer())
      throw Error(where + ": max_input_chars_per_word must be an integer");
    o.max_chars_per_word = m["max_input_chars_per_word"].get<int64_t>();
  }
  const nlohmann::json norm = j.value("normalizer", nlohmann::json());
  if (norm.is_null()) {
    o.clean_text = o.handle_chinese_chars = o.lowercase = false;
    o.strip_accents = false;
  } else if (norm.is_object() &&
             detail::json_string(norm, "type", "", where + ": normalizer") == "BertNormalizer") {
    get_bool(norm, "clean_text", o.clean_text);
    get_bool(norm, "handle_chinese_chars", o.handle_chinese_chars);
    get_bool(norm, "lowercase", o.lowercase);
    if (norm.contains("strip_accents") && !norm["strip_accents"].is_null()) {
      bool strip = false;
      get_bool(norm, "strip_accents", strip);
      o.strip_accents = strip;
    }
  } else {
    throw Error(where + ": only the BertNormalizer (or none) is supported for WordPiece");
  }
  const nlohmann::json pre = j.value("pre_tokenizer", nlohmann::json());
  if (!pre.is_object() ||
      detail::json_string(pre, "type", "", where + ": pre_tokenizer") != "BertPreTokenizer")
    throw Error(where + ": only the BertPreTokenizer is supported for WordPiece");
  const nlohmann::json dec = j.value("decoder", nlohmann::json());
  if (dec.is_object() && detail::json_string(dec, "type", "", where + ": decoder") == "WordPiece") {
    get_bool(dec, "cleanup", o.cleanup);
    std::string prefix = o.prefix;
    get_string(dec, "prefix", prefix);
    if (prefix != o.prefix)
      throw Error(where + ": the decoder's prefix '" + prefix + "' differs from the model's '" +
                  o.prefix + "'");
  }
  std::vector<AddedToken> added;
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string())
        throw Error(where + ": every added_tokens entry needs an integer id and a content string");
      added.push_back({a["id"].get<int64_t>(), a["content"].get<std::string>(),
                       detail::json_bool(a, "special", false, where + ": added_tokens")});
    }
  }
  return std::make_unique<WordPieceTokenizer>(vocab, std::move(o), std::move(added), where);
}

// ---------------------------------------------------------------------------------------------
// Queries and decoding
// ---------------------------------------------------------------------------------------------
std::string WordPieceTokenizer::token(int64_t id) const {
  check_id(id);
  return tokens_[static_cast<size_t>(id)];
}

std::optional<int64_t> WordPieceTokenizer::token_id(std::string_view token) const {
  auto it = ids_.find(std::string(token));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

bool WordPieceTokenizer::is_special(int64_t id) const {
  return id >= 0 && id < vocab_size() && special_flags_[static_cast<size_t>(id)];
}

bool WordPieceTokenizer::append_piece(int64_t id, bool first, bool skip_special,
                                      std::string& out) const {
  check_id(id);
  const auto i = static_cast<size_t>(id);
  if (!present_[i]) throw Error("token id " + std::to_string(id) + " has no token in " + source_);
  if (skip_special && special_flags_[i]) return false;
  const std::string& tok = tokens_[i];
  std::string piece;
  if (first) {
    piece = tok;
  } else if (!options_.prefix.empty() && tok.starts_with(options_.prefix)) {
    piece = tok.substr(options_.prefix.size());
  } else {
    piece = " " + tok;
  }
  if (options_.cleanup) {
    // The reference decoder's cleanup, applied to each token (with its leading space).
    static constexpr std::pair<std::string_view, std::string_view> kRules[] = {
        {" .", "."},   {" ?", "?"},     {" !", "!"},    {" ,", ","},
        {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
        {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kRules) replace_all(piece, from, to);
  }
  out += piece;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------
template <class F>
void WordPieceTokenizer::for_each_word(std::string_view text, F&& f) const {
  const std::u32string raw = utf8::decode(text);
  std::u32string s;
  s.reserve(raw.size() + raw.size() / 4);
  bool ascii = true;
  for (char32_t c : raw) {
    if (options_.clean_text) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_white_space(c)) c = U' ';
    }
    if (options_.handle_chinese_chars && is_cjk(c)) {
      s += U' ';
      s += c;
      s += U' ';
    } else {
      s += c;
    }
    ascii = ascii && c < 0x80;
  }
  if (strip_accents_ && !ascii) s = strip_accents(s);
  if (options_.lowercase) s = lowercase(s);
  std::string word;
  size_t n_chars = 0;
  auto flush = [&] {
    if (n_chars) f(word, n_chars);
    word.clear();
    n_chars = 0;
  };
  for (char32_t c : s) {
    if (is_white_space(c)) {
      flush();
    } else if (is_punctuation(c)) {
      flush();
      utf8::append(c, word);
      n_chars = 1;
      flush();
    } else {
      utf8::append(c, word);
      ++n_chars;
    }
  }
  flush();
}

std::vector<std::string> WordPieceTokenizer::basic_tokenize(std::string_view text) const {
  detail::check_utf8(text, source_);
  std::vector<std::string> out;
  for_each_word(text, [&](const std::string& w, size_t) { out.push_back(w); });
  return out;
}

void WordPieceTokenizer::wordpiece(const std::string& word, size_t n_chars,
                                   std::vector<int64_t>& out) const {
  if (static_cast<int64_t>(n_chars) > options_.max_chars_per_word) {
    out.push_back(unk_id_);
    return;
  }
  std::vector<size_t> at;  // [n_chars + 1] byte offset of each code point
  at.reserve(n_chars + 1);
  for (size_t i = 0; i < word.size(); ++i)
    if ((static_cast<unsigned char>(word[i]) & 0xC0) != 0x80) at.push_back(i);
  at.push_back(word.size());
  const size_t first_out = out.size();
  std::string candidate;
  size_t start = 0;
  while (start < n_chars) {
    size_t end = n_chars;
    int64_t found = -1;
    const size_t prefix_bytes = start > 0 ? options_.prefix.size() : 0;
    for (; end > start; --end) {
      if (prefix_bytes + at[end] - at[start] > max_token_bytes_) continue;
      candidate.assign(start > 0 ? options_.prefix : std::string());
      candidate.append(word, at[start], at[end] - at[start]);
      auto it = ids_.find(candidate);
      if (it != ids_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {  // some part has no piece: the whole word is unknown
      out.resize(first_out);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

std::vector<int64_t> WordPieceTokenizer::do_encode(std::string_view text, bool add_special) const {
  detail::check_utf8(text, source_);
  std::vector<int64_t> out;
  if (add_special && special_.cls) out.push_back(*special_.cls);
  for (const auto& seg : detail::split_added(text, added_, add_special)) {
    if (seg.id >= 0)
      out.push_back(seg.id);
    else
      for_each_word(seg.text, [&](const std::string& w, size_t n) { wordpiece(w, n, out); });
  }
  if (add_special && special_.sep) out.push_back(*special_.sep);
  return out;
}

}  // namespace tessera
