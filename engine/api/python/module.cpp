// The Python module `tessera`: the C++ API of <tessera/tessera.hpp> for Python, over
// libtessera.so (one copy of the engine, whatever loads it). Only the public header is used.
//
//   import tessera
//   m = tessera.Model("models/demo-dates")
//   m.generate("1 May 2020")                  # ['2020-05-01']
//   out = m.run({"src_ids": a, "tgt_ids": b})  # dict of numpy arrays, no copies either way
//
// Sessions. A tessera::Session is one thread's state on a model. The methods of tessera.Model use
// one session per Python thread, made on first use and dropped when the thread ends or the model
// goes, so Python threads sharing a Model run at once without sharing state; tessera.Session is
// the same explicitly, one call at a time (a second concurrent call raises tessera.Error rather
// than corrupt its state).
//
// The GIL. Every engine call runs with the GIL released: the arguments are converted to C++
// first, the results back to Python after. The engine calls into Python only for generate()'s
// on_token, taking the GIL back for that call alone; streaming goes through a queue instead
// (Stream, below), so a streaming engine never waits for the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tessera/ops.hpp>
#include <tessera/tessera.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

// ---------------------------------------------------------------------------------------------
// Per-thread sessions of a model.
// ---------------------------------------------------------------------------------------------

// A loaded model and the sessions the Python threads use on it, one per thread. Held by the
// Python Model object (and by the threads that used it, weakly): when the object goes, so do its
// sessions; when a thread ends, its session goes (ThreadSessions below).
struct Registry {
  explicit Registry(tessera::Model m) : model(std::move(m)) {}
  tessera::Model model;
  std::mutex mutex;
  std::unordered_map<std::thread::id, std::shared_ptr<tessera::Session>> sessions;
};

// The registries this thread made a session in. Its destructor runs when the thread ends (Python
// threads are OS threads) and removes the thread's sessions, so a program that starts many
// short-lived threads does not accumulate their arenas.
struct ThreadSessions {
  std::vector<std::weak_ptr<Registry>> used;
  ~ThreadSessions() {
    const auto self = std::this_thread::get_id();
    for (auto& weak : used) {
      if (auto r = weak.lock()) {
        std::shared_ptr<tessera::Session> gone;  // destroyed after the lock is released
        std::lock_guard<std::mutex> lock(r->mutex);
        auto it = r->sessions.find(self);
        if (it != r->sessions.end()) {
          gone = std::move(it->second);
          r->sessions.erase(it);
        }
      }
    }
  }
};
thread_local ThreadSessions thread_sessions;

// The calling thread's session on the model (made on first use). The shared_ptr keeps it alive
// for the call even if the model object is dropped meanwhile.
std::shared_ptr<tessera::Session> session_of_this_thread(const std::shared_ptr<Registry>& r) {
  const auto self = std::this_thread::get_id();
  std::lock_guard<std::mutex> lock(r->mutex);
  auto& slot = r->sessions[self];
  if (!slot) {
    slot = std::make_shared<tessera::Session>(r->model);
    std::erase_if(thread_sessions.used, [](const auto& w) { return w.expired(); });
    thread_sessions.used.push_back(r);
  }
  return slot;
}

// ---------------------------------------------------------------------------------------------
// numpy <-> TensorView
// ---------------------------------------------------------------------------------------------

// The numpy dtype of each tessera dtype, and back. bfloat16 has no numpy dtype: no input can be
// bf16, and outputs are f32 anyway.
std::optional<tessera::DType> dtype_of(const py::dtype& dt) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'f' && size == 4) return tessera::DType::f32;
  if (kind == 'f' && size == 2) return tessera::DType::f16;
  if (kind == 'i' && size == 8) return tessera::DType::i64;
  if (kind == 'i' && size == 4) return tessera::DType::i32;
  if (kind == 'u' && size == 1) return tessera::DType::u8;
  if (kind == 'b' && size == 1) return tessera::DType::boolean;
  return std::nullopt;
}

py::dtype numpy_dtype(tessera::DType dt) {
  switch (dt) {
    case tessera::DType::f32:
      return py::dtype("float32");
    case tessera::DType::f16:
      return py::dtype("float16");
    case tessera::DType::i64:
      return py::dtype("int64");
    case tessera::DType::i32:
      return py::dtype("int32");
    case tessera::DType::u8:
      return py::dtype("uint8");
    case tessera::DType::boolean:
      return py::dtype("bool");
    case tessera::DType::i8:
      return py::dtype("int8");
    case tessera::DType::bf16:
      break;
  }
  throw tessera::Error(std::string("an output of dtype ") + tessera::dtype_name(dt) +
                       " has no numpy dtype");
}

// The inputs of run(): views of the callers' arrays, and the arrays themselves (held for the
// call: a non-contiguous input is a contiguous copy only this object references).
struct Inputs {
  tessera::NamedTensors views;
  std::vector<py::array> keep;
};

Inputs to_inputs(const py::dict& inputs) {
  Inputs in;
  for (const auto& [key, value] : inputs) {
    if (!py::isinstance<py::str>(key))
      throw tessera::Error("run: input names must be str, got " +
                           std::string(py::str(py::type::of(key).attr("__name__"))));
    const std::string name = key.cast<std::string>();
    // Lists and scalars become arrays the way numpy makes them; arrays pass as they are.
    py::array a = py::isinstance<py::array>(value)
                      ? py::reinterpret_borrow<py::array>(value)
                      : py::array(py::module_::import("numpy").attr("asarray")(value));
    const auto dt = dtype_of(a.dtype());
    if (!dt)
      throw tessera::Error("input '" + name + "': numpy dtype " + std::string(py::str(a.dtype())) +
                           " is not supported (float32, float16, int64, int32, uint8, bool)");
    if (!a.dtype().attr("isnative").cast<bool>())
      throw tessera::Error("input '" + name + "': numpy dtype " + std::string(py::str(a.dtype())) +
                           " is not in the machine's byte order (use .astype(its native form))");
    // C-contiguous arrays are read in place; anything else (a transposed or strided view) is
    // copied once into C order, as the engine reads row-major contiguous memory only.
    if (!(a.flags() & py::array::c_style))
      a = py::array(py::module_::import("numpy").attr("ascontiguousarray")(a));
    tessera::TensorView v;
    v.dtype = *dt;
    v.shape.assign(a.shape(), a.shape() + a.ndim());
    v.data = a.data();
    in.views.emplace(name, std::move(v));
    in.keep.push_back(std::move(a));
  }
  return in;
}

// A numpy array over a TensorView's memory, without a copy: the array's base is a capsule
// holding the view, whose `owner` keeps the memory alive as long as the array (or any view of
// it) lives. The memory belongs to this result alone, so the array is writable.
py::array to_numpy(tessera::TensorView v) {
  const py::dtype dt = numpy_dtype(v.dtype);
  const std::vector<py::ssize_t> shape(v.shape.begin(), v.shape.end());
  const void* data = v.data;
  auto* held = new tessera::TensorView(std::move(v));
  py::capsule base(held, [](void* p) { delete static_cast<tessera::TensorView*>(p); });
  return py::array(dt, shape, data, base);
}

py::dict to_dict(tessera::NamedTensors out) {
  py::dict d;
  for (auto& [name, v] : out) d[py::str(name)] = to_numpy(std::move(v));
  return d;
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

tessera::Method parse_method(const std::string& s) {
  if (s == "greedy") return tessera::Method::greedy;
  if (s == "sample") return tessera::Method::sample;
  if (s == "beam") return tessera::Method::beam;
  throw tessera::Error("method: unknown '" + s + "' (greedy, sample or beam)");
}

tessera::EarlyStopping parse_early_stopping(const std::string& s) {
  if (s == "heuristic") return tessera::EarlyStopping::heuristic;
  if (s == "first") return tessera::EarlyStopping::first;
  if (s == "never") return tessera::EarlyStopping::never;
  throw tessera::Error("early_stopping: unknown '" + s + "' (heuristic, first or never)");
}

tessera::Pooling parse_pooling(const std::string& s) {
  if (s == "cls") return tessera::Pooling::cls;
  if (s == "mean") return tessera::Pooling::mean;
  if (s == "pooler") return tessera::Pooling::pooler;
  throw tessera::Error("pooling: unknown '" + s + "' (cls, mean or pooler)");
}

// generate()'s and stream()'s keyword arguments, as GenerateOptions (checked by the engine).
struct GenArgs {
  int64_t max_new_tokens = 0;
  std::string method = "greedy";
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  int64_t num_beams = 4;
  float length_penalty = 1.0f;
  std::string early_stopping = "heuristic";
  std::optional<std::vector<std::string>> stop;
  int64_t num_return_sequences = 1;
  int64_t batch_size = 64;

  tessera::GenerateOptions options() const {
    tessera::GenerateOptions o;
    o.max_new_tokens = max_new_tokens;
    o.method = parse_method(method);
    o.temperature = temperature;
    o.top_k = top_k;
    o.top_p = top_p;
    o.repetition_penalty = repetition_penalty;
    o.seed = seed;
    o.num_beams = num_beams;
    o.length_penalty = length_penalty;
    o.early_stopping = parse_early_stopping(early_stopping);
    o.num_return_sequences = num_return_sequences;
    if (stop) o.stop = *stop;
    o.batch_size = batch_size;
    return o;
  }
};

// The keyword arguments of generate() and stream() after the prompts, with the C++ API's
// defaults (pybind11 takes py::arg objects one by one, not as a tuple: hence a macro). `stop`
// takes one str or a list of them.
#define TESSERA_GEN_KWARGS                                                                    \
  py::arg("max_new_tokens") = 0, py::arg("method") = "greedy", py::arg("temperature") = 1.0f, \
  py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("repetition_penalty") = 1.0f,        \
  py::arg("seed") = 0, py::arg("num_beams") = 4, py::arg("length_penalty") = 1.0f,            \
  py::arg("early_stopping") = "heuristic", py::arg("stop") = py::none(),                      \
  py::arg("num_return_sequences") = 1, py::arg("batch_size") = 64

GenArgs make_gen_args(int64_t max_new_tokens, const std::string& method, float temperature,
                      int64_t top_k, float top_p, float repetition_penalty, uint64_t seed,
                      int64_t num_beams, float length_penalty, const std::string& early_stopping,
                      const py::object& stop, int64_t num_return_sequences, int64_t batch_size) {
  GenArgs a;
  a.max_new_tokens = max_new_tokens;
  a.method = method;
  a.temperature = temperature;
  a.top_k = top_k;
  a.top_p = top_p;
  a.repetition_penalty = repetition_penalty;
  a.seed = seed;
  a.num_beams = num_beams;
  a.length_penalty = length_penalty;
  a.early_stopping = early_stopping;
  if (py::isinstance<py::str>(stop)) {
    a.stop = std::vector<std::string>{stop.cast<std::string>()};
  } else if (!stop.is_none()) {
    try {
      a.stop = stop.cast<std::vector<std::string>>();
    } catch (const py::cast_error&) {
      throw tessera::Error("stop: must be a str or a list of str, got " +
                           std::string(py::str(py::type::of(stop).attr("__name__"))));
    }
  }
  a.num_return_sequences = num_return_sequences;
  a.batch_size = batch_size;
  return a;
}

// ---------------------------------------------------------------------------------------------
// tessera.ops: numpy float32 arrays in and out
// ---------------------------------------------------------------------------------------------

// An argument of an op as an F32 view. A float32 array is read in place when C-contiguous (else
// copied once into C order); an array of another dtype is an error naming the argument (no
// silent conversion of float64 data); anything else (a list, a number, a CPU torch tensor) is
// converted by numpy.asarray(value, dtype=numpy.float32). `keep` holds the memory for the call.
struct F32Arg {
  tessera::TensorView view;
  py::array keep;
};

F32Arg f32_arg(const char* op, const char* name, const py::object& value) {
  const auto numpy = py::module_::import("numpy");
  py::array a;
  if (py::isinstance<py::array>(value)) {
    a = py::reinterpret_borrow<py::array>(value);
    const py::dtype dt = a.dtype();
    if (dt.kind() != 'f' || dt.itemsize() != 4 || !dt.attr("isnative").cast<bool>())
      throw tessera::Error(std::string("ops::") + op + ": " + name +
                           " must be a float32 array, got " + std::string(py::str(py::object(dt))) +
                           " (use " + name + ".astype(numpy.float32))");
  } else {
    try {
      a = numpy.attr("asarray")(value, py::arg("dtype") = "float32");
    } catch (const py::error_already_set&) {
      throw tessera::Error(std::string("ops::") + op + ": " + name +
                           " is not an array of numbers (" +
                           std::string(py::str(py::type::of(value).attr("__name__"))) + ")");
    }
  }
  if (!(a.flags() & py::array::c_style)) a = py::array(numpy.attr("ascontiguousarray")(a));
  F32Arg arg;
  arg.view.dtype = tessera::DType::f32;
  arg.view.shape.assign(a.shape(), a.shape() + a.ndim());
  arg.view.data = a.data();
  arg.keep = std::move(a);
  return arg;
}

// An optional argument (None: absent).
std::optional<F32Arg> f32_opt(const char* op, const char* name, const py::object& value) {
  if (value.is_none()) return std::nullopt;
  return f32_arg(op, name, value);
}

const tessera::TensorView* view_of(const std::optional<F32Arg>& a) {
  return a ? &a->view : nullptr;
}

// Binds tessera.ops: each function converts its arguments, runs the op with the GIL released
// and returns a numpy array over the result's memory (no copy).
void bind_ops(py::module_& m) {
  auto ops = m.def_submodule(
      "ops",
      "Tessera's kernels one call at a time (include/tessera/ops.hpp): numpy float32 arrays in "
      "and out, the ISA the library chose (tessera.ops.isa()). Errors are tessera.Error naming "
      "the op and the argument.");
  // `import tessera.ops` works too (the extension is a module, not a package).
  py::module_::import("sys").attr("modules")["tessera.ops"] = ops;
  ops.def("isa", &tessera::ops::isa,
          "The kernels the ops run: 'avx512', 'avx2' or 'generic' (chosen once per process).");
  ops.def(
      "matmul",
      [](const py::object& a, const py::object& b, bool transpose_b, const py::object& bias) {
        const F32Arg x = f32_arg("matmul", "a", a), w = f32_arg("matmul", "b", b);
        const auto bs = f32_opt("matmul", "bias", bias);
        tessera::TensorView out;
        {
          py::gil_scoped_release release;
          out = tessera::ops::matmul(x.view, w.view, transpose_b, view_of(bs));
        }
        return to_numpy(std::move(out));
      },
      py::arg("a"), py::arg("b"), py::arg("transpose_b") = false, py::arg("bias") = py::none(),
      "a @ b (+ bias) by the GEMM: a [..., K]; b [K, N], or [N, K] with transpose_b (a @ b.T, a "
      "torch Linear weight); bias [N]. Returns [..., N].");
  ops.def(
      "add",
      [](const py::object& a, const py::object& b) {
        const F32Arg x = f32_arg("add", "a", a), y = f32_arg("add", "b", b);
        tessera::TensorView out;
        {
          py::gil_scoped_release release;
          out = tessera::ops::add(x.view, y.view);
        }
        return to_numpy(std::move(out));
      },
      py::arg("a"), py::arg("b"), "a + b, element by element (one shape).");
  ops.def(
      "softmax",
      [](const py::object& x, float scale, bool causal) {
        const F32Arg a = f32_arg("softmax", "x", x);
        tessera::TensorView out;
        {
          py::gil_scoped_release release;
          out = tessera::ops::softmax(a.view, scale, causal);
        }
        return to_numpy(std::move(out));
      },
      py::arg("x"), py::arg("scale") = 1.0f, py::arg("causal") = false,
      "softmax(scale * x) over the last dimension. causal: x is [..., T, S] and entries s > t "
      "are -inf before the softmax (torch.tril's mask).");
  ops.def(
      "attention",
      [](const py::object& q, const py::object& k, const py::object& v, int64_t heads, bool causal,
         std::optional<float> scale) {
        const F32Arg qa = f32_arg("attention", "q", q), ka = f32_arg("attention", "k", k),
                     va = f32_arg("attention", "v", v);
        tessera::ops::AttentionOptions o;
        o.heads = heads;
        o.causal = causal;
        o.scale = scale;
        tessera::TensorView out;
        {
          py::gil_scoped_release release;
          out = tessera::ops::attention(qa.view, ka.view, va.view, o);
        }
        return to_numpy(std::move(out));
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("heads") = 1, py::arg("causal") = false,
      py::arg("scale") = py::none(),
      "softmax(scale * q @ k.T) @ v per head by the fused attention kernel: q [T, H*Dk] or "
      "[B, T, H*Dk], k [S, H*Dk], v [S, H*Dv]; scale None: 1/sqrt(Dk); causal: key s for query "
      "t only if s <= t. Returns [T, H*Dv] (or [B, T, H*Dv]), the heads side by side.");
  ops.def(
      "layer_norm",
      [](const py::object& x, const py::object& weight, const py::object& bias, float eps,
         const py::object& residual) {
        const F32Arg xa = f32_arg("layer_norm", "x", x);
        const auto w = f32_opt("layer_norm", "weight", weight);
        const auto b = f32_opt("layer_norm", "bias", bias);
        const auto r = f32_opt("layer_norm", "residual", residual);
        tessera::TensorView out;
        {
          py::gil_scoped_release release;
          out = tessera::ops::layer_norm(xa.view, view_of(w), view_of(b), eps, view_of(r));
        }
        return to_numpy(std::move(out));
      },
      py::arg("x"), py::arg("weight") = py::none(), py::arg("bias") = py::none(),
      py::arg("eps") = 1e-5f, py::arg("residual") = py::none(),
      "torch.nn.LayerNorm over the last dimension of x (+ residual, when given): weight and bias "
      "[N] (None: ones and zeros).");
  ops.def(
      "sinusoidal_positions",
      [](int64_t positions, int64_t dim) {
        return to_numpy(tessera::ops::sinusoidal_positions(positions, dim));
      },
      py::arg("positions"), py::arg("dim"),
      "The sinusoidal positional encodings of 'Attention Is All You Need', [positions, dim].");
}

// ---------------------------------------------------------------------------------------------
// The calls, on one session (the GIL released while the engine runs)
// ---------------------------------------------------------------------------------------------

py::dict do_run(tessera::Session& s, const py::dict& inputs) {
  Inputs in = to_inputs(inputs);
  tessera::NamedTensors out;
  {
    py::gil_scoped_release release;
    out = s.run(in.views);
  }
  return to_dict(std::move(out));
}

// A Python callable as the engine's TokenCallback: called with the GIL taken back, with a
// tessera.Token; returning False (not None) stops the generation. An exception it raises stops
// the generation too and is kept, to be raised again once the engine has stopped.
struct PyTokenCallback {
  py::object fn;
  std::exception_ptr error;  // the callable's exception (holds Python objects: GIL-safe to drop)

  tessera::TokenCallback callback() {
    if (fn.is_none()) return {};
    return [this](const tessera::Token& t) {
      py::gil_scoped_acquire acquire;
      try {
        const py::object r = fn(t);
        if (r.is_none()) return true;
        const int truth = PyObject_IsTrue(r.ptr());
        if (truth < 0) throw py::error_already_set();
        return truth == 1;
      } catch (...) {
        error = std::current_exception();
        return false;
      }
    };
  }
};

// prompts: one str, a list of str (text), or a list of lists of ints (token ids). Returns, per
// prompt, its first sequence (num_return_sequences == 1) or all of them (a list): the text for
// text prompts, the token ids for id prompts.
py::list do_generate(tessera::Session& s, const py::object& prompts, const GenArgs& args,
                     const py::object& on_token) {
  const tessera::GenerateOptions opt = args.options();
  const char* const kPrompts =
      "generate: prompts must be a str, a list of str or a list of lists of token ids (ints)";
  std::vector<std::string> texts;
  std::vector<std::vector<int64_t>> id_prompts;
  bool ids = false;
  if (py::isinstance<py::str>(prompts)) {
    texts.push_back(prompts.cast<std::string>());
  } else {
    if (!py::isinstance<py::sequence>(prompts))
      throw tessera::Error(std::string(kPrompts) + ", got " +
                           std::string(py::str(py::type::of(prompts).attr("__name__"))));
    const auto seq = py::reinterpret_borrow<py::sequence>(prompts);
    ids = seq.size() > 0 && !py::isinstance<py::str>(seq[0]);
    try {
      if (ids)
        id_prompts = prompts.cast<std::vector<std::vector<int64_t>>>();
      else
        texts = prompts.cast<std::vector<std::string>>();
    } catch (const py::cast_error&) {
      throw tessera::Error(kPrompts);
    }
  }
  PyTokenCallback cb{on_token, nullptr};
  std::vector<tessera::Completion> out;
  try {
    py::gil_scoped_release release;
    out = ids ? s.generate_ids(id_prompts, opt, cb.callback())
              : s.generate(texts, opt, cb.callback());
  } catch (const tessera::Cancelled&) {
    if (cb.error) std::rethrow_exception(cb.error);  // the callable's own exception
    throw;
  }
  auto one = [&](const tessera::Sequence& q) -> py::object {
    if (ids) return py::cast(q.ids);
    return py::str(q.text);
  };
  py::list result;
  for (const auto& c : out) {
    if (args.num_return_sequences == 1) {
      result.append(one(c.sequences.at(0)));
    } else {
      py::list all;
      for (const auto& q : c.sequences) all.append(one(q));
      result.append(all);
    }
  }
  return result;
}

py::array do_embed(tessera::Session& s, const py::object& texts, const std::string& pooling,
                   bool normalize, int64_t batch_size) {
  tessera::EmbedOptions opt;
  opt.pooling = parse_pooling(pooling);
  opt.normalize = normalize;
  opt.batch_size = batch_size;
  std::vector<std::string> t;
  std::vector<std::vector<int64_t>> ids;
  bool by_ids = false;
  if (py::isinstance<py::str>(texts)) {
    t.push_back(texts.cast<std::string>());
  } else {
    const char* const kTexts =
        "embed: texts must be a str, a list of str or a list of lists of token ids (ints)";
    if (!py::isinstance<py::sequence>(texts))
      throw tessera::Error(std::string(kTexts) + ", got " +
                           std::string(py::str(py::type::of(texts).attr("__name__"))));
    try {
      const auto seq = py::reinterpret_borrow<py::sequence>(texts);
      by_ids = seq.size() > 0 && !py::isinstance<py::str>(seq[0]);
      if (by_ids)
        ids = texts.cast<std::vector<std::vector<int64_t>>>();
      else
        t = texts.cast<std::vector<std::string>>();
    } catch (const py::cast_error&) {
      throw tessera::Error(kTexts);
    }
  }
  tessera::TensorView v;
  {
    py::gil_scoped_release release;
    v = by_ids ? s.embed_ids(ids, opt) : s.embed(t, opt);
  }
  return to_numpy(std::move(v));
}

bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

// The text pieces of one generation, produced on a background thread and consumed by a Python
// iterator. The engine's callback only pushes into the queue (it never touches Python, so it
// needs no GIL); the iterator waits for a piece with the GIL released. Closing the iterator
// (close(), `with`, or dropping it, as `break` out of a for loop does) makes the next callback
// return false, the engine stops with tessera::Cancelled, and the thread is joined.
class Stream {
 public:
  // The options a stream takes: those of generate() with one sequence (checked before anything
  // is started, so that a refused stream leaves no state behind).
  static tessera::GenerateOptions options(const GenArgs& args) {
    tessera::GenerateOptions opt = args.options();
    if (opt.num_return_sequences != 1)
      throw tessera::Error(
          "stream: num_return_sequences must be 1 (it streams one sequence), "
          "got " +
          std::to_string(opt.num_return_sequences));
    return opt;
  }

  // `session`: the session the generation runs on, used by the background thread alone until
  // it is joined; `release` (may be empty) runs after that, e.g. to mark it free again.
  Stream(std::shared_ptr<tessera::Session> session, std::string prompt,
         tessera::GenerateOptions opt, std::function<void()> release)
      : state_(std::make_shared<State>()), release_(std::move(release)) {
    const bool beam = opt.method == tessera::Method::beam;
    worker_ = std::thread([st = state_, session = std::move(session), prompt = std::move(prompt),
                           opt = std::move(opt), beam] {
      std::exception_ptr error;
      try {
        const std::string text = session->complete(prompt, opt, [&](const tessera::Token& t) {
          std::lock_guard<std::mutex> lock(st->mutex);
          if (st->closed) return false;
          if (!t.text.empty()) {
            st->pieces.push_back(t.text);
            st->ready.notify_one();
          }
          return true;
        });
        // Beam search streams nothing: its text comes as one piece at the end.
        if (beam && !text.empty()) {
          std::lock_guard<std::mutex> lock(st->mutex);
          st->pieces.push_back(text);
        }
      } catch (const tessera::Cancelled&) {
        // Closed by the consumer: nothing to report.
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(st->mutex);
      st->error = error;
      st->done = true;
      st->ready.notify_one();
    });
  }

  ~Stream() {
    try {
      close();
    } catch (...) {
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // The next piece; StopIteration at the end; the engine's error, if any, after the last piece.
  py::str next() {
    std::string piece;
    bool end = false;
    for (bool got = false; !got;) {
      {
        // Waits in slices, so that Ctrl-C (a signal handled by the main thread's Python code)
        // interrupts a long wait; the stream stays open and can be closed.
        py::gil_scoped_release release;
        std::unique_lock<std::mutex> lock(state_->mutex);
        got = state_->ready.wait_for(lock, std::chrono::milliseconds(100),
                                     [&] { return !state_->pieces.empty() || state_->done; });
        if (got && !state_->pieces.empty()) {
          piece = std::move(state_->pieces.front());
          state_->pieces.pop_front();
        } else if (got) {
          end = true;
        }
      }
      if (!got && PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
    if (end) {
      join();
      if (state_->error) {
        std::exception_ptr e = std::exchange(state_->error, nullptr);
        std::rethrow_exception(e);
      }
      throw py::stop_iteration();
    }
    return py::str(piece);
  }

  // Stops the generation (if still running) and waits for its thread.
  void close() {
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->closed = true;
      state_->pieces.clear();
    }
    join();
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::string> pieces;
    bool closed = false;
    bool done = false;
    std::exception_ptr error;
  };

  void join() {
    if (worker_.joinable()) {
      // The worker never takes the GIL, but the join may wait for a whole forward pass: let the
      // other Python threads run meanwhile (not during interpreter shutdown, when no thread
      // state may be released).
      if (PyGILState_Check() && !finalizing()) {
        py::gil_scoped_release release;
        worker_.join();
      } else {
        worker_.join();
      }
      if (release_) std::exchange(release_, nullptr)();
    }
  }

  std::shared_ptr<State> state_;
  std::function<void()> release_;
  std::thread worker_;
};

// ---------------------------------------------------------------------------------------------
// The Python classes
// ---------------------------------------------------------------------------------------------

// tessera.Model: the loaded model and its per-thread sessions.
struct PyModel {
  std::shared_ptr<Registry> registry;
  const tessera::Model& model() const { return registry->model; }
  std::shared_ptr<tessera::Session> session() const { return session_of_this_thread(registry); }
};

// tessera.Session: one explicit session; one call at a time (a stream holds it until closed).
struct PySession {
  explicit PySession(const tessera::Model& m)
      : session(std::make_shared<tessera::Session>(m)),
        busy(std::make_shared<std::atomic<bool>>()) {}
  std::shared_ptr<tessera::Session> session;
  std::shared_ptr<std::atomic<bool>> busy;

  // Marks the session in use for the lifetime of the guard; another call meanwhile is an error.
  struct Use {
    explicit Use(const PySession& s) : busy(s.busy) {
      if (busy->exchange(true))
        throw tessera::Error(
            "tessera.Session is in use by another call or an open stream (a session runs one "
            "call at a time: use one Session per thread, or tessera.Model's methods)");
    }
    ~Use() {
      if (busy) busy->store(false);
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    // Hands the mark to whoever ends the use later (a stream).
    std::function<void()> release() {
      return [b = std::exchange(busy, nullptr)] { b->store(false); };
    }
    std::shared_ptr<std::atomic<bool>> busy;
  };
};

// Binds the methods shared by Model and Session: `get(self)` gives the session of the call and
// `use(self)` an object alive for the call (the busy mark of an explicit Session).
// Seconds of each of `reps` calls of f (the _time_* helpers of bench/api_overhead.py).
template <class F>
std::vector<double> seconds_per_call(int reps, const F& f) {
  std::vector<double> seconds;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return seconds;
}

template <class Class, class Get>
void bind_calls(Class& cls, Get get) {
  cls.def(
         "run",
         [get](typename Class::type& self, const py::dict& inputs) {
           auto [session, use] = get(self);
           return do_run(*session, inputs);
         },
         py::arg("inputs"),
         "One forward pass: a dict of numpy arrays in (names, dtypes and shapes of `tessera "
         "run`; C-contiguous arrays are read in place), a dict of numpy arrays out (no copy).")
      .def(
          "generate",
          [get](typename Class::type& self, const py::object& prompts, int64_t max_new_tokens,
                const std::string& method, float temperature, int64_t top_k, float top_p,
                float repetition_penalty, uint64_t seed, int64_t num_beams, float length_penalty,
                const std::string& early_stopping, const py::object& stop,
                int64_t num_return_sequences, int64_t batch_size, const py::object& on_token) {
            const GenArgs a = make_gen_args(max_new_tokens, method, temperature, top_k, top_p,
                                            repetition_penalty, seed, num_beams, length_penalty,
                                            early_stopping, stop, num_return_sequences, batch_size);
            auto [session, use] = get(self);
            return do_generate(*session, prompts, a, on_token);
          },
          py::arg("prompts"), TESSERA_GEN_KWARGS, py::arg("on_token") = py::none(),
          "Generation (options of `tessera generate`). prompts: a str or a list of str -> a list "
          "of str, one per prompt; a list of lists of token ids -> a list of lists of ids. With "
          "num_return_sequences > 1 each item is a list of that many. on_token: called with "
          "each tessera.Token as it is chosen (greedy, sample); returning False stops the "
          "generation with tessera.Cancelled.")
      .def(
          "embed",
          [get](typename Class::type& self, const py::object& texts, const std::string& pooling,
                bool normalize, int64_t batch_size) {
            auto [session, use] = get(self);
            return do_embed(*session, texts, pooling, normalize, batch_size);
          },
          py::arg("texts"), py::arg("pooling") = "cls", py::arg("normalize") = false,
          py::arg("batch_size") = 32,
          "Pooled vectors (bert): texts (a str or a list of str) or lists of token ids -> "
          "numpy float32 [n, hidden]. pooling: 'cls', 'mean' or 'pooler'.");
}

}  // namespace

PYBIND11_MODULE(tessera, m) {
  m.doc() =
      "Tessera, a CPU inference engine for transformers (nn.Transformer, GPT-2, BERT): the C++ "
      "API of libtessera for Python. Engine calls release the GIL; Python threads sharing a "
      "Model each get their own session.";
  m.attr("__version__") = tessera::version();

  // tessera.Error for every tessera::Error; tessera.Cancelled, its subclass, for a stopped
  // generation. pybind11 tries the translators last-registered first, so Cancelled is matched
  // before its base class.
  auto& error = py::register_exception<tessera::Error>(m, "Error", PyExc_Exception);
  py::register_exception<tessera::Cancelled>(m, "Cancelled", error.ptr());
  bind_ops(m);

  py::class_<PyModel> model(m, "Model",
                            "A model directory (config.json, model.safetensors, tokenizer files), "
                            "loaded once; share it between threads.");
  model
      .def(py::init([](const py::object& path_like, std::optional<int> threads,
                       std::optional<std::string> isa, std::optional<std::string> passes,
                       std::optional<std::string> dtype) {
             // A str or any os.PathLike (pathlib.Path).
             const auto path =
                 py::module_::import("os").attr("fspath")(path_like).cast<std::string>();
             tessera::ModelOptions o;
             o.threads = threads.value_or(0);
             o.isa = isa.value_or("");
             o.passes = passes.value_or("");
             o.dtype = dtype.value_or("");
             py::gil_scoped_release release;
             return PyModel{std::make_shared<Registry>(tessera::Model(path, o))};
           }),
           py::arg("path"), py::arg("threads") = py::none(), py::arg("isa") = py::none(),
           py::arg("passes") = py::none(), py::arg("dtype") = py::none(),
           "Loads a model directory. threads: kernel threads (None: every core); isa: 'avx512', "
           "'avx2' or 'generic' (None: the best this CPU has); passes: graph passes as "
           "`tessera --passes` takes (None: all); dtype: the GEMM weights, 'f32', 'bf16' or "
           "'int8' (None: what the directory holds; `tessera quantize` writes bf16/int8 ones).")
      .def_property_readonly("dtype", [](const PyModel& s) { return s.model().dtype(); })
      .def_property_readonly("family", [](const PyModel& s) { return s.model().family(); })
      .def_property_readonly("directory", [](const PyModel& s) { return s.model().directory(); })
      .def_property_readonly("threads", [](const PyModel& s) { return s.model().threads(); })
      .def_property_readonly("can_generate",
                             [](const PyModel& s) { return s.model().can_generate(); })
      .def_property_readonly("can_embed", [](const PyModel& s) { return s.model().can_embed(); })
      .def_property_readonly("has_tokenizer",
                             [](const PyModel& s) { return s.model().has_tokenizer(); })
      .def(
          "tokenize",
          [](const PyModel& s, const std::string& text, bool special) {
            py::gil_scoped_release release;
            return s.model().tokenize(text, special);
          },
          py::arg("text"), py::arg("special") = false,
          "Text to token ids with the directory's tokenizer; special: add the model's special "
          "tokens.")
      .def(
          "detokenize",
          [](const PyModel& s, const std::vector<int64_t>& ids, bool special) {
            py::gil_scoped_release release;
            return s.model().detokenize(ids, special);
          },
          py::arg("ids"), py::arg("special") = false,
          "Token ids to text; special: write the special tokens.")
      .def(
          "stream",
          [](py::object self, const std::string& prompt, int64_t max_new_tokens,
             const std::string& method, float temperature, int64_t top_k, float top_p,
             float repetition_penalty, uint64_t seed, int64_t num_beams, float length_penalty,
             const std::string& early_stopping, const py::object& stop,
             int64_t num_return_sequences, int64_t batch_size) {
            const GenArgs a = make_gen_args(max_new_tokens, method, temperature, top_k, top_p,
                                            repetition_penalty, seed, num_beams, length_penalty,
                                            early_stopping, stop, num_return_sequences, batch_size);
            // A session of its own: the generation runs on another thread while this Python
            // thread may go on using the model (or open another stream).
            tessera::GenerateOptions opt = Stream::options(a);
            auto session = std::make_shared<tessera::Session>(self.cast<PyModel&>().model());
            return std::make_unique<Stream>(std::move(session), prompt, std::move(opt), nullptr);
          },
          py::arg("prompt"), TESSERA_GEN_KWARGS,
          "Generation of one prompt as an iterator of text pieces (they concatenate to "
          "generate()'s text). Closing it early (break, close(), `with`) stops the generation.")
      .def("__repr__", [](const PyModel& s) {
        return "tessera.Model('" + s.model().directory() + "', family='" + s.model().family() +
               "', threads=" + std::to_string(s.model().threads()) + ")";
      });
  bind_calls(model, [](PyModel& self) {
    return std::make_pair(self.session(), 0);  // the thread's session, nothing to mark
  });

  // For bench/api_overhead.py: the same calls timed inside C++, on the calling thread's session
  // of the model (the one its run() and generate() use), so that the difference with timing
  // them from Python is the module's own cost. Seconds per call, `reps` of them.
  m.def(
      "_time_run",
      [](PyModel& model, const py::dict& inputs, int reps) {
        const auto session = model.session();
        Inputs in = to_inputs(inputs);
        py::gil_scoped_release release;
        return seconds_per_call(reps, [&] { session->run(in.views); });
      },
      py::arg("model"), py::arg("inputs"), py::arg("reps"));
  m.def(
      "_time_generate_ids",
      [](PyModel& model, const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
         int reps) {
        const auto session = model.session();
        tessera::GenerateOptions opt;
        opt.max_new_tokens = max_new_tokens;
        py::gil_scoped_release release;
        return seconds_per_call(reps, [&] { session->generate_ids(prompts, opt); });
      },
      py::arg("model"), py::arg("prompts"), py::arg("max_new_tokens"), py::arg("reps"));

  py::class_<PySession> session(m, "Session",
                                "One session on a model (its activation memory, KV caches): one "
                                "call at a time. tessera.Model's methods make one per thread.");
  session
      .def(py::init([](const PyModel& model) { return PySession(model.model()); }),
           py::arg("model"))
      .def_property_readonly(
          "model",
          [](const PySession& s) {
            return PyModel{std::make_shared<Registry>(s.session->model())};
          },
          "The model (a new tessera.Model object sharing the loaded weights).")
      .def_property_readonly("arena_bytes",
                             [](const PySession& s) { return s.session->arena_bytes(); })
      .def(
          "tokenize",
          [](const PySession& s, const std::string& text, bool special) {
            py::gil_scoped_release release;
            return s.session->model().tokenize(text, special);
          },
          py::arg("text"), py::arg("special") = false)
      .def(
          "detokenize",
          [](const PySession& s, const std::vector<int64_t>& ids, bool special) {
            py::gil_scoped_release release;
            return s.session->model().detokenize(ids, special);
          },
          py::arg("ids"), py::arg("special") = false)
      .def(
          "stream",
          [](PySession& self, const std::string& prompt, int64_t max_new_tokens,
             const std::string& method, float temperature, int64_t top_k, float top_p,
             float repetition_penalty, uint64_t seed, int64_t num_beams, float length_penalty,
             const std::string& early_stopping, const py::object& stop,
             int64_t num_return_sequences, int64_t batch_size) {
            const GenArgs a = make_gen_args(max_new_tokens, method, temperature, top_k, top_p,
                                            repetition_penalty, seed, num_beams, length_penalty,
                                            early_stopping, stop, num_return_sequences, batch_size);
            tessera::GenerateOptions opt = Stream::options(a);
            // The session stays busy until the stream is closed or exhausted.
            PySession::Use use(self);
            return std::make_unique<Stream>(self.session, prompt, std::move(opt), use.release());
          },
          py::arg("prompt"), TESSERA_GEN_KWARGS,
          "As tessera.Model.stream, on this session (busy until the stream ends or is closed).");
  bind_calls(session, [](PySession& self) {
    return std::make_pair(self.session, std::make_unique<PySession::Use>(self));
  });

  py::class_<tessera::Token>(m, "Token", "One generated token (generate's on_token).")
      .def_readonly("prompt", &tessera::Token::prompt, "index of the prompt")
      .def_readonly("sequence", &tessera::Token::sequence, "index of the sequence of that prompt")
      .def_readonly("id", &tessera::Token::id)
      .def_readonly("text", &tessera::Token::text,
                    "the text it completes (may be empty); a sequence's pieces make its text")
      .def("__repr__", [](const tessera::Token& t) {
        return "tessera.Token(prompt=" + std::to_string(t.prompt) +
               ", sequence=" + std::to_string(t.sequence) + ", id=" + std::to_string(t.id) +
               ", text=" + std::string(py::repr(py::str(t.text))) + ")";
      });

  py::class_<Stream>(m, "Stream", "The text pieces of a generation (tessera.Model.stream).")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &Stream::next)
      .def("close", &Stream::close, "Stops the generation and waits for it to end.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](Stream& s, const py::args&) { s.close(); });
}
