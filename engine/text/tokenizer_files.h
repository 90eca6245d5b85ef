// Reading a tokenizer's files (vocab.txt, merges.txt, vocab.json, tokenizer.json), shared by the
// tokenizers of this folder: errors name the file, and whether it was missing or not JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tessera::detail {

// The whole file as bytes; throws Error "cannot read tokenizer file '<path>'".
std::string read_tokenizer_text(const std::string& path);
// The file parsed as JSON; throws Error naming the file when it cannot be read or parsed.
nlohmann::json read_tokenizer_json(const std::string& path);

// obj[key] when it is there (and not null), else `fallback`; Error "<where>: <key> must be a
// string" (or "true or false") when it holds another type. nlohmann's value(key, fallback)
// throws its own type_error instead, which names neither the file nor the key.
std::string json_string(const nlohmann::json& obj, const char* key, const std::string& fallback,
                        const std::string& where);
bool json_bool(const nlohmann::json& obj, const char* key, bool fallback, const std::string& where);

}  // namespace tessera::detail
