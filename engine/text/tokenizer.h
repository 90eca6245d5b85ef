// Character-level tokenizer (the demo models'): tokenizer.json
//   {"type": "char", "tokens": ["<pad>", "<bos>", "<eos>", "<unk>", "a", ...], "unk_id": 3}
// A token id is the index of its string; text is split into Unicode code points (UTF-8).
// Tokens spelled "<...>" of more than one character are special: "<pad>", "<bos>", "<eos>" give
// the pad, bos and eos ids; unk_id is special too. add_special changes nothing when encoding.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/text/tokenizers.h"

namespace tessera {

class CharTokenizer final : public TextTokenizer {
 public:
  // Reads `path`; throws Error naming the file on malformed content.
  explicit CharTokenizer(const std::string& path);
  // encode(text): ids of each code point of `text` (unk_id for characters outside the
  // vocabulary; no unk_id: Error). decode(ids): the concatenated tokens; ids out of range throw.
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }

  int64_t vocab_size() const override { return size(); }
  std::string token(int64_t id) const override;
  std::optional<int64_t> token_id(std::string_view token) const override;
  bool is_special(int64_t id) const override;
  const char* kind() const override { return "char"; }
  bool append_piece(int64_t id, bool first, bool skip_special, std::string& out) const override;

 private:
  std::vector<int64_t> do_encode(std::string_view text, bool add_special) const override;

  std::vector<std::string> tokens_;
  std::vector<uint8_t> special_flags_;
  std::map<std::string, int64_t, std::less<>> ids_;
  int64_t unk_id_ = -1;
  std::string path_;
};

}  // namespace tessera
