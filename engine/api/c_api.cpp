// The C ABI of include/tessera/tessera.h over the C++ API: every entry point checks its pointers
// and sizes, runs inside call(), which turns each exception into a status and this thread's
// last error, and writes its outputs only on success.
#include <tessera/tessera.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <string>
#include <tessera/tessera.hpp>
#include <vector>

struct tessera_model {
  tessera::Model model;
};

struct tessera_session {
  tessera::Session session;
};

namespace {

thread_local std::string t_last_error;

tessera_status fail(tessera_status status, const std::string& message) {
  t_last_error = message;
  std::replace(t_last_error.begin(), t_last_error.end(), '\n', ' ');  // one line
  return status;
}

// Runs f (which returns nothing on success); exceptions become statuses. `bad_input` is the
// status of a tessera::Error: TESSERA_MODEL_ERROR while loading, else TESSERA_INVALID_ARGUMENT.
template <class F>
tessera_status call(tessera_status bad_input, F&& f) noexcept {
  try {
    f();
    t_last_error.clear();
    return TESSERA_OK;
  } catch (const tessera::Cancelled& e) {
    return fail(TESSERA_CANCELLED, e.what());
  } catch (const tessera::Error& e) {
    return fail(bad_input, e.what());
  } catch (const std::bad_alloc&) {
    return fail(TESSERA_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return fail(TESSERA_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(TESSERA_INTERNAL, "internal error: unknown exception");
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw tessera::Error(message);
}

char* copy_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

constexpr int32_t kMaxRank = 16;

tessera::NamedTensors to_inputs(const tessera_tensor* inputs, size_t n) {
  require(n == 0 || inputs != nullptr,
          "tessera_run: inputs is NULL but n_inputs is " + std::to_string(n));
  tessera::NamedTensors in;
  for (size_t i = 0; i < n; ++i) {
    const tessera_tensor& t = inputs[i];
    const std::string where = "tessera_run: input " + std::to_string(i);
    require(t.name != nullptr, where + " has a NULL name");
    const std::string name = t.name;
    const std::string what = where + " ('" + name + "')";
    // A C caller may store any int in the enum; in C++ only its bytes may be read.
    int dtype = 0;
    static_assert(sizeof(t.dtype) == sizeof(dtype));
    std::memcpy(&dtype, &t.dtype, sizeof dtype);
    require(dtype >= TESSERA_F32 && dtype <= TESSERA_I8,
            what + " has dtype " + std::to_string(dtype) + ", not a tessera_dtype (0..7)");
    require(t.rank >= 0 && t.rank <= kMaxRank, what + " has rank " + std::to_string(t.rank) +
                                                   " (0.." + std::to_string(kMaxRank) + ")");
    require(t.rank == 0 || t.shape != nullptr,
            what + " has a NULL shape with rank " + std::to_string(t.rank));
    tessera::TensorView v;
    v.dtype = static_cast<tessera::DType>(dtype);
    v.shape.assign(t.shape, t.shape + t.rank);
    for (int64_t d : v.shape)
      require(d >= 0, what + " has a negative dimension " + std::to_string(d));
    v.data = t.data;
    require(in.emplace(name, std::move(v)).second,
            where + ": the name '" + name + "' is given twice");
  }
  return in;
}

}  // namespace

extern "C" {

const char* tessera_last_error(void) {
  return t_last_error.c_str();
}

tessera_status tessera_model_load(const char* dir, int32_t threads, tessera_model** out) {
  if (!dir) return fail(TESSERA_INVALID_ARGUMENT, "tessera_model_load: dir is NULL");
  if (!out) return fail(TESSERA_INVALID_ARGUMENT, "tessera_model_load: out is NULL");
  if (threads < 0)
    return fail(TESSERA_INVALID_ARGUMENT,
                "tessera_model_load: threads must be >= 0 (0: every "
                "core), got " +
                    std::to_string(threads));
  return call(TESSERA_MODEL_ERROR, [&] {
    tessera::ModelOptions options;
    options.threads = threads;
    *out = new tessera_model{tessera::Model(dir, options)};
  });
}

tessera_model_options tessera_model_defaults(void) {
  tessera_model_options o;
  o.threads = 0;
  o.dtype = nullptr;
  o.isa = nullptr;
  o.passes = nullptr;
  return o;
}

tessera_status tessera_model_load_opts(const char* dir, const tessera_model_options* opts,
                                       tessera_model** out) {
  if (!dir) return fail(TESSERA_INVALID_ARGUMENT, "tessera_model_load_opts: dir is NULL");
  if (!out) return fail(TESSERA_INVALID_ARGUMENT, "tessera_model_load_opts: out is NULL");
  const tessera_model_options o = opts ? *opts : tessera_model_defaults();
  if (o.threads < 0)
    return fail(TESSERA_INVALID_ARGUMENT,
                "tessera_model_load_opts: threads must be >= 0 (0: every core), got " +
                    std::to_string(o.threads));
  if (o.dtype) {
    const std::string d = o.dtype;
    if (!d.empty() && d != "auto" && d != "f32" && d != "bf16" && d != "int8")
      return fail(TESSERA_INVALID_ARGUMENT, "tessera_model_load_opts: dtype '" + d +
                                                "' is not f32, bf16 or int8 (NULL or \"\": what "
                                                "the model directory holds)");
  }
  return call(TESSERA_MODEL_ERROR, [&] {
    tessera::ModelOptions options;
    options.threads = o.threads;
    options.dtype = o.dtype ? o.dtype : "";
    options.isa = o.isa ? o.isa : "";
    options.passes = o.passes ? o.passes : "";
    *out = new tessera_model{tessera::Model(dir, options)};
  });
}

const char* tessera_model_dtype(const tessera_model* model) {
  if (!model) return "";
  const std::string d = model->model.dtype();
  return d == "int8" ? "int8" : d == "bf16" ? "bf16" : "f32";
}

void tessera_model_free(tessera_model* model) {
  delete model;
}

tessera_status tessera_session_create(const tessera_model* model, tessera_session** out) {
  if (!model) return fail(TESSERA_INVALID_ARGUMENT, "tessera_session_create: model is NULL");
  if (!out) return fail(TESSERA_INVALID_ARGUMENT, "tessera_session_create: out is NULL");
  return call(TESSERA_INVALID_ARGUMENT,
              [&] { *out = new tessera_session{tessera::Session(model->model)}; });
}

void tessera_session_free(tessera_session* session) {
  delete session;
}

tessera_status tessera_run(tessera_session* session, const tessera_tensor* inputs, size_t n_inputs,
                           tessera_tensor** outputs, size_t* n_outputs) {
  if (!session) return fail(TESSERA_INVALID_ARGUMENT, "tessera_run: session is NULL");
  if (!outputs || !n_outputs)
    return fail(TESSERA_INVALID_ARGUMENT, "tessera_run: outputs or n_outputs is NULL");
  return call(TESSERA_INVALID_ARGUMENT, [&] {
    const tessera::NamedTensors out = session->session.run(to_inputs(inputs, n_inputs));
    // Each output in memory of its own (malloc), so that C frees it field by field.
    auto* array = static_cast<tessera_tensor*>(std::calloc(out.size() + 1, sizeof(tessera_tensor)));
    if (!array) throw std::bad_alloc();
    size_t i = 0;
    try {
      for (const auto& [name, v] : out) {
        tessera_tensor& t = array[i++];
        t.name = copy_string(name);
        t.dtype = static_cast<tessera_dtype>(v.dtype);
        t.rank = static_cast<int32_t>(v.shape.size());
        auto* shape = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * (v.shape.size() + 1)));
        if (!shape) throw std::bad_alloc();
        std::copy(v.shape.begin(), v.shape.end(), shape);
        t.shape = shape;
        t.data = std::malloc(v.nbytes() ? v.nbytes() : 1);
        if (!t.data) throw std::bad_alloc();
        std::memcpy(t.data, v.data, v.nbytes());
      }
    } catch (...) {
      tessera_tensors_free(array, i);
      throw;
    }
    *outputs = array;
    *n_outputs = out.size();
  });
}

void tessera_tensors_free(tessera_tensor* tensors, size_t n) {
  if (!tensors) return;
  for (size_t i = 0; i < n; ++i) {
    std::free(const_cast<char*>(tensors[i].name));
    std::free(const_cast<int64_t*>(tensors[i].shape));
    std::free(tensors[i].data);
  }
  std::free(tensors);
}

tessera_generate_options tessera_generate_defaults(void) {
  const tessera::GenerateOptions d;
  tessera_generate_options o;
  o.max_new_tokens = 0;
  o.method = 0;
  o.temperature = d.temperature;
  o.top_k = static_cast<int32_t>(d.top_k);
  o.top_p = d.top_p;
  o.repetition_penalty = d.repetition_penalty;
  o.seed = d.seed;
  o.num_beams = static_cast<int32_t>(d.num_beams);
  return o;
}

tessera_status tessera_generate(tessera_session* session, const char* prompt,
                                const tessera_generate_options* opts, tessera_token_fn on_token,
                                void* user, char** text_out) {
  if (!session) return fail(TESSERA_INVALID_ARGUMENT, "tessera_generate: session is NULL");
  if (!prompt) return fail(TESSERA_INVALID_ARGUMENT, "tessera_generate: prompt is NULL");
  if (!text_out) return fail(TESSERA_INVALID_ARGUMENT, "tessera_generate: text_out is NULL");
  const tessera_generate_options o = opts ? *opts : tessera_generate_defaults();
  if (o.method < 0 || o.method > 2)
    return fail(TESSERA_INVALID_ARGUMENT, "tessera_generate: method " + std::to_string(o.method) +
                                              " is not 0 (greedy), 1 (sample) or 2 (beam)");
  if (o.max_new_tokens < 0)
    return fail(TESSERA_INVALID_ARGUMENT,
                "tessera_generate: max_new_tokens must be >= 0 (0: "
                "the default), got " +
                    std::to_string(o.max_new_tokens));
  std::string streamed;
  const tessera_status status = call(TESSERA_INVALID_ARGUMENT, [&] {
    tessera::GenerateOptions g;
    g.max_new_tokens = o.max_new_tokens;
    g.method = static_cast<tessera::Method>(o.method);
    g.temperature = o.temperature;
    g.top_k = o.top_k;
    g.top_p = o.top_p;
    g.repetition_penalty = o.repetition_penalty;
    g.seed = o.seed;
    g.num_beams = o.num_beams;
    tessera::TokenCallback cb = [&](const tessera::Token& t) {
      streamed += t.text;
      return on_token(t.text.c_str(), user) == 0;
    };
    const std::string text =
        session->session.complete(prompt, g, on_token ? cb : tessera::TokenCallback{});
    *text_out = copy_string(text);
  });
  if (status == TESSERA_CANCELLED) {
    try {
      *text_out = copy_string(streamed);
    } catch (const std::bad_alloc&) {
      return fail(TESSERA_INTERNAL, "out of memory");
    }
  }
  return status;
}

void tessera_string_free(char* s) {
  std::free(s);
}

}  // extern "C"
