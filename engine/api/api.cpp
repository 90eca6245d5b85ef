// The C++ API of include/tessera/tessera.hpp over models/ and engine/api/driver.h.
//
// A tessera::Model holds the loaded models::Model (immutable, shared), its tokenizer and its
// generation drivers; a tessera::Session holds a SessionSet (one GraphSession, i.e. arena and
// memory plans, per graph it runs). Every Session call binds its SessionSet and the model's
// thread count to the calling thread for the length of the call: the model's graphs then run on
// the session's own arenas, so sessions on one model never wait for each other.
#include <tessera/tessera.hpp>

#include <filesystem>
#include <optional>

#include "engine/api/driver.h"
#include "engine/graph/passes/passes.h"
#include "engine/io/limits.h"
#include "engine/io/model_dir.h"
#include "engine/text/tokenizers.h"
#include "kernels/kernels.h"
#include "models/model.h"

namespace tessera {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t TensorView::nbytes() const {
  return static_cast<size_t>(numel()) * dtype_size(dtype);
}

struct Model::Impl {
  std::string directory;
  int threads = 1;
  std::shared_ptr<const models::Model> model;
  std::shared_ptr<const TextTokenizer> tokenizer;  // null: no tokenizer files
  // Generation from text and from ids (unset when the model cannot generate); a text generator
  // that could not be made leaves the reason in text_error.
  std::optional<api::Generator> text_generator, ids_generator;
  std::string text_error, ids_error;
};

namespace {

kernels::Isa parse_isa(const std::string& name) {
  if (name == "avx512") return kernels::Isa::avx512;
  if (name == "avx2") return kernels::Isa::avx2;
  if (name == "generic") return kernels::Isa::generic;
  throw Error("ModelOptions::isa: '" + name + "' is not an ISA (avx512, avx2 or generic)");
}

// Runs f, turning the kernels' std::invalid_argument / runtime_error about their own arguments
// into Error (everything the API throws for bad input is a tessera::Error).
template <class F>
auto guarded(F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::invalid_argument& e) {
    throw Error(e.what());
  }
}

DecodingMethod to_internal(Method m) {
  switch (m) {
    case Method::sample:
      return DecodingMethod::sample;
    case Method::beam:
      return DecodingMethod::beam;
    case Method::greedy:
      break;
  }
  return DecodingMethod::greedy;
}

TensorView to_view(Tensor t) {
  TensorView v;
  v.dtype = t.dtype();
  v.shape = t.shape();
  auto keep = std::make_shared<Tensor>(std::move(t));
  v.data = keep->raw();
  v.owner = std::move(keep);
  return v;
}

}  // namespace

Model::Model(const std::string& directory, const ModelOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->directory = directory;
  if (options.threads < 0)
    throw Error("ModelOptions::threads must be >= 0 (0: every core), got " +
                std::to_string(options.threads));
  models::LoadOptions load;
  load.dtype = models::parse_weight_dtype(options.dtype, "ModelOptions::dtype");
  if (!options.isa.empty()) {
    const kernels::Isa isa = parse_isa(options.isa);
    if (!kernels::isa_supported(isa))
      throw Error("ModelOptions::isa '" + options.isa + "' cannot run on this CPU");
    if (!kernels::request_isa(isa))
      throw Error("ModelOptions::isa '" + options.isa + "': this process already runs the " +
                  kernels::isa_name(kernels::active_isa()) +
                  " kernels (the ISA is chosen once, by the first model loaded)");
  }
  impl->threads = options.threads > 0 ? options.threads : kernels::num_threads();
  {
    std::optional<passes::Scoped> scoped;
    if (!options.passes.empty())
      scoped.emplace(passes::parse(options.passes, "ModelOptions::passes"));
    kernels::ScopedThreads threads(impl->threads);  // packing at load runs on these threads
    impl->model = models::load_model(ModelDir(directory), load);
  }
  if (tessera::has_tokenizer(directory)) impl->tokenizer = load_tokenizer(directory);
  // The generators (make_generator says why a model cannot generate: kept for generate()).
  try {
    impl->ids_generator = api::make_generator(directory, false, impl->model, api::OptionStyle::api);
  } catch (const Error& e) {
    impl->ids_error = e.what();
  }
  if (impl->ids_generator) {
    try {
      impl->text_generator =
          api::make_generator(directory, true, impl->model, api::OptionStyle::api);
    } catch (const Error& e) {
      impl->text_error = e.what();
    }
  }
  impl_ = std::move(impl);
}

Model::~Model() = default;
Model::Model(const Model&) = default;
Model& Model::operator=(const Model&) = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

std::string Model::family() const {
  return impl_->model->family();
}
std::string Model::directory() const {
  return impl_->directory;
}
int Model::threads() const {
  return impl_->threads;
}
bool Model::can_generate() const {
  return impl_->ids_generator.has_value();
}
bool Model::can_embed() const {
  return impl_->model->bert() != nullptr;
}
bool Model::has_tokenizer() const {
  return impl_->tokenizer != nullptr;
}

std::string Model::dtype() const {
  return kernels::weight_type_name(models::weight_type(*impl_->model));
}

std::vector<int64_t> Model::tokenize(const std::string& text, bool special) const {
  if (!impl_->tokenizer)
    throw Error("model directory '" + impl_->directory + "' has no tokenizer files");
  check_text_bytes(text.size(), "the text");
  return impl_->tokenizer->encode(text, special);
}

std::string Model::detokenize(const std::vector<int64_t>& ids, bool special) const {
  if (!impl_->tokenizer)
    throw Error("model directory '" + impl_->directory + "' has no tokenizer files");
  return impl_->tokenizer->decode(ids, /*skip_special=*/!special);
}

struct Session::Impl {
  explicit Impl(const Model& m) : model(m) {}
  Model model;
  SessionSet sessions;

  // Binds this session's graph sessions and thread count to the calling thread.
  struct Bound {
    SessionSet::Bind sessions;
    kernels::ScopedThreads threads;
    explicit Bound(Impl& s) : sessions(s.sessions), threads(s.model.threads()) {}
  };

  std::vector<Completion> generate(const api::Generator& gen,
                                   std::vector<std::vector<int64_t>> prompts,
                                   const GenerateOptions& options, const TokenCallback& on_token);
};

Session::Session(const Model& model) : impl_(std::make_unique<Impl>(model)) {}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Model& Session::model() const {
  return impl_->model;
}

size_t Session::arena_bytes() const {
  return impl_->sessions.arena_bytes();
}

NamedTensors Session::run(const NamedTensors& inputs) {
  TensorMap in;
  for (const auto& [name, v] : inputs) {
    if (static_cast<unsigned>(v.dtype) > static_cast<unsigned>(DType::boolean))
      throw Error("input '" + name + "': unknown dtype " +
                  std::to_string(static_cast<unsigned>(v.dtype)));
    const int64_t n = shape_numel(v.shape);  // throws on negative or huge dimensions
    if (n > 0 && v.data == nullptr) throw Error("input '" + name + "': data is null");
    in.emplace(name, Tensor::view(v.dtype, v.shape, const_cast<void*>(v.data), v.owner));
  }
  Impl::Bound bound(*impl_);
  TensorMap out = guarded([&] { return impl_->model.impl_->model->run(in); });
  NamedTensors result;
  for (auto& [name, t] : out) result.emplace(name, to_view(std::move(t)));
  return result;
}

std::vector<Completion> Session::Impl::generate(const api::Generator& gen,
                                                std::vector<std::vector<int64_t>> prompts,
                                                const GenerateOptions& o,
                                                const TokenCallback& on_token) {
  GenerationOptions opt;
  opt.method = to_internal(o.method);
  opt.temperature = o.temperature;
  opt.top_k = o.top_k;
  opt.top_p = o.top_p;
  opt.seed = o.seed;
  opt.repetition_penalty = o.repetition_penalty;
  opt.num_beams = o.num_beams;
  opt.length_penalty = o.length_penalty;
  opt.early_stopping = o.early_stopping;
  opt.num_return_sequences = o.num_return_sequences;
  opt.stop_strings = o.stop;
  opt.eos_ids = gen.eos_ids;
  api::check_generation_options(opt, o.batch_size, gen.codec != nullptr, api::OptionStyle::api);
  if (o.max_new_tokens != 0) api::check_max_new_tokens(gen, o.max_new_tokens, "max_new_tokens");
  for (size_t i = 0; i < prompts.size(); ++i)
    if (prompts[i].empty()) throw Error("prompt " + std::to_string(i) + " has no tokens");
  const int64_t per_prompt = opt.method == DecodingMethod::beam
                                 ? std::max(opt.num_beams, opt.num_return_sequences)
                                 : opt.num_return_sequences;
  api::check_kv_cache_fits(gen, std::min<uint64_t>(prompts.size(), o.batch_size), per_prompt,
                           "batch_size " + std::to_string(o.batch_size));
  const TextTokenizer* codec = gen.codec.get();
  if (codec)
    opt.decode_text = [codec](const std::vector<int64_t>& ids) { return codec->decode(ids); };
  opt.max_new_tokens =
      o.max_new_tokens != 0 ? o.max_new_tokens : api::default_max_new_tokens(gen, prompts);

  Bound bound(*this);
  std::vector<Completion> completions(prompts.size());
  const size_t step = static_cast<size_t>(o.batch_size);
  for (size_t begin = 0; begin < prompts.size(); begin += step) {
    const size_t end = std::min(prompts.size(), begin + step);
    std::vector<std::vector<int64_t>> batch(prompts.begin() + begin, prompts.begin() + end);
    opt.row_offset = static_cast<int64_t>(begin);
    // One streaming decoder per (prompt, sequence) of the batch, made on its first token.
    std::map<std::pair<int64_t, int64_t>, StreamDecoder> streams;
    OnToken stream;
    int64_t streamed = 0;
    if (on_token)
      stream = [&](int64_t prompt, int64_t sequence, int64_t id) {
        Token t;
        t.prompt = begin + static_cast<size_t>(prompt);
        t.sequence = static_cast<size_t>(sequence);
        t.id = id;
        if (codec) t.text = streams.try_emplace({prompt, sequence}, *codec).first->second.push(id);
        ++streamed;
        if (!on_token(t))
          throw Cancelled("generation cancelled by the token callback after " +
                          std::to_string(streamed) + " tokens");
      };
    std::unique_ptr<CausalLM> lm = gen.new_session(opt.max_new_tokens);
    const auto results = guarded([&] { return tessera::generate(*lm, batch, opt, stream); });
    for (size_t p = 0; p < results.size(); ++p) {
      for (const auto& s : results[p].sequences) {
        Sequence out;
        out.ids = s.ids;
        if (codec) out.text = codec->decode(s.ids);
        out.finish = s.finish;
        out.score = s.score;
        out.logprob = s.logprob;
        completions[begin + p].sequences.push_back(std::move(out));
      }
    }
  }
  return completions;
}

std::vector<Completion> Session::generate(const std::vector<std::string>& prompts,
                                          const GenerateOptions& options,
                                          const TokenCallback& on_token) {
  const Model::Impl& m = *impl_->model.impl_;
  if (!m.text_generator)
    throw Error(!m.text_error.empty() ? m.text_error
                : !m.ids_error.empty()
                    ? m.ids_error
                    : "model_type '" + std::string(m.model->family()) + "' cannot generate");
  return impl_->generate(*m.text_generator, api::encode_prompts(*m.text_generator, prompts),
                         options, on_token);
}

std::vector<Completion> Session::generate_ids(const std::vector<std::vector<int64_t>>& prompts,
                                              const GenerateOptions& options,
                                              const TokenCallback& on_token) {
  const Model::Impl& m = *impl_->model.impl_;
  if (!m.ids_generator)
    throw Error(!m.ids_error.empty()
                    ? m.ids_error
                    : "model_type '" + std::string(m.model->family()) + "' cannot generate");
  return impl_->generate(*m.ids_generator, prompts, options, on_token);
}

std::string Session::complete(const std::string& prompt, const GenerateOptions& options,
                              const TokenCallback& on_token) {
  return generate({prompt}, options, on_token).at(0).sequences.at(0).text;
}

TensorView Session::embed_ids(const std::vector<std::vector<int64_t>>& inputs,
                              const EmbedOptions& options) {
  Impl::Bound bound(*impl_);
  return to_view(api::embed(*impl_->model.impl_->model, inputs, options.pooling, options.normalize,
                            options.batch_size));
}

TensorView Session::embed(const std::vector<std::string>& texts, const EmbedOptions& options) {
  const Model::Impl& m = *impl_->model.impl_;
  if (!m.model->bert())
    throw Error(std::string("embedding needs a bert model; this one has model_type '") +
                m.model->family() + "'");
  if (!m.tokenizer) throw Error("model directory '" + m.directory + "' has no tokenizer files");
  return embed_ids(api::tokenize_for_embedding(*m.tokenizer, texts), options);
}

}  // namespace tessera
