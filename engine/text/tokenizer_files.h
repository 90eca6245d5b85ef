// Reading a tokenizer's files (vocab.txt, merges.txt, vocab.json, tokenizer.json), shared by the
// tokenizers of this folder: errors name the file, and whether it was missing or not JSON.
#pragma once

#include <cstddef>
#include <cstdint>
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

// Tokenizers index their tokens by id in dense arrays of `id_space` (largest id + 1) entries;
// real vocabularies use nearly every id. Throws Error naming `where` when the ids are mostly
// unused (id_space > 2 x tokens + 1024): a file with one id of 40 million among 300 tokens
// would otherwise make arrays of 40 million entries (found by fuzz_tokenizer_files: 12 s and
// 1.3 GB for a 1 KB tokenizer.json).
void check_id_space(int64_t id_space, size_t tokens, const std::string& where);

}  // namespace tessera::detail
