// The types the C++ API shares with the engine inside: the exception classes, element types and
// the enums of generation. Included by <tessera/tessera.hpp>; a program includes that one.
#ifndef TESSERA_TYPES_HPP
#define TESSERA_TYPES_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#ifndef TESSERA_API
#define TESSERA_API __attribute__((visibility("default")))
#endif

namespace tessera {

// Bad input of any kind: the message names the file, tensor, option or limit and what was expected.
class TESSERA_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A generation stopped because its token callback asked it to.
class TESSERA_API Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& what) : Error(what) {}
};

// Element types: the safetensors names F32, F16, BF16, I64, I32, U8, BOOL, I8, in the order of
// the C ABI's tessera_dtype. (I8: the int8 weights of a quantized model directory.)
enum class DType : uint8_t { f32, f16, bf16, i64, i32, u8, boolean, i8 };
TESSERA_API size_t dtype_size(DType dtype);  // bytes per element
TESSERA_API const char* dtype_name(
    DType dtype);  // "F32", "F16", "BF16", "I64", "I32", "U8", "BOOL", "I8"

// Beam search: when a prompt stops once it holds num_beams finished hypotheses.
enum class EarlyStopping {
  // Hugging Face's early_stopping=False (its default): stop when the best running beam, scored
  // at its current length, is no better than the worst kept hypothesis. Fast; may miss a
  // longer hypothesis that would have scored better under a positive length penalty.
  heuristic,
  // Hugging Face's early_stopping=True: stop as soon as num_beams hypotheses are finished.
  first,
  // Hugging Face's early_stopping="never": stop only when no running beam can possibly beat the
  // worst kept hypothesis (an exact bound: log-probabilities only decrease, and the length
  // penalty is bounded over the lengths still reachable). Same result as running to the end.
  never,
};

// How an embedding pools a text's hidden states: [CLS]'s, their mean over the text's tokens, or
// the model's pooler_output (tanh(dense([CLS])), when the checkpoint has a pooler).
enum class Pooling { cls, mean, pooler };

// Why a generated sequence ended: an eos token, a stop string in its text, or the token budget.
enum class FinishReason { eos, stop_string, length };
TESSERA_API const char* finish_reason_name(FinishReason reason);  // "eos", "stop_string", "length"

}  // namespace tessera

#endif  // TESSERA_TYPES_HPP
