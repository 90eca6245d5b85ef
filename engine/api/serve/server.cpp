// tessera::Server (include/tessera/server.hpp): the HTTP layer on cpp-httplib over the scheduler
// (engine/api/serve/scheduler.h). Handlers run on httplib's worker threads: a completion request
// is checked and turned into sequences, submitted, and its events are written as they come (one
// SSE chunk per token when streaming); embeddings and tokenizer requests run on the worker
// thread itself. Every request ends in one log line and in the metrics.
#include <httplib.h>
#include <tessera/server.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>

#include "engine/api/driver.h"
#include "engine/api/serve/metrics.h"
#include "engine/api/serve/scheduler.h"
#include "engine/io/limits.h"
#include "engine/io/model_dir.h"
#include "engine/text/tokenizers.h"
#include "kernels/kernels.h"
#include "models/model.h"

namespace tessera {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// An HTTP error with an OpenAI-style body.
struct HttpError {
  int status;
  std::string message, type, param;
};

// JSON text; bytes that are not UTF-8 (a client's odd input echoed in a message) become U+FFFD
// instead of throwing.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpError bad_request(const std::string& message, const std::string& param = {}) {
  return {400, message, "invalid_request_error", param};
}

void write_error(httplib::Response& res, const HttpError& e) {
  json body = {{"error",
                {{"message", e.message},
                 {"type", e.type},
                 {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                 {"code", nullptr}}}};
  res.status = e.status;
  res.set_content(dump(body), "application/json");
}

// The field an engine message names first ("max_tokens: ..."), if it is one of the request's.
std::string field_of(const std::string& message, const std::set<std::string>& fields) {
  const size_t colon = message.find(':');
  if (colon == std::string::npos) return {};
  const std::string f = message.substr(0, colon);
  return fields.count(f) ? f : std::string();
}

int64_t get_int(const json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number_integer())
    throw bad_request(std::string(key) + " must be an integer, got " + dump(*it), key);
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi)
    throw bad_request(std::string(key) + " must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "], got " + std::to_string(v),
                      key);
  return v;
}

float get_number(const json& body, const char* key, float fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number())
    throw bad_request(std::string(key) + " must be a number, got " + dump(*it), key);
  const double v = it->get<double>();
  if (!std::isfinite(v) || std::abs(v) > 1e30)
    throw bad_request(std::string(key) + " must be a finite number", key);
  return static_cast<float>(v);
}

bool get_bool(const json& body, const char* key, bool fallback) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    throw bad_request(std::string(key) + " must be true or false, got " + dump(*it), key);
  return it->get<bool>();
}

json parse_body(const httplib::Request& req) {
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception& e) {
    throw bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw bad_request("the body must be a JSON object");
  return body;
}

void check_fields(const json& body, const std::set<std::string>& allowed) {
  for (const auto& [key, value] : body.items())
    if (!allowed.count(key)) throw bad_request("unknown field '" + key + "'", key);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

const std::set<std::string> kCompletionFields = {
    "prompt", "max_tokens", "temperature", "top_p",  "top_k", "repetition_penalty",
    "stop",   "n",          "seed",        "stream", "model", "user"};

}  // namespace

struct Server::Impl {
  ServerOptions o;
  httplib::Server http;
  std::thread listen_thread, load_thread;
  int port = 0;
  std::atomic<int> state{0};  // 0 loading, 1 ready, 2 failed
  std::string load_error;     // set before state becomes 2
  std::string model_id;
  int64_t created = 0;
  int threads = 1;
  models::LoadOptions load_options;  // the weight dtype

  std::shared_ptr<const models::Model> model;
  std::optional<api::Generator> gen;               // completions (text)
  std::shared_ptr<const TextTokenizer> tokenizer;  // /tokenize, /detokenize, embeddings
  std::unique_ptr<serve::Scheduler> sched;
  serve::Metrics metrics;

  // Per in-flight request: its start and the tokens it generated (for the log line).
  struct Flight {
    Clock::time_point start;
    int64_t tokens = 0;
  };
  std::mutex flights_mu;
  std::unordered_map<const httplib::Request*, Flight> flights;

  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopping = false, stopped = false, started = false;

  explicit Impl(ServerOptions opt) : o(std::move(opt)) {}

  void note_tokens(const httplib::Request& req, int64_t n) {
    std::lock_guard<std::mutex> lock(flights_mu);
    flights[&req].tokens += n;
  }

  // ---- endpoints ------------------------------------------------------------------------------
  void require_ready() {
    if (state == 0) throw HttpError{503, "the model is still loading", "unavailable", ""};
    if (state == 2)
      throw HttpError{503, "the model failed to load: " + load_error, "unavailable", ""};
  }

  void health(httplib::Response& res) {
    json body;
    if (state == 1) {
      body = {{"status", "ok"}};
      res.status = 200;
    } else if (state == 0) {
      body = {{"status", "loading"}};
      res.status = 503;
    } else {
      body = {{"status", "error"}, {"message", load_error}};
      res.status = 503;
    }
    res.set_content(dump(body), "application/json");
  }

  void models_list(httplib::Response& res) {
    json data = json::array();
    data.push_back(
        {{"id", model_id},
         {"object", "model"},
         {"created", created},
         {"owned_by", "tessera"},
         {"family", model ? model->family() : "loading"},
         {"dtype", model ? kernels::weight_type_name(models::weight_type(*model)) : "loading"}});
    res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
  }

  const TextTokenizer& need_tokenizer() {
    require_ready();
    if (!tokenizer)
      throw bad_request("model '" + model_id +
                        "' has no tokenizer (tokenizer.json, vocab.json + "
                        "merges.txt or vocab.txt)");
    return *tokenizer;
  }

  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const TextTokenizer& tok = need_tokenizer();
    const json body = parse_body(req);
    check_fields(body, {"content", "add_special"});
    auto it = body.find("content");
    if (it == body.end() || !it->is_string())
      throw bad_request("content must be a string", "content");
    const std::string text = it->get<std::string>();
    check_text_bytes(text.size(), "content");
    std::vector<int64_t> ids;
    try {
      ids = tok.encode(text, get_bool(body, "add_special", false));
    } catch (const Error& e) {
      throw bad_request(e.what(), "content");
    }
    res.set_content(dump(json{{"tokens", ids}}), "application/json");
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const TextTokenizer& tok = need_tokenizer();
    const json body = parse_body(req);
    check_fields(body, {"tokens"});
    auto it = body.find("tokens");
    if (it == body.end() || !it->is_array())
      throw bad_request("tokens must be an array of token ids", "tokens");
    std::vector<int64_t> ids;
    for (const auto& v : *it) {
      if (!v.is_number_integer()) throw bad_request("tokens must be integers", "tokens");
      const int64_t id = v.get<int64_t>();
      if (id < 0 || id >= tok.vocab_size())
        throw bad_request("token id " + std::to_string(id) +
                              " is out of range for a vocabulary of " +
                              std::to_string(tok.vocab_size()),
                          "tokens");
      ids.push_back(id);
    }
    res.set_content(dump(json{{"content", tok.decode(ids)}}), "application/json");
  }

  void embeddings(const httplib::Request& req, httplib::Response& res) {
    require_ready();
    const auto t0 = Clock::now();
    const json body = parse_body(req);
    check_fields(body, {"input", "model", "encoding_format", "user"});
    if (!model->bert())
      throw bad_request(
          "embeddings need a bert model; model '" + model_id + "' is " + model->family(), "model");
    if (auto f = body.find("encoding_format");
        f != body.end() && !(f->is_string() && f->get<std::string>() == "float"))
      throw bad_request("encoding_format must be \"float\"", "encoding_format");
    auto it = body.find("input");
    std::vector<std::string> texts;
    if (it != body.end() && it->is_string()) {
      texts.push_back(it->get<std::string>());
    } else if (it != body.end() && it->is_array() && !it->empty()) {
      for (const auto& v : *it) {
        if (!v.is_string()) throw bad_request("input must be a string or strings", "input");
        texts.push_back(v.get<std::string>());
      }
    } else {
      throw bad_request("input must be a string or a non-empty array of strings", "input");
    }
    if (static_cast<int64_t>(texts.size()) > 2048)
      throw bad_request("input holds more than 2048 texts", "input");
    const TextTokenizer& tok = need_tokenizer();
    std::vector<std::vector<int64_t>> seqs;
    try {
      for (size_t i = 0; i < texts.size(); ++i)
        check_text_bytes(texts[i].size(), "input " + std::to_string(i));
      seqs = api::tokenize_for_embedding(tok, texts);
    } catch (const Error& e) {
      throw bad_request(e.what(), "input");
    }
    int64_t tokens = 0;
    for (const auto& s : seqs) tokens += static_cast<int64_t>(s.size());
    Tensor vectors;
    {
      // This worker thread's own graph sessions (arenas), bound for the call.
      thread_local SessionSet sessions;
      SessionSet::Bind bind(sessions);
      kernels::ScopedThreads scoped(threads);
      try {
        vectors = api::embed(*model, seqs, Pooling::cls, /*normalize=*/true, 32);
      } catch (const Error& e) {
        throw bad_request(e.what(), "input");
      }
    }
    const int64_t dim = vectors.dim(1);
    json data = json::array();
    for (int64_t i = 0; i < vectors.dim(0); ++i) {
      const float* v = vectors.data<float>() + i * dim;
      data.push_back(
          {{"object", "embedding"}, {"index", i}, {"embedding", std::vector<float>(v, v + dim)}});
    }
    metrics.tokens(tokens, 0);
    metrics.duration(seconds_since(t0));
    res.set_content(dump(json{{"object", "list"},
                              {"data", data},
                              {"model", model_id},
                              {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}}),
                    "application/json");
  }

  // The prompts of a completion request as token ids: strings (encoded), one array of ids, or
  // arrays of ids.
  std::vector<std::vector<int64_t>> prompts_of(const json& body) {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) throw bad_request("prompt is required", "prompt");
    std::vector<std::string> texts;
    std::vector<std::vector<int64_t>> ids;
    auto id_list = [&](const json& a) {
      std::vector<int64_t> v;
      for (const auto& x : a) {
        if (!x.is_number_integer())
          throw bad_request("prompt token ids must be integers", "prompt");
        v.push_back(x.get<int64_t>());
      }
      if (v.empty()) throw bad_request("a prompt has no tokens", "prompt");
      return v;
    };
    if (it->is_string()) {
      texts.push_back(it->get<std::string>());
    } else if (it->is_array() && !it->empty()) {
      if ((*it)[0].is_number_integer()) {
        ids.push_back(id_list(*it));
      } else {
        for (const auto& p : *it) {
          if (p.is_string())
            texts.push_back(p.get<std::string>());
          else if (p.is_array())
            ids.push_back(id_list(p));
          else
            throw bad_request("prompt must be a string, an array of strings, or token ids",
                              "prompt");
        }
        if (!texts.empty() && !ids.empty())
          throw bad_request("prompt mixes strings and token ids", "prompt");
      }
    } else {
      throw bad_request("prompt must be a string, a non-empty array of strings, or token ids",
                        "prompt");
    }
    if (ids.empty()) {
      if (!gen->codec)
        throw bad_request("model '" + model_id + "' has no tokenizer: give prompt as token ids",
                          "prompt");
      try {
        ids = api::encode_prompts(*gen, texts);
      } catch (const Error& e) {
        throw bad_request(e.what(), "prompt");
      }
      for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i].empty())
          throw bad_request("prompt " + std::to_string(i) + " has no tokens", "prompt");
    }
    return ids;
  }

  // A finished request's choices, usage and the status to answer with.
  struct Outcome {
    std::vector<serve::Event> finished;  // by sequence
    std::vector<int64_t> tokens;         // generated, by sequence
  };

  void completions(const httplib::Request& req, httplib::Response& res) {
    require_ready();
    const auto t0 = Clock::now();
    if (!gen || !sched)
      throw bad_request("model '" + model_id + "' (" + model->family() +
                            ") does not generate text; completions need a gpt2 model or a "
                            "transformer model with a tokenizer",
                        "model");
    const json body = parse_body(req);
    check_fields(body, kCompletionFields);
    if (auto m = body.find("model"); m != body.end() && !m->is_string())
      throw bad_request("model must be a string", "model");
    if (auto u = body.find("user"); u != body.end() && !u->is_string())
      throw bad_request("user must be a string", "user");
    const auto prompts = prompts_of(body);
    serve::SeqRequest base;
    base.max_tokens = get_int(body, "max_tokens", 16, 1, int64_t{1} << 30);
    base.temperature = get_number(body, "temperature", 1.0f);
    base.top_p = get_number(body, "top_p", 1.0f);
    base.top_k = get_int(body, "top_k", 0, -1, int64_t{1} << 30);
    if (base.top_k < 0) base.top_k = 0;  // -1: off, as llama.cpp takes it
    base.repetition_penalty = get_number(body, "repetition_penalty", 1.0f);
    const int64_t n = get_int(body, "n", 1, 1, 128);
    if (auto s = body.find("seed"); s != body.end() && !s->is_null()) {
      if (!s->is_number_integer() ||
          (s->is_number_integer() && !s->is_number_unsigned() && s->get<int64_t>() < 0))
        throw bad_request("seed must be a non-negative integer", "seed");
      base.seed = s->get<uint64_t>();
    } else {
      static std::atomic<uint64_t> counter{0};
      std::random_device rd;
      base.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ counter.fetch_add(1);
    }
    if (auto s = body.find("stop"); s != body.end() && !s->is_null()) {
      if (s->is_string()) {
        base.stop.push_back(s->get<std::string>());
      } else if (s->is_array() && s->size() <= 4) {
        for (const auto& x : *s) {
          if (!x.is_string()) throw bad_request("stop must be a string or strings", "stop");
          base.stop.push_back(x.get<std::string>());
        }
      } else {
        throw bad_request("stop must be a string or an array of up to 4 strings", "stop");
      }
    }
    const bool stream = get_bool(body, "stream", false);
    std::vector<serve::SeqRequest> seqs;
    int64_t prompt_tokens = 0;
    for (size_t p = 0; p < prompts.size(); ++p) {
      prompt_tokens += static_cast<int64_t>(prompts[p].size());
      for (int64_t j = 0; j < n; ++j) {
        serve::SeqRequest s = base;
        s.prompt = prompts[p];
        s.stream = static_cast<int64_t>(p) * n + j;
        seqs.push_back(std::move(s));
      }
    }
    std::shared_ptr<serve::Ticket> ticket;
    try {
      ticket = sched->submit(std::move(seqs));
    } catch (const serve::QueueFull& e) {
      res.set_header("Retry-After", "1");
      throw HttpError{503, e.what(), "server_busy", ""};
    } catch (const serve::Unavailable& e) {
      throw HttpError{503, e.what(), "unavailable", ""};
    } catch (const Error& e) {
      throw bad_request(e.what(), field_of(e.what(), kCompletionFields));
    }
    const std::string id =
        "cmpl-" + std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
    const int64_t created_at = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
    if (stream) {
      stream_completion(req, res, ticket, id, created_at, prompt_tokens, t0);
      return;
    }
    // Not streamed: collect every event, then answer.
    const int64_t count = ticket->sequences();
    std::vector<serve::Event> done(static_cast<size_t>(count));
    std::vector<double> last(static_cast<size_t>(count), -1);
    int64_t finished = 0, generated = 0;
    serve::Event e;
    while (finished < count) {
      if (!ticket->next(e, std::chrono::milliseconds(200))) continue;
      observe(e, last);
      if (e.kind == serve::Event::Kind::finished) {
        generated += static_cast<int64_t>(e.ids.size());
        done[static_cast<size_t>(e.seq)] = std::move(e);
        ++finished;
      }
    }
    note_tokens(req, generated);
    metrics.tokens(prompt_tokens, generated);
    metrics.duration(seconds_since(t0));
    json choices = json::array();
    for (int64_t i = 0; i < count; ++i) {
      const serve::Event& d = done[static_cast<size_t>(i)];
      if (d.finish == serve::Finish::error) throw bad_request(d.text, "prompt");
      if (d.finish == serve::Finish::timeout)
        throw HttpError{
            504,
            "the request ran past the server's timeout of " + std::to_string(o.timeout_s) + " s",
            "timeout", ""};
      if (d.finish == serve::Finish::cancelled)
        throw HttpError{503, "the server stopped before the request finished", "unavailable", ""};
      choices.push_back({{"text", d.text},
                         {"index", i},
                         {"logprobs", nullptr},
                         {"finish_reason", serve::finish_name(d.finish)}});
    }
    res.set_content(dump(json{{"id", id},
                              {"object", "text_completion"},
                              {"created", created_at},
                              {"model", model_id},
                              {"choices", choices},
                              {"usage",
                               {{"prompt_tokens", prompt_tokens},
                                {"completion_tokens", generated},
                                {"total_tokens", prompt_tokens + generated}}}}),
                    "application/json");
  }

  // Time to first token and inter-token gaps of each sequence, from its token events.
  void observe(const serve::Event& e, std::vector<double>& last) {
    if (e.kind != serve::Event::Kind::token || e.token < 0) return;
    double& l = last[static_cast<size_t>(e.seq)];
    if (l < 0)
      metrics.first_token(e.ms / 1000.0);
    else
      metrics.inter_token((e.ms - l) / 1000.0);
    l = e.ms;
  }

  void stream_completion(const httplib::Request& req, httplib::Response& res,
                         std::shared_ptr<serve::Ticket> ticket, const std::string& id,
                         int64_t created_at, int64_t prompt_tokens, Clock::time_point t0) {
    struct State {
      int64_t finished = 0, generated = 0;
      std::vector<double> last;
      std::vector<std::string> tail;  // per choice: text of no token (an unfinished character)
    };
    auto st = std::make_shared<State>();
    st->last.assign(static_cast<size_t>(ticket->sequences()), -1);
    st->tail.resize(static_cast<size_t>(ticket->sequences()));
    const httplib::Request* rq = &req;
    auto chunk = [id, created_at, this](int64_t index, const std::string& text,
                                        const char* finish) {
      json c = {{"id", id},
                {"object", "text_completion"},
                {"created", created_at},
                {"model", model_id},
                {"choices",
                 {{{"text", text},
                   {"index", index},
                   {"logprobs", nullptr},
                   {"finish_reason", finish ? json(finish) : json(nullptr)}}}}};
      return "data: " + dump(c) + "\n\n";
    };
    res.set_header("Cache-Control", "no-cache");
    // A proxy in front (deploy/nginx) passes each event on as it comes, whatever its buffering
    // setting for the location the request went to.
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ticket, st, chunk, rq, prompt_tokens](size_t, httplib::DataSink& sink) {
          const int64_t count = ticket->sequences();
          serve::Event e;
          while (st->finished < count) {
            if (!ticket->next(e, std::chrono::milliseconds(100))) {
              if (!sink.is_writable()) {
                ticket->cancel();  // the client left: its rows free at the next step
                return false;
              }
              continue;
            }
            observe(e, st->last);
            std::string out;
            if (e.kind == serve::Event::Kind::token) {
              if (e.token < 0) {  // text held back at the end: sent with the finish chunk
                st->tail[static_cast<size_t>(e.seq)] += e.text;
                continue;
              }
              out = chunk(e.seq, e.text, nullptr);  // one per token, its text possibly empty
            } else {
              ++st->finished;
              st->generated += static_cast<int64_t>(e.ids.size());
              const char* why =
                  e.finish == serve::Finish::error ? "error" : serve::finish_name(e.finish);
              out = chunk(e.seq, st->tail[static_cast<size_t>(e.seq)], why);
              if (e.finish == serve::Finish::error)
                out += "data: " +
                       dump(json{
                           {"error", {{"message", e.text}, {"type", "invalid_request_error"}}}}) +
                       "\n\n";
            }
            if (!sink.write(out.data(), out.size())) {
              ticket->cancel();
              return false;
            }
          }
          // Tokens counted before [DONE]: a client that reads it and then /metrics sees them.
          note_tokens(*rq, st->generated);
          metrics.tokens(prompt_tokens, st->generated);
          const std::string end = "data: [DONE]\n\n";
          sink.write(end.data(), end.size());
          sink.done();
          return true;
        },
        [ticket, t0, this](bool) {
          ticket->cancel();  // no-op when finished
          metrics.duration(seconds_since(t0));
        });
  }

  // ---- wiring ---------------------------------------------------------------------------------
  template <class F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const HttpError& e) {
        write_error(res, e);
      } catch (const Error& e) {
        write_error(res, bad_request(e.what()));
      } catch (const std::exception& e) {
        write_error(res, {500, e.what(), "server_error", ""});
      }
    };
  }

  static std::string endpoint_of(const std::string& path) {
    static const std::set<std::string> known = {"/v1/completions", "/v1/embeddings", "/tokenize",
                                                "/detokenize",     "/v1/models",     "/health",
                                                "/metrics"};
    return known.count(path) ? path : "other";
  }

  void routes() {
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(flights_mu);
        flights[&req] = Flight{Clock::now(), 0};
      }
      if (!o.api_key.empty() && req.path != "/health") {
        const std::string auth = req.get_header_value("Authorization");
        if (auth != "Bearer " + o.api_key) {
          write_error(
              res,
              {401, auth.empty() ? "missing Authorization: Bearer <key> header" : "invalid API key",
               "authentication_error", ""});
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) { health(res); });
    http.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
               models_list(res);
             }));
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      serve::SchedulerStats s;
      const bool have = state == 1 && sched;
      if (have) s = sched->stats();
      res.set_content(metrics.text(have ? &s : nullptr), "text/plain; version=0.0.4");
    });
    http.Post("/tokenize", guarded([this](const auto& q, auto& r) { tokenize(q, r); }));
    http.Post("/detokenize", guarded([this](const auto& q, auto& r) { detokenize(q, r); }));
    http.Post("/v1/embeddings", guarded([this](const auto& q, auto& r) { embeddings(q, r); }));
    http.Post("/v1/completions", guarded([this](const auto& q, auto& r) { completions(q, r); }));
    // Statuses httplib sets itself (404 unknown path, 413 body too large, 400 bad request line)
    // get an error body too. httplib answers 404 to a known path asked with the wrong method:
    // that is a 405 with Allow naming the path's method.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404 && endpoint_of(req.path) != "other") {
        const bool get =
            req.path == "/v1/models" || req.path == "/health" || req.path == "/metrics";
        res.status = 405;
        res.set_header("Allow", get ? "GET" : "POST");
      }
      std::string message = "HTTP " + std::to_string(res.status);
      if (res.status == 404) message = "no endpoint " + req.method + " " + req.path;
      if (res.status == 405)
        message = "method " + req.method + " not allowed on " + req.path +
                  " (allowed: " + res.get_header_value("Allow") + ")";
      if (res.status == 413) message = "the request body is larger than the server's limit";
      write_error(res, {res.status, message, "invalid_request_error", ""});
    });
    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          write_error(res, {500, "internal error", "server_error", ""});
        });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      Flight f{Clock::now(), 0};
      {
        std::lock_guard<std::mutex> lock(flights_mu);
        auto it = flights.find(&req);
        if (it != flights.end()) {
          f = it->second;
          flights.erase(it);
        }
      }
      metrics.request(endpoint_of(req.path), res.status);
      if (o.log_requests)
        std::fprintf(stderr, "tessera serve: %s %s %d tokens=%lld %.1f ms\n", req.method.c_str(),
                     req.path.c_str(), res.status, static_cast<long long>(f.tokens),
                     seconds_since(f.start) * 1000.0);
    });
    http.set_payload_max_length(static_cast<size_t>(o.max_body_bytes));
    http.set_keep_alive_max_count(1000);
    const size_t workers = static_cast<size_t>(std::max<int64_t>(8, o.max_batch + o.max_queue + 8));
    http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  }

  void load() {
    try {
      kernels::ScopedThreads scoped(threads);
      model = models::load_model(ModelDir(o.model), load_options);
      if (has_tokenizer(o.model)) tokenizer = load_tokenizer(o.model);
      if (!model->bert()) {
        try {
          gen = api::make_generator(o.model, /*want_text=*/true, model, api::OptionStyle::api);
        } catch (const Error&) {
          // A model without a tokenizer still completes prompts given as token ids.
          gen = api::make_generator(o.model, false, model, api::OptionStyle::api);
        }
        if (!tokenizer && gen->codec) tokenizer = gen->codec;
        serve::SchedulerOptions so;
        so.threads = threads;
        so.max_batch = o.max_batch;
        so.max_queue = o.max_queue;
        so.kv_budget_bytes = static_cast<uint64_t>(o.kv_budget_mb) << 20;
        so.timeout_s = o.timeout_s;
        so.prefill_chunk = o.prefill_chunk;
        sched = std::make_unique<serve::Scheduler>(*gen, so);
      }
      state = 1;
      if (o.log_requests)
        std::fprintf(stderr, "tessera serve: model '%s' (%s, %s weights) ready\n", model_id.c_str(),
                     model->family(), kernels::weight_type_name(models::weight_type(*model)));
    } catch (const std::exception& e) {
      load_error = e.what();
      state = 2;
      std::fprintf(stderr, "tessera serve: %s\n", e.what());
      std::thread([this] { shutdown(); }).detach();
    }
  }

  // Once; a second caller waits until the first has finished.
  void shutdown() {
    {
      std::unique_lock<std::mutex> lock(stop_mu);
      if (!started) return;
      if (stopping) {
        stop_cv.wait(lock, [&] { return stopped; });
        return;
      }
      stopping = true;
    }
    if (load_thread.joinable() && load_thread.get_id() != std::this_thread::get_id())
      load_thread.join();
    if (sched) sched->close();  // new completions: 503
    http.stop();                // no new connections; running handlers go on
    if (sched) {
      const auto deadline =
          Clock::now() + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(std::max(0.0, o.drain_s)));
      if (!sched->drain(deadline) && o.log_requests)
        std::fprintf(stderr, "tessera serve: drain limit of %.1f s reached; requests cancelled\n",
                     o.drain_s);
    }
    if (listen_thread.joinable()) listen_thread.join();  // waits for the handlers
    if (sched) sched->stop();
    std::lock_guard<std::mutex> lock(stop_mu);  // notified under the lock: a waiter may
    stopped = true;                             // destroy the server as soon as it wakes
    stop_cv.notify_all();
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  const ServerOptions& o = impl_->o;
  if (o.model.empty()) throw Error("ServerOptions::model: a model directory is required");
  if (o.port < 0 || o.port > 65535)
    throw Error("port must be in [0, 65535], got " + std::to_string(o.port));
  if (o.threads < 0) throw Error("threads must be >= 0 (0: every core)");
  if (o.max_batch < 1) throw Error("max batch must be at least 1");
  if (o.max_queue < 0) throw Error("max queue must not be negative");
  if (o.kv_budget_mb < 1) throw Error("the KV-cache budget must be at least 1 MiB");
  if (!(o.timeout_s >= 0)) throw Error("timeout must be >= 0 seconds (0: none)");
  if (o.max_body_bytes < 1) throw Error("max body bytes must be at least 1");
  if (!(o.drain_s >= 0)) throw Error("drain must be >= 0 seconds");
  if (o.prefill_chunk < 0) throw Error("prefill chunk must be >= 0 (0: whole prompts)");
  impl_->load_options.dtype = models::parse_weight_dtype(o.dtype, "dtype");
  if (!std::filesystem::is_directory(o.model))
    throw Error("model directory '" + o.model + "' does not exist");
  if (!o.isa.empty()) {
    // Chosen once per process, before anything runs a kernel.
    const std::string& n = o.isa;
    kernels::Isa isa;
    if (n == "avx512")
      isa = kernels::Isa::avx512;
    else if (n == "avx2")
      isa = kernels::Isa::avx2;
    else if (n == "generic")
      isa = kernels::Isa::generic;
    else
      throw Error("isa must be avx512, avx2 or generic, got '" + n + "'");
    if (!kernels::isa_supported(isa) || !kernels::request_isa(isa))
      throw Error("isa '" + n + "' cannot run in this process on this CPU");
  }
  impl_->threads = o.threads > 0 ? o.threads : kernels::num_threads();
  std::string id = std::filesystem::path(o.model).lexically_normal().filename().string();
  if (id.empty()) id = std::filesystem::path(o.model).lexically_normal().parent_path().filename();
  impl_->model_id = id.empty() ? o.model : id;
}

Server::~Server() {
  shutdown();
}

void Server::start() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.stop_mu);
    if (m.started) throw Error("the server is already started");
  }
  m.routes();
  if (m.o.port == 0) {
    m.port = m.http.bind_to_any_port(m.o.host);
    if (m.port <= 0) throw Error("cannot listen on " + m.o.host + " (any port)");
  } else {
    if (!m.http.bind_to_port(m.o.host, m.o.port))
      throw Error("cannot listen on " + m.o.host + ":" + std::to_string(m.o.port) +
                  " (in use, or not an address of this machine)");
    m.port = m.o.port;
  }
  m.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  {
    std::lock_guard<std::mutex> lock(m.stop_mu);
    m.started = true;
  }
  m.listen_thread = std::thread([&m] { m.http.listen_after_bind(); });
  m.load_thread = std::thread([&m] { m.load(); });
}

int Server::port() const {
  return impl_->port;
}
bool Server::ready() const {
  return impl_->state == 1;
}

void Server::wait() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.stop_mu);
  m.stop_cv.wait(lock, [&] { return m.stopped || !m.started; });
}

void Server::shutdown() {
  impl_->shutdown();
}

std::string Server::load_error() const {
  return impl_->state == 2 ? impl_->load_error : "";
}

}  // namespace tessera
