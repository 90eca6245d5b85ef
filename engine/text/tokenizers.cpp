#include "engine/text/tokenizers.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/error.h"
#include "engine/text/tokenizer.h"
#include "engine/text/tokenizer_bpe.h"
#include "engine/text/tokenizer_files.h"
#include "engine/text/tokenizer_wordpiece.h"

namespace tessera {

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------
namespace utf8 {

namespace {

// Length of a valid sequence led by `lead` and the bounds of its second byte (the only byte
// whose range depends on the lead: no overlong forms, no surrogates, nothing past U+10FFFF).
// Returns 0 for a byte that cannot start a sequence.
int expected_length(unsigned char lead, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
    return 4;
  }
  return 0;
}

// The number of bytes of the longest valid (possibly incomplete) prefix of a sequence starting at
// s[i]: equals the sequence length when complete and valid.
int valid_prefix(std::string_view s, size_t i, int& need) {
  unsigned char lo, hi;
  const auto lead = static_cast<unsigned char>(s[i]);
  need = expected_length(lead, lo, hi);
  if (need <= 1) return need;  // ASCII (1) or an invalid lead (0)
  int got = 1;
  while (got < need && i + static_cast<size_t>(got) < s.size()) {
    const auto c = static_cast<unsigned char>(s[i + static_cast<size_t>(got)]);
    const unsigned char l = got == 1 ? lo : 0x80, h = got == 1 ? hi : 0xBF;
    if (c < l || c > h) break;
    ++got;
  }
  return got;
}

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

size_t append_lossy(std::string_view in, bool final, std::string& out) {
  size_t i = 0;
  while (i < in.size()) {
    // Copy a run of ASCII at once.
    size_t j = i;
    while (j < in.size() && static_cast<unsigned char>(in[j]) < 0x80) ++j;
    out.append(in.data() + i, j - i);
    i = j;
    if (i == in.size()) break;
    int need;
    const int got = valid_prefix(in, i, need);
    if (need > 0 && got == need) {
      out.append(in.data() + i, static_cast<size_t>(got));
      i += static_cast<size_t>(got);
    } else if (got > 0 && i + static_cast<size_t>(got) == in.size() && !final) {
      break;  // incomplete at the end: wait for more bytes
    } else {
      out += kReplacement;  // a maximal invalid subsequence (at least one byte)
      i += static_cast<size_t>(std::max(got, 1));
    }
  }
  return i;
}

size_t first_invalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int need;
    const int got = valid_prefix(s, i, need);
    if (got != need || need == 0) return i;
    i += static_cast<size_t>(got);
  }
  return std::string_view::npos;
}

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c0 = static_cast<unsigned char>(s[i]);
    if (c0 < 0x80) {
      out += static_cast<char32_t>(c0);
      ++i;
      continue;
    }
    unsigned char lo, hi;
    const int n = expected_length(c0, lo, hi);
    if (n == 0 || i + static_cast<size_t>(n) > s.size())
      throw Error("invalid UTF-8 at byte " + std::to_string(i));
    char32_t cp = c0 & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out += cp;
    i += static_cast<size_t>(n);
  }
  return out;
}

void append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace utf8

// ---------------------------------------------------------------------------------------------
// TextTokenizer, StreamDecoder
// ---------------------------------------------------------------------------------------------
void TextTokenizer::check_id(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " + source_ +
                " (" + std::to_string(vocab_size()) + " ids)");
}

std::string TextTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string bytes;
  bool first = true;
  for (int64_t id : ids)
    if (append_piece(id, first, skip_special, bytes)) first = false;
  std::string out;
  out.reserve(bytes.size());
  utf8::append_lossy(bytes, /*final=*/true, out);
  return out;
}

std::string StreamDecoder::push(int64_t id) {
  if (tok_->append_piece(id, first_, skip_special_, pending_)) first_ = false;
  std::string out;
  const size_t used = utf8::append_lossy(pending_, /*final=*/false, out);
  pending_.erase(0, used);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  utf8::append_lossy(pending_, /*final=*/true, out);
  pending_.clear();
  first_ = true;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Added tokens
// ---------------------------------------------------------------------------------------------
namespace detail {

std::vector<Segment> split_added(std::string_view text, const std::vector<AddedToken>& added,
                                 bool with_special) {
  std::vector<Segment> out;
  std::vector<const AddedToken*> usable;
  for (const auto& a : added)
    if (!a.content.empty() && (with_special || !a.special)) usable.push_back(&a);
  if (usable.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return out;
  }
  std::vector<std::vector<const AddedToken*>> by_first(256);
  for (const AddedToken* a : usable)
    by_first[static_cast<unsigned char>(a->content[0])].push_back(a);
  size_t plain_begin = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    for (const AddedToken* a : by_first[static_cast<unsigned char>(text[i])])
      if (text.substr(i, a->content.size()) == a->content &&
          (!best || a->content.size() > best->content.size()))
        best = a;
    if (!best) {
      ++i;
      continue;
    }
    if (i > plain_begin) out.push_back({text.substr(plain_begin, i - plain_begin), -1});
    out.push_back({text.substr(i, best->content.size()), best->id});
    i += best->content.size();
    plain_begin = i;
  }
  if (text.size() > plain_begin) out.push_back({text.substr(plain_begin), -1});
  return out;
}

void check_utf8(std::string_view text, const std::string& source) {
  const size_t bad = utf8::first_invalid(text);
  if (bad != std::string_view::npos)
    throw Error("text to tokenize with " + source + " is not valid UTF-8 (byte " +
                std::to_string(bad) + ")");
}

}  // namespace detail

namespace detail {

std::string read_tokenizer_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read tokenizer file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_tokenizer_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read tokenizer file '" + path + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("tokenizer file '" + path + "' is not valid JSON (" + e.what() + ")");
  }
}

std::string json_string(const nlohmann::json& obj, const char* key, const std::string& fallback,
                        const std::string& where) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
  if (!obj[key].is_string()) throw Error(where + ": " + key + " must be a string");
  return obj[key].get<std::string>();
}

bool json_bool(const nlohmann::json& obj, const char* key, bool fallback,
               const std::string& where) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
  if (!obj[key].is_boolean()) throw Error(where + ": " + key + " must be true or false");
  return obj[key].get<bool>();
}

void check_id_space(int64_t id_space, size_t tokens, const std::string& where) {
  const int64_t limit = 2 * static_cast<int64_t>(tokens) + 1024;
  if (id_space > limit)
    throw Error(where + ": ids up to " + std::to_string(id_space - 1) + " for " +
                std::to_string(tokens) + " tokens leave most ids unused (ids must be below " +
                std::to_string(limit) + ", twice the tokens + 1024)");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Factory
// ---------------------------------------------------------------------------------------------
namespace {

namespace fs = std::filesystem;

// tokenizer_config.json's "do_lower_case", if the file and the key are there.
std::optional<bool> do_lower_case(const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  if (!fs::exists(path)) return std::nullopt;
  const nlohmann::json j = detail::read_tokenizer_json(path);
  if (!j.is_object() || !j.contains("do_lower_case")) return std::nullopt;
  if (!j["do_lower_case"].is_boolean())
    throw Error("'" + path + "': do_lower_case must be true or false");
  return j["do_lower_case"].get<bool>();
}

}  // namespace

bool has_tokenizer(const std::string& dir) {
  return fs::exists(dir + "/tokenizer.json") ||
         (fs::exists(dir + "/vocab.json") && fs::exists(dir + "/merges.txt")) ||
         fs::exists(dir + "/vocab.txt");
}

std::unique_ptr<TextTokenizer> load_tokenizer(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("model directory '" + dir + "' does not exist");
  const std::string tj = dir + "/tokenizer.json";
  if (fs::exists(tj)) {
    const nlohmann::json j = detail::read_tokenizer_json(tj);
    if (!j.is_object()) throw Error("tokenizer file '" + tj + "' must hold a JSON object");
    if (j.contains("type") && j["type"].is_string()) {
      if (j["type"] == "char") return std::make_unique<CharTokenizer>(tj);
      throw Error("tokenizer file '" + tj + "': type '" + j["type"].get<std::string>() +
                  "' is not supported (supported: char, or a Hugging Face tokenizer.json)");
    }
    if (!j.contains("model") || !j["model"].is_object() || !j["model"].contains("type") ||
        !j["model"]["type"].is_string())
      throw Error("tokenizer file '" + tj +
                  "' has no model.type (expected a Hugging Face tokenizer.json)");
    const std::string type = j["model"]["type"];
    // A JSON access the readers did not guard (a key of an unexpected type) still ends as an
    // Error naming the file, never as nlohmann's own exception.
    try {
      if (type == "BPE") return ByteLevelBpeTokenizer::from_hf_json(j, tj);
      if (type == "WordPiece") return WordPieceTokenizer::from_hf_json(j, tj);
    } catch (const nlohmann::json::exception& e) {
      throw Error("tokenizer file '" + tj + "': " + e.what());
    }
    throw Error("tokenizer file '" + tj + "': model.type '" + type +
                "' is not supported (supported: BPE, WordPiece)");
  }
  const std::string vj = dir + "/vocab.json", mt = dir + "/merges.txt";
  if (fs::exists(vj) || fs::exists(mt)) {
    if (!fs::exists(vj))
      throw Error("model directory '" + dir + "' has merges.txt but no vocab.json");
    if (!fs::exists(mt))
      throw Error("model directory '" + dir + "' has vocab.json but no merges.txt");
    return ByteLevelBpeTokenizer::from_gpt2_files(vj, mt);
  }
  const std::string vt = dir + "/vocab.txt";
  if (fs::exists(vt)) {
    WordPieceOptions o;
    if (auto lower = do_lower_case(dir)) o.lowercase = *lower;
    return WordPieceTokenizer::from_vocab_txt(vt, o);
  }
  throw Error("model directory '" + dir +
              "' has no tokenizer (looked for tokenizer.json, vocab.json + merges.txt, vocab.txt)");
}

}  // namespace tessera
