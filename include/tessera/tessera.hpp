// Tessera's C++ API: the one header a C++ program includes.
//
//   tessera::Model model("models/demo-dates", {.threads = 2});   // loaded once, immutable
//   (ModelOptions::dtype = "int8" or "bf16": reduced-precision GEMM weights)
//   tessera::Session session(model);                             // one per thread / request
//   std::string text = session.complete("1 May 2020");           // generation, greedy
//   auto out = session.run({{"src_ids", {tessera::DType::i64, {1, 4}, ids}}, ...});
//
// Threads. A Model is immutable after load and may be shared by any number of threads (copies of
// a Model share the same weights). A Session holds the state of one request or conversation (its
// activation arenas and memory plans, KV caches) and is used by one thread at a time; sessions on
// one model run at once without waiting for each other, and a request gives the same result
// (bit for bit) whether it runs alone or beside others. The kernels' threads are shared: a
// session's kernel runs on the model's thread count while no other session uses them, on its
// calling thread alone otherwise, so concurrent sessions never oversubscribe the cores.
//
// Errors. Every failure is a tessera::Error whose message names what was wrong (the file, tensor,
// option or limit); a generation stopped by its callback ends with tessera::Cancelled.
#ifndef TESSERA_TESSERA_HPP
#define TESSERA_TESSERA_HPP

#include <tessera/version.h>
#include <tessera/types.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera {

// The library's version, "MAJOR.MINOR.PATCH" (TESSERA_VERSION_STRING of the headers it was built
// with).
TESSERA_API const char* version();

// Error, Cancelled, DType, dtype_name, dtype_size, EarlyStopping, FinishReason and
// finish_reason_name: <tessera/types.hpp>.

// A row-major contiguous tensor in memory. As an input it describes the caller's buffer, which
// run() reads in place (no copy) and which must stay valid during the call. As an output it holds
// its data: `owner` keeps it alive, and copies of the view share it.
struct TESSERA_API TensorView {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;  // outputs: the storage; inputs: may be empty

  int64_t numel() const;  // product of the shape (1 for rank 0)
  size_t nbytes() const;  // numel() * dtype_size(dtype)
  template <class T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};
using NamedTensors = std::map<std::string, TensorView>;

struct ModelOptions {
  int threads = 0;     // kernel threads; 0: every core (what OpenMP reports)
  std::string isa;     // kernels: "" (the best this CPU has), "avx512", "avx2" or "generic"
  std::string passes;  // graph passes: "" (the default pipeline), "none", or a comma-separated
                       // list as TESSERA_PASSES takes (`tessera inspect` shows what ran)
  std::string dtype;   // GEMM weights: "" (auto: what the directory holds, f32 for an ordinary
                       // checkpoint, bf16/int8 for one `tessera quantize` wrote), "f32", "bf16",
                       // "int8" (per output channel); activations stay f32
};

enum class Method { greedy, sample, beam };

// The options of `tessera generate`, with its defaults and its checks (an invalid combination
// throws Error naming the option).
struct GenerateOptions {
  int64_t max_new_tokens = 0;  // per sequence, eos included; 0: 64, or what the model's
                               // positions allow after the longest prompt
  Method method = Method::greedy;
  float temperature = 1.0f;         // sample: logits / T, T > 0
  int64_t top_k = 0;                // sample: keep the K most likely tokens (0: off)
  float top_p = 1.0f;               // sample: nucleus of probability >= P (1: off)
  float repetition_penalty = 1.0f;  // CTRL's penalty on tokens seen before (1: off)
  uint64_t seed = 0;                // sample: the same seed gives the same text
  int64_t num_beams = 4;            // beam
  float length_penalty = 1.0f;      // beam: rank by logprob / length^A
  EarlyStopping early_stopping = EarlyStopping::heuristic;
  int64_t num_return_sequences = 1;  // beam's N best, or N samples
  std::vector<std::string> stop;     // stop a sequence once its text contains one of these
  int64_t batch_size = 64;           // prompts generated together
};

struct Sequence {
  std::string text;          // the generated text (empty for generate_ids)
  std::vector<int64_t> ids;  // the generated tokens, without the eos that ended them
  FinishReason finish = FinishReason::length;
  double score = 0;    // beam: logprob / length^length_penalty; else logprob
  double logprob = 0;  // summed log-probability of the tokens (eos included)
};
struct Completion {
  std::vector<Sequence> sequences;  // num_return_sequences of them; beam: best first
};

// One generated token, as soon as it is chosen (greedy and sample; beam search streams nothing).
struct Token {
  size_t prompt = 0;    // index of the prompt
  size_t sequence = 0;  // index of the sequence of that prompt
  int64_t id = 0;
  std::string text;  // the text this token completes (may be empty: a UTF-8 character spread
                     // over several tokens comes with its last one); the pieces of a sequence
                     // concatenate to its text
};
// Return false to stop the generation (it then throws Cancelled).
using TokenCallback = std::function<bool(const Token&)>;

struct EmbedOptions {
  Pooling pooling = Pooling::cls;  // [CLS]'s hidden state, the mean over tokens, or pooler_output
  bool normalize = false;          // L2-normalize each vector
  int64_t batch_size = 32;         // texts run together (padding is removed inside the model)
};

// A model directory (config.json, model.safetensors, tokenizer files), loaded once.
class TESSERA_API Model {
 public:
  // Loads and checks every tensor, builds and optimizes the graphs, packs the weights. Throws
  // Error naming the file or tensor that is wrong.
  explicit Model(const std::string& directory, const ModelOptions& options = {});
  ~Model();
  Model(const Model&);  // shares the loaded model
  Model& operator=(const Model&);
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  std::string family() const;     // config.json's model_type: "transformer", "gpt2", "bert"
  std::string directory() const;  // as given
  int threads() const;            // the kernel threads its sessions use
  bool can_generate() const;      // a token model: gpt2, or transformer with embeddings
  bool can_embed() const;         // bert
  bool has_tokenizer() const;     // tokenizer files in the directory
  std::string dtype() const;      // the type its GEMM weights run as: "f32", "bf16" or "int8"

  // Text to token ids and back with the directory's tokenizer (as `tessera tokenize`): with
  // `special`, encoding adds the model's special tokens and decoding writes them.
  std::vector<int64_t> tokenize(const std::string& text, bool special = false) const;
  std::string detokenize(const std::vector<int64_t>& ids, bool special = false) const;

  struct Impl;

 private:
  friend class Session;
  std::shared_ptr<const Impl> impl_;
};

// The state of one request or conversation on a model; one thread at a time.
class TESSERA_API Session {
 public:
  explicit Session(const Model& model);  // keeps the model alive
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Model& model() const;

  // One forward pass: named tensors in and out, the names, dtypes and shapes of `tessera run`
  // (README). Inputs are read in place.
  NamedTensors run(const NamedTensors& inputs);

  // Generation from text prompts (the model's tokenizer) or from token ids, every method and
  // option of `tessera generate`; one Completion per prompt, in order. `on_token` streams.
  std::vector<Completion> generate(const std::vector<std::string>& prompts,
                                   const GenerateOptions& options = {},
                                   const TokenCallback& on_token = {});
  std::vector<Completion> generate_ids(const std::vector<std::vector<int64_t>>& prompts,
                                       const GenerateOptions& options = {},
                                       const TokenCallback& on_token = {});
  // One prompt, its first sequence's text.
  std::string complete(const std::string& prompt, const GenerateOptions& options = {},
                       const TokenCallback& on_token = {});

  // Pooled vectors of texts (a bert model's tokenizer adds [CLS] ... [SEP]) or of token ids
  // (taken as they are): F32 [n, hidden].
  TensorView embed(const std::vector<std::string>& texts, const EmbedOptions& options = {});
  TensorView embed_ids(const std::vector<std::vector<int64_t>>& inputs,
                       const EmbedOptions& options = {});

  // Bytes of activation memory this session holds (its arenas; KV caches live per generate call).
  size_t arena_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera

#endif  // TESSERA_TESSERA_HPP
