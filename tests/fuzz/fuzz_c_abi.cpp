// The C ABI (include/tessera/tessera.h) with arbitrary tensor descriptors: tessera_run on the demo
// model (src_ids, tgt_ids, masks) and the tiny gpt2 and bert checkpoints of tests/fuzz/data,
// then tessera_generate with arbitrary options and prompt bytes. Every call must return a status
// (TESSERA_OK or an error with a one-line tessera_last_error()), never crash or read out of
// bounds.
//
// The input is a little program of descriptors, read byte by byte (missing bytes read as 0):
//   model (1 byte: which of the three), n (1 byte: 0..6 tensors), then per tensor:
//     name (1 byte: one of the names the three models take, an unknown one, or NULL),
//     dtype (1 byte: any int value, valid or not), rank (1 byte, signed: -2..9),
//     dims (rank x 4 bytes, signed: negative, zero, huge), data (1 byte: NULL or a buffer).
//   A buffer holds exactly what the shape says (filled from the input bytes) when that is at
//   most 1 MiB; larger shapes get a NULL data pointer (a caller's buffer always matches its
//   shape: the ABI cannot check that, so the fuzzer keeps to it). A "rank mismatch" flag byte
//   may hand over a shape array shorter than the rank claims only when the rank is 0.
// What is left after the tensors is the prompt of a generate call with options from its first
// bytes.
#include <tessera/tessera.h>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Reader {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  int32_t i32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(byte()) << (8 * i);
    return static_cast<int32_t>(v);
  }
};

const char* const kNames[] = {"src_ids",
                              "tgt_ids",
                              "src",
                              "tgt",
                              "src_mask",
                              "tgt_mask",
                              "memory_mask",
                              "src_key_padding_mask",
                              "tgt_key_padding_mask",
                              "input_ids",
                              "attention_mask",
                              "token_type_ids",
                              "position_ids",
                              "logits",
                              "no_such_input"};
constexpr size_t kNameCount = sizeof(kNames) / sizeof(kNames[0]);

struct Loaded {
  tessera_model* model[3] = {};
  tessera_session* session[3] = {};
  Loaded() {
    const char* dirs[3] = {TESSERA_DEMO_MODEL, TESSERA_FUZZ_DATA "/gpt2",
                           TESSERA_FUZZ_DATA "/bert"};
    for (int i = 0; i < 3; ++i)
      if (tessera_model_load(dirs[i], 1, &model[i]) != TESSERA_OK ||
          tessera_session_create(model[i], &session[i]) != TESSERA_OK)
        __builtin_trap();  // the fuzz models themselves must load
  }
};

Loaded& loaded() {
  static Loaded l;
  return l;
}

// A status must come with a one-line message, and success with none.
void check_status(tessera_status s) {
  const char* e = tessera_last_error();
  if (s < TESSERA_OK || s > TESSERA_INTERNAL) __builtin_trap();
  if (s == TESSERA_INTERNAL) __builtin_trap();  // bad input is never an internal error
  if (s != TESSERA_OK && (e[0] == '\0' || std::strchr(e, '\n'))) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)loaded();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader r{data, size};
  tessera_session* session = loaded().session[r.byte() % 3];
  const int n = r.byte() % 7;
  std::vector<tessera_tensor> tensors(static_cast<size_t>(n));
  std::vector<std::vector<int64_t>> shapes(static_cast<size_t>(n));
  std::vector<std::vector<uint8_t>> buffers(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    tessera_tensor& t = tensors[i];
    const uint8_t name = r.byte();
    t.name = name == 255 ? nullptr : kNames[name % kNameCount];
    // Any int, valid or not, written as a C caller would (an out-of-range enum value is fine in
    // C; in C++ it may only be copied as bytes).
    const int dtype = static_cast<int8_t>(r.byte()) % 9;  // -8..8
    std::memcpy(&t.dtype, &dtype, sizeof dtype);
    t.rank = static_cast<int8_t>(r.byte()) % 10;  // -9..9
    const int dims = t.rank > 0 ? t.rank : 0;
    uint64_t numel = 1;
    bool small = true;
    for (int d = 0; d < dims; ++d) {
      // Mostly small dimensions, sometimes negative or huge.
      const uint8_t kind = r.byte();
      int64_t v = kind < 200   ? kind % 9
                  : kind < 230 ? -static_cast<int64_t>(kind % 5) - 1
                               : static_cast<int64_t>(r.i32()) << 20;
      shapes[i].push_back(v);
      if (v < 0 || (v > 0 && numel > (uint64_t{1} << 20) / static_cast<uint64_t>(v)))
        small = false;
      else
        numel *= static_cast<uint64_t>(v);
    }
    t.shape = dims == 0 && r.byte() % 2 ? nullptr : shapes[i].data();
    const size_t elem = dtype == TESSERA_I64                            ? 8
                        : dtype == TESSERA_F32 || dtype == TESSERA_I32  ? 4
                        : dtype == TESSERA_F16 || dtype == TESSERA_BF16 ? 2
                                                                        : 1;
    const bool give_data = r.byte() % 8 != 0;
    if (give_data && small && t.rank >= 0) {
      buffers[i].resize(static_cast<size_t>(numel) * elem + 1);
      for (auto& b : buffers[i]) b = r.byte();
      t.data = buffers[i].data();
    } else {
      t.data = nullptr;
    }
  }
  tessera_tensor* out = nullptr;
  size_t n_out = 0;
  const tessera_status s = tessera_run(session, tensors.data(), tensors.size(), &out, &n_out);
  check_status(s);
  if (s == TESSERA_OK) {
    for (size_t i = 0; i < n_out; ++i)
      if (out[i].name == nullptr || out[i].rank < 0 || (out[i].rank > 0 && !out[i].shape))
        __builtin_trap();
    tessera_tensors_free(out, n_out);
  } else if (out != nullptr) {
    __builtin_trap();  // outputs untouched on failure
  }

  // A generation with arbitrary options and the rest of the bytes as the prompt.
  tessera_generate_options o = tessera_generate_defaults();
  o.max_new_tokens = static_cast<int8_t>(r.byte()) % 6;
  o.method = static_cast<int8_t>(r.byte()) % 4;
  o.temperature = static_cast<float>(static_cast<int8_t>(r.byte())) / 16.0f;
  o.top_k = static_cast<int8_t>(r.byte());
  o.top_p = static_cast<float>(r.byte()) / 200.0f;
  o.repetition_penalty = static_cast<float>(static_cast<int8_t>(r.byte())) / 32.0f;
  o.seed = r.byte();
  o.num_beams = static_cast<int8_t>(r.byte()) % 5;
  const std::string prompt(reinterpret_cast<const char*>(r.p), r.n > 64 ? 64 : r.n);
  char* text = nullptr;
  const tessera_status g = tessera_generate(session, prompt.c_str(), &o, nullptr, nullptr, &text);
  check_status(g);
  if ((g == TESSERA_OK) != (text != nullptr)) __builtin_trap();
  tessera_string_free(text);
  return 0;
}
