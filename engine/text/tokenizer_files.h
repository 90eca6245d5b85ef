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

}  // namespace tessera::detail
