// BERT's WordPiece tokenizer, as the reference implementation (Hugging Face tokenizers:
// BertNormalizer, BertPreTokenizer, WordPiece model and decoder) defines it.
//
// Encoding, on Unicode code points (utf8proc supplies categories, NFD and lower-casing):
//   1. clean_text: drop NUL, U+FFFD and control characters (categories Cc, Cf, Cn, Co, Cs, except
//      tab, newline, carriage return); every White_Space character becomes ' '.
//   2. handle_chinese_chars: a space on each side of every CJK ideograph (BERT's ranges).
//   3. strip_accents (default: as lowercase): NFD, then drop nonspacing marks (Mn).
//   4. lowercase: per code point (İ becomes "i̇" as in Rust's to_lowercase).
//   5. pre-tokenize: split on White_Space; every punctuation character (ASCII punctuation, or a
//      Unicode P* category) becomes a word of its own.
//   6. each word: longer than max_chars_per_word code points -> unk; otherwise greedy
//      longest-match-first over the vocabulary, continuations spelled with the prefix "##"; if
//      some part of the word has no match, the whole word is unk.
// add_special: special tokens written in the text ("[CLS]", ...) are recognised, and the result
// is wrapped as [CLS] ... [SEP].
//
// Decoding (the reference WordPiece decoder): the first token as is; after it, a "##" piece is
// glued to the previous one and any other token gets a space before it; with cleanup (default)
// each token's " ." " ?" " !" " ," lose the space (and " n't", " 'm", " 's", " 've", " 're",
// " ' " are tightened likewise). decode(encode(t)) is t normalized: lower-cased, accents
// stripped, words separated by one space, no space before . ? ! ,, unknown words as "[UNK]"
// (or dropped with skip_special).
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/text/tokenizers.h"

namespace tessera {

struct WordPieceOptions {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool lowercase = true;
  std::optional<bool> strip_accents;  // nullopt: same as lowercase
  std::string unk_token = "[UNK]";
  std::string prefix = "##";  // continuing-subword prefix
  int64_t max_chars_per_word = 100;
  bool cleanup = true;  // decoding: remove the space before punctuation
};

class WordPieceTokenizer final : public TextTokenizer {
 public:
  // vocab: (token, id) pairs; ids need not be contiguous; a token listed twice keeps its last id
  // for encoding. `added`: tokens matched whole in the text (special ones only with add_special).
  // Throws Error naming `source` (e.g. "tokenizer file 'x/vocab.txt'") if an id is negative or
  // shared, or the unk token is not in the vocabulary. Special ids: [CLS], [SEP], [PAD], [MASK]
  // by name, unk from options.unk_token.
  WordPieceTokenizer(const std::vector<std::pair<std::string, int64_t>>& vocab,
                     WordPieceOptions options, std::vector<AddedToken> added, std::string source);

  // BERT's vocab.txt: one token per line, the line number (from 0) is the id. [PAD], [UNK],
  // [CLS], [SEP] and [MASK], where present, are special tokens.
  static std::unique_ptr<WordPieceTokenizer> from_vocab_txt(const std::string& path,
                                                            const WordPieceOptions& options = {});
  // A parsed Hugging Face tokenizer.json with model.type "WordPiece"; `path` names it in
  // messages. Reads the BertNormalizer options and the WordPiece decoder's cleanup flag.
  static std::unique_ptr<WordPieceTokenizer> from_hf_json(const nlohmann::json& j,
                                                          const std::string& path);

  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  std::string token(int64_t id) const override;
  std::optional<int64_t> token_id(std::string_view token) const override;
  bool is_special(int64_t id) const override;
  const char* kind() const override { return "wordpiece"; }
  bool append_piece(int64_t id, bool first, bool skip_special, std::string& out) const override;
  const WordPieceOptions& options() const { return options_; }

  // Steps 1-5 alone: the normalized words of a plain text (for tests).
  std::vector<std::string> basic_tokenize(std::string_view text) const;

 private:
  std::vector<int64_t> do_encode(std::string_view text, bool add_special) const override;
  // Appends the ids of one normalized word (UTF-8) of `n_chars` code points.
  void wordpiece(const std::string& word, size_t n_chars, std::vector<int64_t>& out) const;
  template <class F>
  void for_each_word(std::string_view text, F&& f) const;

  WordPieceOptions options_;
  bool strip_accents_;
  std::vector<std::string> tokens_;     // [vocab_size] id -> token
  std::vector<uint8_t> present_;        // [vocab_size] 1 where an id has a token
  std::vector<uint8_t> special_flags_;  // [vocab_size]
  std::unordered_map<std::string, int64_t> ids_;
  std::vector<AddedToken> added_;
  int64_t unk_id_ = -1;
  size_t max_token_bytes_ = 0;  // the longest vocabulary entry: longer candidates cannot match
};

}  // namespace tessera
