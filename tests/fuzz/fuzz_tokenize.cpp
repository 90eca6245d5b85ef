// Arbitrary bytes (invalid UTF-8 included) -> encoding and (streaming) decoding with the real
// vocabularies of tests/data/tokenizers (GPT-2 BPE, BERT WordPiece) and the demo model's char
// tokenizer. The first byte picks the tokenizer (bits 0-1), add_special (bit 2) and whether the
// rest is decoded as ids (bit 3: little-endian u16 per id, modulo the vocabulary) or encoded.
// Checks: byte-level BPE round-trips valid UTF-8 exactly; streaming decode == decode.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/io/error.h"
#include "engine/text/tokenizers.h"

namespace {

struct Tokenizers {
  std::unique_ptr<tessera::TextTokenizer> bpe, wordpiece, chars;
};

const Tokenizers& tokenizers() {
  static const Tokenizers t{tessera::load_tokenizer(TESSERA_TOKENIZER_DATA "/gpt2"),
                            tessera::load_tokenizer(TESSERA_TOKENIZER_DATA "/bert"),
                            tessera::load_tokenizer(TESSERA_DEMO_MODEL)};
  return t;
}

void check_stream(const tessera::TextTokenizer& tok, const std::vector<int64_t>& ids,
                  bool skip_special) {
  const std::string whole = tok.decode(ids, skip_special);
  tessera::StreamDecoder stream(tok, skip_special);
  std::string streamed;
  for (int64_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != whole) __builtin_trap();
  // Decoded text is always valid UTF-8 (invalid bytes become U+FFFD).
  if (tessera::utf8::first_invalid(whole) != std::string_view::npos) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Tokenizers& t = tokenizers();
  const uint8_t mode = data[0];
  const tessera::TextTokenizer& tok = (mode & 3) == 0   ? *t.bpe
                                      : (mode & 3) == 1 ? *t.wordpiece
                                                        : *t.chars;
  const bool special = (mode & 4) != 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode & 8) {
    std::vector<int64_t> ids;
    for (size_t i = 0; i + 1 < text.size(); i += 2) {
      const auto v = static_cast<uint8_t>(text[i]) | (static_cast<uint8_t>(text[i + 1]) << 8);
      ids.push_back(v % tok.vocab_size());
    }
    check_stream(tok, ids, special);
    return 0;
  }
  std::vector<int64_t> ids;
  try {
    ids = tok.encode(text, special);
  } catch (const tessera::Error&) {
    // BPE and WordPiece refuse only invalid UTF-8 (the char tokenizer also refuses characters
    // it has no token for).
    if (&tok != t.chars.get() && tessera::utf8::first_invalid(text) == std::string_view::npos)
      __builtin_trap();
    return 0;
  }
  for (int64_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  check_stream(tok, ids, special);
  if (&tok == t.bpe.get() && !special && tok.decode(ids) != text) __builtin_trap();
  return 0;
}
