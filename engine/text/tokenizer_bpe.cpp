#include "engine/text/tokenizer_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "engine/io/error.h"
#include "engine/text/tokenizer_files.h"

namespace tessera {

namespace {

// GPT-2's pre-tokenization pattern. Oniguruma (the reference implementation's engine) counts
// U+0085 as \s in Unicode mode, PCRE2 10.42 with UCP does not: \s is spelled [\s\x{85}].
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\x{85}\p{L}\p{N}]+|[\s\x{85}]+(?![^\s\x{85}])|[\s\x{85}]+)";

// Ids above this are refused: a malformed file must not make us allocate gigabytes.
constexpr int64_t kMaxId = int64_t{1} << 26;

struct ByteTables {
  char32_t to_unicode[256];
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteTables() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_unicode[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      to_byte[to_unicode[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

// The bytes a token string decodes to: each character mapped back to its byte; a token holding a
// character outside the byte map (an added token such as "<|endoftext|>" maps to itself anyway)
// decodes to its own UTF-8, as the reference ByteLevel decoder does.
std::string token_to_bytes(const std::string& token) {
  const auto& t = byte_tables();
  std::string out;
  for (char32_t cp : utf8::decode(token)) {
    auto it = t.to_byte.find(cp);
    if (it == t.to_byte.end()) return token;
    out += static_cast<char>(it->second);
  }
  return out;
}

std::string bytes_to_token(std::string_view bytes) {
  std::string out;
  for (char c : bytes) utf8::append(byte_tables().to_unicode[static_cast<uint8_t>(c)], out);
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// {"token": id, ...} -> pairs; `where` names the object in messages.
std::vector<std::pair<std::string, int64_t>> read_vocab_object(const nlohmann::json& v,
                                                               const std::string& where) {
  if (!v.is_object()) throw Error(where + " must be a JSON object {\"token\": id, ...}");
  std::vector<std::pair<std::string, int64_t>> out;
  out.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_integer())
      throw Error(where + ": the id of token '" + it.key() + "' is not an integer");
    out.emplace_back(it.key(), it.value().get<int64_t>());
  }
  return out;
}

}  // namespace

char32_t gpt2_byte_to_unicode(uint8_t b) {
  return byte_tables().to_unicode[b];
}

// ---------------------------------------------------------------------------------------------
// The compiled pre-tokenization regex
// ---------------------------------------------------------------------------------------------
struct ByteLevelBpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  explicit Regex(const char* pattern) {
    int err = 0;
    PCRE2_SIZE where = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP, &err, &where, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(std::string("pre-tokenizer pattern does not compile: ") +
                  reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: the interpreter is the fallback
  }
  ~Regex() { pcre2_code_free(code); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
};

template <class F>
void ByteLevelBpeTokenizer::for_each_pre_token(std::string_view text, F&& f) const {
  if (text.empty()) return;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(regex_->code, nullptr), &pcre2_match_data_free);
  if (!md) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  // The text was checked to be valid UTF-8 once; without NO_UTF_CHECK PCRE2 would re-check the
  // whole subject on every call (quadratic time).
  uint32_t options = PCRE2_NO_UTF_CHECK;
  size_t gap = 0, from = 0;  // gap: start of text not yet given to f
  while (from < n) {
    const int rc = pcre2_match(regex_->code, subject, n, from, options, md.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(options & PCRE2_NO_JIT)) {
      options |= PCRE2_NO_JIT;  // the interpreter keeps its backtracking state on the heap
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error("pre-tokenizing with " + source_ +
                  " failed: " + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t s = ov[0], e = ov[1];
    if (e == s) {  // an empty match (not possible with GPT-2's pattern): step one character
      from = s + 1;
      while (from < n && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;
      continue;
    }
    if (s > gap) f(text.substr(gap, s - gap));  // text no alternative matched stays one piece
    f(text.substr(s, e - s));
    gap = from = e;
  }
  if (gap < n) f(text.substr(gap));
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------
ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(Config c)
    : add_prefix_space_(c.add_prefix_space), ignore_merges_(c.ignore_merges) {
  source_ = c.source;
  special_ = c.special;
  const std::string& src = source_;
  int64_t size = 0;
  for (const auto& [tok, id] : c.vocab) {
    if (id < 0 || id >= kMaxId)
      throw Error(src + ": token '" + tok + "' has id " + std::to_string(id) + ", outside [0, " +
                  std::to_string(kMaxId) + ")");
    if (utf8::first_invalid(tok) != std::string_view::npos)
      throw Error(src + ": token with id " + std::to_string(id) + " is not valid UTF-8");
    size = std::max(size, id + 1);
  }
  for (const auto& a : c.added) {
    if (a.id < 0 || a.id >= kMaxId)
      throw Error(src + ": added token '" + a.content + "' has id " + std::to_string(a.id) +
                  ", outside [0, " + std::to_string(kMaxId) + ")");
    if (a.content.empty() || utf8::first_invalid(a.content) != std::string_view::npos)
      throw Error(src + ": added token with id " + std::to_string(a.id) +
                  " is empty or not valid UTF-8");
    size = std::max(size, a.id + 1);
  }
  if (size == 0) throw Error(src + ": the vocabulary is empty");
  detail::check_id_space(size, c.vocab.size() + c.added.size(), src);
  const auto usize = static_cast<size_t>(size);
  tokens_.assign(usize, "");
  present_.assign(usize, 0);
  special_flags_.assign(usize, 0);
  ids_.reserve(c.vocab.size());
  for (const auto& [tok, id] : c.vocab) {
    const auto i = static_cast<size_t>(id);
    if (present_[i])
      throw Error(src + ": tokens '" + tokens_[i] + "' and '" + tok + "' share the id " +
                  std::to_string(id));
    present_[i] = 1;
    tokens_[i] = tok;
    ids_[tok] = static_cast<int32_t>(id);
  }
  for (const auto& a : c.added) {
    const auto i = static_cast<size_t>(a.id);
    if (present_[i] && tokens_[i] != a.content)
      throw Error(src + ": added token '" + a.content + "' has the id " + std::to_string(a.id) +
                  " of token '" + tokens_[i] + "'");
    present_[i] = 1;
    tokens_[i] = a.content;
    ids_.emplace(a.content, static_cast<int32_t>(a.id));
    special_flags_[i] = a.special ? 1 : 0;
  }
  added_ = std::move(c.added);
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8::append(byte_tables().to_unicode[b], s);
    auto it = ids_.find(s);
    if (it == ids_.end()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      throw Error(src + ": no token for byte " + hex + " ('" + s +
                  "'): a byte-level BPE vocabulary needs all 256");
    }
    byte_ids_[b] = it->second;
  }
  merges_.reserve(c.merges.size());
  for (size_t r = 0; r < c.merges.size(); ++r) {
    const Merge& m = c.merges[r];
    const std::string at = (c.merges_source.empty() ? src : c.merges_source) + " " + m.where +
                           ": merge '" + m.left + " " + m.right + "'";
    auto l = ids_.find(m.left), rt = ids_.find(m.right), lr = ids_.find(m.left + m.right);
    if (l == ids_.end()) throw Error(at + ": '" + m.left + "' is not in the vocabulary");
    if (rt == ids_.end()) throw Error(at + ": '" + m.right + "' is not in the vocabulary");
    if (lr == ids_.end())
      throw Error(at + ": the result '" + m.left + m.right + "' is not in the vocabulary");
    // A pair listed twice keeps its last rank, as the reference implementation does.
    merges_[pair_key(l->second, rt->second)] = {static_cast<int32_t>(r), lr->second};
  }
  token_bytes_.resize(usize);
  for (size_t i = 0; i < usize; ++i)
    if (present_[i]) token_bytes_[i] = token_to_bytes(tokens_[i]);
  regex_ = std::make_unique<Regex>(kGpt2Pattern);
}

ByteLevelBpeTokenizer::~ByteLevelBpeTokenizer() = default;

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_gpt2_files(
    const std::string& vocab_json, const std::string& merges_txt) {
  Config c;
  c.source = "tokenizer file '" + vocab_json + "'";
  c.merges_source = "tokenizer file '" + merges_txt + "'";
  c.vocab = read_vocab_object(detail::read_tokenizer_json(vocab_json),
                              "tokenizer file '" + vocab_json + "'");
  const std::string text = detail::read_tokenizer_text(merges_txt);
  if (utf8::first_invalid(text) != std::string_view::npos)
    throw Error("tokenizer file '" + merges_txt + "' is not valid UTF-8 (byte " +
                std::to_string(utf8::first_invalid(text)) + ")");
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with("#version")) continue;
    const size_t sp = line.find(' ');
    if (line.empty() || sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos)
      throw Error("tokenizer file '" + merges_txt + "' line " + std::to_string(line_no) +
                  ": expected two tokens separated by one space, got '" + std::string(line) + "'");
    c.merges.push_back({std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)),
                        "line " + std::to_string(line_no)});
  }
  for (const auto& [tok, id] : c.vocab)
    if (tok == "<|endoftext|>") {
      c.special.bos = c.special.eos = c.special.unk = id;
      c.added.push_back({id, tok, true});
    }
  return std::make_unique<ByteLevelBpeTokenizer>(std::move(c));
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_hf_json(
    const nlohmann::json& j, const std::string& path) {
  const std::string where = "tokenizer file '" + path + "'";
  Config c;
  c.source = where;
  const nlohmann::json& m = j.at("model");
  if (!m.contains("vocab")) throw Error(where + ": model.vocab is missing");
  c.vocab = read_vocab_object(m["vocab"], where + ": model.vocab");
  if (!m.contains("merges") || !m["merges"].is_array())
    throw Error(where + ": model.merges must be an array");
  const auto& merges = m["merges"];
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& e = merges[i];
    const std::string line = "model.merges[" + std::to_string(i) + "]";
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() ||
          s.find(' ', sp + 1) != std::string::npos)
        throw Error(where + ": model.merges[" + std::to_string(i) +
                    "] must be two tokens separated by one space, got '" + s + "'");
      c.merges.push_back({s.substr(0, sp), s.substr(sp + 1), line});
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      c.merges.push_back({e[0].get<std::string>(), e[1].get<std::string>(), line});
    } else {
      throw Error(where + ": model.merges[" + std::to_string(i) +
                  "] must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  auto non_empty_string = [&](const char* key) {
    return m.contains(key) && m[key].is_string() && !m[key].get<std::string>().empty();
  };
  if (non_empty_string("continuing_subword_prefix") || non_empty_string("end_of_word_suffix"))
    throw Error(where +
                ": BPE with a continuing_subword_prefix or end_of_word_suffix is not "
                "supported (only GPT-2-style byte-level BPE)");
  if (detail::json_bool(m, "byte_fallback", false, where))
    throw Error(where +
                ": BPE with byte_fallback (SentencePiece style) is not supported "
                "(only GPT-2-style byte-level BPE)");
  if (m.contains("ignore_merges") && m["ignore_merges"].is_boolean())
    c.ignore_merges = m["ignore_merges"].get<bool>();
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    throw Error(where + ": a BPE normalizer is not supported (GPT-2 has none)");
  const nlohmann::json* pre = j.contains("pre_tokenizer") ? &j["pre_tokenizer"] : nullptr;
  if (!pre || !pre->is_object() || detail::json_string(*pre, "type", "", where) != "ByteLevel")
    throw Error(where + ": only the ByteLevel pre-tokenizer is supported for BPE");
  if (!detail::json_bool(*pre, "use_regex", true, where))
    throw Error(where + ": a ByteLevel pre-tokenizer without its regex is not supported");
  c.add_prefix_space = detail::json_bool(*pre, "add_prefix_space", false, where);
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string())
        throw Error(where + ": every added_tokens entry needs an integer id and a content string");
      c.added.push_back({a["id"].get<int64_t>(), a["content"].get<std::string>(),
                         detail::json_bool(a, "special", false, where + ": added_tokens")});
    }
  }
  for (const auto& a : c.added)
    if (a.content == "<|endoftext|>") c.special.bos = c.special.eos = c.special.unk = a.id;
  return std::make_unique<ByteLevelBpeTokenizer>(std::move(c));
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------
std::string ByteLevelBpeTokenizer::token(int64_t id) const {
  check_id(id);
  return tokens_[static_cast<size_t>(id)];
}

std::optional<int64_t> ByteLevelBpeTokenizer::token_id(std::string_view token) const {
  auto it = ids_.find(std::string(token));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

bool ByteLevelBpeTokenizer::is_special(int64_t id) const {
  return id >= 0 && id < vocab_size() && special_flags_[static_cast<size_t>(id)];
}

bool ByteLevelBpeTokenizer::append_piece(int64_t id, bool, bool skip_special,
                                         std::string& out) const {
  check_id(id);
  const auto i = static_cast<size_t>(id);
  if (!present_[i]) throw Error("token id " + std::to_string(id) + " has no token in " + source_);
  if (skip_special && special_flags_[i]) return false;
  out += token_bytes_[i];
  return true;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------
std::vector<std::string> ByteLevelBpeTokenizer::pre_tokenize(std::string_view text) const {
  detail::check_utf8(text, source_);
  std::vector<std::string> out;
  for_each_pre_token(text, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

void ByteLevelBpeTokenizer::bpe(std::string_view word, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id;          // -1 once merged into its left neighbour
    int32_t prev, next;  // neighbours still alive (-1: none)
  };
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    sym[static_cast<size_t>(i)] = {byte_ids_[static_cast<uint8_t>(word[static_cast<size_t>(i)])],
                                   i - 1, i + 1 < n ? i + 1 : -1};
  // Candidate merges keyed (rank << 32 | left position): lowest rank first, then leftmost.
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<>> heap;
  auto push = [&](int32_t pos) {
    const Symbol& s = sym[static_cast<size_t>(pos)];
    if (s.next < 0) return;
    auto it = merges_.find(pair_key(s.id, sym[static_cast<size_t>(s.next)].id));
    if (it != merges_.end())
      heap.push((static_cast<uint64_t>(it->second.rank) << 32) | static_cast<uint32_t>(pos));
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const uint64_t top = heap.top();
    heap.pop();
    const auto rank = static_cast<int32_t>(top >> 32);
    const auto pos = static_cast<int32_t>(top & 0xffffffffu);
    Symbol& s = sym[static_cast<size_t>(pos)];
    if (s.id < 0 || s.next < 0) continue;  // stale: merged away or no right neighbour now
    Symbol& r = sym[static_cast<size_t>(s.next)];
    auto it = merges_.find(pair_key(s.id, r.id));
    if (it == merges_.end() || it->second.rank != rank) continue;  // stale: the pair changed
    s.id = it->second.id;
    r.id = -1;
    s.next = r.next;
    if (s.next >= 0) sym[static_cast<size_t>(s.next)].prev = pos;
    if (s.prev >= 0) push(s.prev);
    push(pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next)
    ids.push_back(sym[static_cast<size_t>(i)].id);
}

void ByteLevelBpeTokenizer::encode_word(std::string_view word, std::vector<int64_t>& out) const {
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    auto it = ids_.find(bytes_to_token(word));
    if (it != ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Long pre-tokens (runs of digits, symbols or spaces) are not cached: they are rare and would
  // fill the cache.
  constexpr size_t kMaxCachedBytes = 64;
  constexpr size_t kMaxCacheEntries = 1 << 16;
  std::string key(word);
  if (word.size() <= kMaxCachedBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bpe(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() <= kMaxCachedBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::move(key), std::move(ids));
  }
}

std::vector<int64_t> ByteLevelBpeTokenizer::do_encode(std::string_view text,
                                                      bool add_special) const {
  detail::check_utf8(text, source_);
  std::vector<int64_t> out;
  out.reserve(text.size() / 3 + 1);
  std::string prefixed;
  for (const auto& seg : detail::split_added(text, added_, add_special)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    std::string_view piece = seg.text;
    if (add_prefix_space_ && piece[0] != ' ') {
      prefixed.clear();
      prefixed.push_back(' ');
      prefixed.append(piece.data(), piece.size());
      piece = prefixed;
    }
    for_each_pre_token(piece, [&](std::string_view w) { encode_word(w, out); });
  }
  return out;
}

}  // namespace tessera
