// Character-level tokenizer (the demo models'): tokenizer.json
//   {"type": "char", "tokens": ["<pad>", "<bos>", "<eos>", "<unk>", "a", ...], "unk_id": 3}
// A token id is the index of its string; text is split into Unicode code points (UTF-8).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tessera {

class CharTokenizer {
 public:
  // Reads `path`; throws Error naming the file on malformed content.
  explicit CharTokenizer(const std::string& path);
  // Ids of each code point of `text` (unk_id for characters outside the vocabulary).
  std::vector<int64_t> encode(const std::string& text) const;
  // Concatenates the tokens of `ids`; ids out of range throw Error.
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  std::vector<std::string> tokens_;
  std::map<std::string, int64_t> ids_;
  int64_t unk_id_ = -1;
  std::string path_;
};

}  // namespace tessera
