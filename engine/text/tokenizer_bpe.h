// GPT-2's byte-level BPE.
//
// Encoding: (1) added tokens are cut out of the text (engine/text/tokenizers.h); (2) each remaining
// piece is split into pre-tokens by GPT-2's pattern
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// run by PCRE2 in UTF + UCP mode (\s also takes U+0085, as the Oniguruma engine of the
// reference implementation does); (3) each pre-token's bytes start as one symbol per byte (the
// vocabulary spells byte b as the printable character bytes_to_unicode(b)), and the adjacent pair
// with the lowest merge rank is merged, leftmost first, until no pair has a merge. Pre-token ->
// ids results are cached.
//
// Decoding maps each token's characters back to bytes; the bytes of one character may be spread
// over several tokens (see StreamDecoder).
#pragma once

#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/text/tokenizers.h"

namespace tessera {

class ByteLevelBpeTokenizer final : public TextTokenizer {
 public:
  struct Merge {
    std::string left, right;
    std::string where;  // where it was read, for messages: "line 7", "model.merges[5]"
  };
  struct Config {
    std::vector<std::pair<std::string, int64_t>> vocab;  // token string, id
    std::vector<Merge> merges;                           // in rank order
    std::vector<AddedToken> added;
    bool add_prefix_space = false;  // a space before text that does not start with one
    bool ignore_merges = false;     // a pre-token that is a whole vocabulary entry is kept whole
    SpecialTokens special;
    std::string source;         // names the vocabulary's file in messages
    std::string merges_source;  // names the merges' file in messages (default: source)
  };

  // Validates `c` (every merge's parts and result in the vocabulary, a token for each of the
  // 256 bytes, ids unique and non-negative); throws Error naming c.source or c.merges_source.
  explicit ByteLevelBpeTokenizer(Config c);
  ~ByteLevelBpeTokenizer() override;

  // GPT-2's vocab.json + merges.txt. "<|endoftext|>", when present, is a special token and the
  // bos, eos and unk id (as Hugging Face's GPT2Tokenizer has it).
  static std::unique_ptr<ByteLevelBpeTokenizer> from_gpt2_files(const std::string& vocab_json,
                                                                const std::string& merges_txt);
  // A parsed Hugging Face tokenizer.json with model.type "BPE"; `path` names it in messages.
  // Supported: a ByteLevel pre-tokenizer (with its regex), no normalizer, added_tokens.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_hf_json(const nlohmann::json& j,
                                                             const std::string& path);

  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  std::string token(int64_t id) const override;
  std::optional<int64_t> token_id(std::string_view token) const override;
  bool is_special(int64_t id) const override;
  const char* kind() const override { return "bpe"; }
  bool append_piece(int64_t id, bool first, bool skip_special, std::string& out) const override;

  // The pre-tokens of a plain text (no added-token handling), for tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  std::vector<int64_t> do_encode(std::string_view text, bool add_special) const override;
  // Appends the ids of one pre-token.
  void encode_word(std::string_view word, std::vector<int64_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& ids) const;
  template <class F>
  void for_each_pre_token(std::string_view text, F&& f) const;

  struct Regex;
  std::unique_ptr<Regex> regex_;

  std::vector<std::string> tokens_;       // [vocab_size] id -> token string ("" for holes)
  std::vector<std::string> token_bytes_;  // [vocab_size] id -> the bytes it decodes to
  std::vector<uint8_t> present_;          // [vocab_size] 1 where an id has a token
  std::vector<uint8_t> special_flags_;    // [vocab_size] 1 for special tokens
  std::unordered_map<std::string, int32_t> ids_;
  int32_t byte_ids_[256];  // id of the single-byte token of each byte
  struct MergeResult {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, MergeResult> merges_;  // (left id << 32 | right id) -> result
  std::vector<AddedToken> added_;
  bool add_prefix_space_, ignore_merges_;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // pre-token -> ids
};

// GPT-2's reversible map from bytes to printable code points: the printable Latin-1 bytes
// ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the other 68 to U+0100 + n in byte order.
char32_t gpt2_byte_to_unicode(uint8_t b);

}  // namespace tessera
