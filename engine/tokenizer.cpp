#include "engine/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace tessera {

CharTokenizer::CharTokenizer(const std::string& path) : path_(path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read tokenizer '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("tokenizer '" + path + "' is not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || j.value("type", "") != "char" || !j.contains("tokens") ||
      !j["tokens"].is_array())
    throw Error("tokenizer '" + path + "' must be {\"type\": \"char\", \"tokens\": [...]}");
  for (const auto& t : j["tokens"]) {
    if (!t.is_string()) throw Error("tokenizer '" + path + "': every token must be a string");
    ids_.emplace(t.get<std::string>(), static_cast<int64_t>(tokens_.size()));
    tokens_.push_back(t.get<std::string>());
  }
  unk_id_ = j.value("unk_id", int64_t{-1});
  if (unk_id_ >= size()) throw Error("tokenizer '" + path + "': unk_id is out of range");
}

std::vector<int64_t> CharTokenizer::encode(const std::string& text) const {
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
    auto it = ids_.find(text.substr(i, len));
    if (it != ids_.end()) {
      out.push_back(it->second);
    } else if (unk_id_ >= 0) {
      out.push_back(unk_id_);
    } else {
      throw Error("tokenizer '" + path_ + "' has no token for '" + text.substr(i, len) +
                  "' and no unk_id");
    }
    i += len;
  }
  return out;
}

std::string CharTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id < 0 || id >= size())
      throw Error("token id " + std::to_string(id) + " is outside the tokenizer's " +
                  std::to_string(size()) + " tokens");
    out += tokens_[static_cast<size_t>(id)];
  }
  return out;
}

}  // namespace tessera
