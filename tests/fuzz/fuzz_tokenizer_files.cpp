// Tokenizer files -> load_tokenizer, then a short encode/decode with whatever loaded.
// The first byte picks the files the rest of the input becomes (parts split at NUL bytes):
//   0: vocab.json NUL merges.txt            (GPT-2 byte-level BPE)
//   1: vocab.txt [NUL tokenizer_config.json] (BERT WordPiece)
//   2: tokenizer.json                        (Hugging Face BPE / WordPiece, or the demo's char)
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/io/error.h"
#include "engine/text/tokenizers.h"
#include "fuzz_util.h"

namespace {

const tessera::fuzz::ScratchDir& scratch() {
  static const tessera::fuzz::ScratchDir dir;
  return dir;
}

std::string_view next_part(std::string_view& rest) {
  const size_t nul = rest.find('\0');
  std::string_view part = rest.substr(0, nul);
  rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
  return part;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using tessera::fuzz::remove_file;
  using tessera::fuzz::write_file;
  const auto& dir = scratch();
  for (const char* f :
       {"vocab.json", "merges.txt", "vocab.txt", "tokenizer_config.json", "tokenizer.json"})
    remove_file(dir.file(f));
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      write_file(dir.file("vocab.json"), next_part(rest));
      write_file(dir.file("merges.txt"), rest);
      break;
    case 1:
      write_file(dir.file("vocab.txt"), next_part(rest));
      if (!rest.empty()) write_file(dir.file("tokenizer_config.json"), rest);
      break;
    default:
      write_file(dir.file("tokenizer.json"), rest);
      break;
  }
  try {
    auto tok = tessera::load_tokenizer(dir.path());
    for (bool special : {false, true}) {
      auto ids =
          tok->encode("Hello, world! [CLS] <|endoftext|> caf\xc3\xa9 \xe4\xb8\xad 12", special);
      std::string text = tok->decode(ids, special);
      tessera::StreamDecoder stream(*tok, special);
      std::string streamed;
      for (int64_t id : ids) streamed += stream.push(id);
      streamed += stream.flush();
      if (streamed != text) __builtin_trap();  // the StreamDecoder contract
    }
    const int64_t n = tok->vocab_size();
    for (int64_t id = 0; id < n && id < 64; ++id) {
      (void)tok->token(id);
      (void)tok->is_special(id);
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
