#include "engine/text/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/io/error.h"

namespace tessera {

CharTokenizer::CharTokenizer(const std::string& path) : path_(path) {
  source_ = "tokenizer '" + path + "'";
  std::ifstream in(path);
  if (!in) throw Error("cannot read tokenizer '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("tokenizer '" + path + "' is not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("type") || j["type"] != "char" || !j.contains("tokens") ||
      !j["tokens"].is_array())
    throw Error("tokenizer '" + path + "' must be {\"type\": \"char\", \"tokens\": [...]}");
  for (const auto& t : j["tokens"]) {
    if (!t.is_string()) throw Error("tokenizer '" + path + "': every token must be a string");
    ids_.emplace(t.get<std::string>(), static_cast<int64_t>(tokens_.size()));
    tokens_.push_back(t.get<std::string>());
  }
  if (j.contains("unk_id") && !j["unk_id"].is_number_integer())
    throw Error("tokenizer '" + path + "': unk_id must be an integer");
  unk_id_ = j.value("unk_id", int64_t{-1});
  if (unk_id_ >= size()) throw Error("tokenizer '" + path + "': unk_id is out of range");
  special_flags_.assign(tokens_.size(), 0);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& t = tokens_[i];
    if (t.size() > 2 && t.front() == '<' && t.back() == '>') special_flags_[i] = 1;
  }
  if (unk_id_ >= 0) {
    special_flags_[static_cast<size_t>(unk_id_)] = 1;
    special_.unk = unk_id_;
  }
  auto named = [&](const char* name) -> std::optional<int64_t> {
    auto it = ids_.find(name);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  };
  special_.pad = named("<pad>");
  special_.bos = named("<bos>");
  special_.eos = named("<eos>");
}

std::vector<int64_t> CharTokenizer::do_encode(std::string_view text, bool) const {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t len = lead < 0x80           ? 1
                 : (lead >> 5) == 0x6  ? 2
                 : (lead >> 4) == 0xe  ? 3
                 : (lead >> 3) == 0x1e ? 4
                                       : 1;
    if (i + len > text.size()) len = text.size() - i;
    const std::string_view ch = text.substr(i, len);
    auto it = ids_.find(ch);
    if (it != ids_.end()) {
      out.push_back(it->second);
    } else if (unk_id_ >= 0) {
      out.push_back(unk_id_);
    } else {
      throw Error("tokenizer '" + path_ + "' has no token for '" + std::string(ch) +
                  "' and no unk_id");
    }
    i += len;
  }
  return out;
}

std::string CharTokenizer::token(int64_t id) const {
  check_id(id);
  return tokens_[static_cast<size_t>(id)];
}

std::optional<int64_t> CharTokenizer::token_id(std::string_view token) const {
  auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

bool CharTokenizer::is_special(int64_t id) const {
  return id >= 0 && id < size() && special_flags_[static_cast<size_t>(id)];
}

bool CharTokenizer::append_piece(int64_t id, bool, bool skip_special, std::string& out) const {
  if (id < 0 || id >= size())
    throw Error("token id " + std::to_string(id) + " is outside the tokenizer's " +
                std::to_string(size()) + " tokens");
  if (skip_special && special_flags_[static_cast<size_t>(id)]) return false;
  out += tokens_[static_cast<size_t>(id)];
  return true;
}

}  // namespace tessera
