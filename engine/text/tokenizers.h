// engine/text/: owns the tokenizers and streaming decode. May use: engine/io/ (errors).
// Knows nothing of graphs or models; models/ and tools/ pick a tokenizer per model directory.
//
// Text tokenizers behind one interface, and the factory that picks one from a model directory.
//
//   auto tok = tessera::load_tokenizer("models/gpt2");   // tokenizer.json, vocab.json +
//   auto ids = tok->encode("Hello world");                // merges.txt, or vocab.txt
//   std::string text = tok->decode(ids);
//
// Kinds (each in its own file):
//   * ByteLevelBpeTokenizer (engine/text/tokenizer_bpe.h): GPT-2's byte-level BPE.
//   * WordPieceTokenizer (engine/text/tokenizer_wordpiece.h): BERT's basic tokenizer + WordPiece.
//   * CharTokenizer (engine/text/tokenizer.h): the demo models' one-token-per-code-point
//   vocabulary.
//
// Special tokens. `encode(text, add_special)`: with add_special = false (the default) the text is
// plain text: "<|endoftext|>" or "[CLS]" written in it are tokenized as ordinary characters. With
// add_special = true the special tokens' strings found in the text become their ids, and the
// tokenizer adds what its model expects around a sequence (WordPiece: [CLS] ... [SEP]; GPT-2 and
// char: nothing, as Hugging Face's GPT-2 does). `decode(ids, skip_special)`: special tokens are
// written as their strings unless skip_special.
//
// Thread safety: a loaded tokenizer is immutable apart from internal caches guarded by a mutex;
// encode and decode may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// The special token ids a tokenizer knows; absent ones are std::nullopt.
struct SpecialTokens {
  std::optional<int64_t> bos, eos, pad, unk, cls, sep, mask;
};

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;

  // Token ids of `text`, which must be UTF-8 (invalid UTF-8 throws Error naming the byte offset;
  // the char tokenizer is lenient, as it always was). See the file comment for add_special.
  std::vector<int64_t> encode(std::string_view text, bool add_special = false) const {
    return do_encode(text, add_special);
  }
  // The text of `ids`. Bytes that do not form valid UTF-8 (a character cut off between tokens,
  // or ids that do not fit together) become U+FFFD, one per maximal invalid subsequence, as
  // Rust's String::from_utf8_lossy does. Ids outside [0, vocab_size()) throw Error.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = false) const;

  // Number of ids: one more than the largest id.
  virtual int64_t vocab_size() const = 0;
  // The vocabulary string of `id` as stored (e.g. "Ġworld" for GPT-2, "##ing" for WordPiece);
  // throws Error when out of range.
  virtual std::string token(int64_t id) const = 0;
  // The id of a vocabulary string, if any.
  virtual std::optional<int64_t> token_id(std::string_view token) const = 0;
  // True for special (control) tokens: those decode(skip_special = true) drops.
  virtual bool is_special(int64_t id) const = 0;
  const SpecialTokens& special() const { return special_; }
  // "bpe", "wordpiece" or "char".
  virtual const char* kind() const = 0;
  // The file(s) it was read from, for messages.
  const std::string& source() const { return source_; }

  // Appends the bytes `id` adds to decoded text (possibly part of a UTF-8 character) to `out`.
  // `first`: no token has been written before it (WordPiece writes no space before the first
  // word). Returns false, appending nothing, when the id is skipped (special and skip_special).
  // Throws Error for an id out of range. Used by decode() and StreamDecoder.
  virtual bool append_piece(int64_t id, bool first, bool skip_special, std::string& out) const = 0;

 protected:
  virtual std::vector<int64_t> do_encode(std::string_view text, bool add_special) const = 0;
  // Throws Error unless 0 <= id < vocab_size().
  void check_id(int64_t id) const;

  SpecialTokens special_;
  std::string source_;
};

// Incremental decoding for streaming generation: feed ids one at a time, get back the text that
// is complete so far. A UTF-8 character whose bytes are spread over several tokens is held back
// until its last byte arrives. The concatenation of every push() and the final flush() equals
// decode(all ids, skip_special).
class StreamDecoder {
 public:
  explicit StreamDecoder(const TextTokenizer& tok, bool skip_special = false)
      : tok_(&tok), skip_special_(skip_special) {}
  // The text completed by `id` (often empty, or several characters).
  std::string push(int64_t id);
  // What is still held back (a truncated UTF-8 sequence becomes U+FFFD); then starts over.
  std::string flush();

 private:
  const TextTokenizer* tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

// Reads the tokenizer of a model directory, the first of:
//   tokenizer.json  Hugging Face format (model.type "BPE" with a ByteLevel pre-tokenizer, or
//                   "WordPiece"), or the demo's {"type": "char", ...}
//   vocab.json + merges.txt   GPT-2 byte-level BPE
//   vocab.txt       BERT WordPiece (lower-casing unless tokenizer_config.json says
//                   "do_lower_case": false)
// Throws Error naming the directory when none is there, or naming the file that is malformed.
std::unique_ptr<TextTokenizer> load_tokenizer(const std::string& dir);
// True if `dir` holds one of the files load_tokenizer reads.
bool has_tokenizer(const std::string& dir);

// A token matched as a whole in the text before any other processing (Hugging Face's
// "added_tokens"): special ones only when encoding with add_special, the others always.
struct AddedToken {
  int64_t id = -1;
  std::string content;
  bool special = true;
};

namespace detail {
// A piece of text to tokenize: plain text (id < 0) or one added token (its id).
struct Segment {
  std::string_view text;
  int64_t id;
};
// Splits `text` at the added tokens it contains (special ones only if with_special); at each
// position the longest matching token wins. Empty plain pieces are left out.
std::vector<Segment> split_added(std::string_view text, const std::vector<AddedToken>& added,
                                 bool with_special);
// Throws Error naming `source` and the byte offset if `text` is not valid UTF-8.
void check_utf8(std::string_view text, const std::string& source);
}  // namespace detail

// UTF-8 helpers shared by the tokenizers (exposed for tests).
namespace utf8 {
// Appends `in` to `out`, replacing every maximal invalid subsequence with U+FFFD. If `final` is
// false, a valid but incomplete sequence at the very end is not consumed. Returns the number of
// bytes of `in` consumed.
size_t append_lossy(std::string_view in, bool final, std::string& out);
// Byte offset of the first invalid UTF-8 sequence in `s`, or npos if `s` is valid.
size_t first_invalid(std::string_view s);
// Decodes valid UTF-8 (check first_invalid first) into code points.
std::u32string decode(std::string_view s);
void append(char32_t cp, std::string& out);
}  // namespace utf8

}  // namespace tessera
