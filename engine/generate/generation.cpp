#include "engine/generate/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace tessera {

DecodingMethod parse_decoding_method(const std::string& name, const std::string& what) {
  if (name == "greedy") return DecodingMethod::greedy;
  if (name == "sample") return DecodingMethod::sample;
  if (name == "beam") return DecodingMethod::beam;
  throw Error(what + " '" + name + "' is not a decoding method (greedy, sample, beam)");
}

const char* decoding_method_name(DecodingMethod m) {
  switch (m) {
    case DecodingMethod::greedy:
      return "greedy";
    case DecodingMethod::sample:
      return "sample";
    case DecodingMethod::beam:
      return "beam";
  }
  return "?";
}

EarlyStopping parse_early_stopping(const std::string& name, const std::string& what) {
  if (name == "heuristic") return EarlyStopping::heuristic;
  if (name == "first") return EarlyStopping::first;
  if (name == "never") return EarlyStopping::never;
  throw Error(what + " '" + name + "' is not an early-stopping rule (heuristic, first, never)");
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::eos:
      return "eos";
    case FinishReason::stop_string:
      return "stop";
    case FinishReason::length:
      return "length";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Logits processing into caller-owned buffers (sized once per generate call).
// ---------------------------------------------------------------------------------------------
void penalize(float* logits, int64_t vocab, const std::vector<int64_t>& history, float penalty,
              std::vector<uint8_t>& seen) {
  if (penalty == 1.0f) return;
  seen.assign(static_cast<size_t>(vocab), 0);
  for (int64_t id : history) {
    if (id < 0 || id >= vocab || seen[id]) continue;
    seen[id] = 1;
    float& l = logits[id];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

void log_softmax_into(const float* logits, int64_t vocab, std::vector<double>& out) {
  out.resize(static_cast<size_t>(vocab));
  double m = kNegInf;
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - m);
  const double lse = m + std::log(sum);
  for (int64_t i = 0; i < vocab; ++i) out[i] = static_cast<double>(logits[i]) - lse;
}

// Probabilities after temperature, top-k and top-p (0 for removed tokens, normalised).
void sampling_distribution_into(const float* logits, int64_t vocab, float temperature,
                                int64_t top_k, float top_p, std::vector<double>& probs,
                                std::vector<double>& scratch, std::vector<int64_t>& order) {
  probs.resize(static_cast<size_t>(vocab));
  const double inv_t = 1.0 / static_cast<double>(temperature);
  for (int64_t i = 0; i < vocab; ++i) probs[i] = static_cast<double>(logits[i]) * inv_t;
  double kth = kNegInf;  // logits below it are removed
  if (top_k > 0 && top_k < vocab) {
    scratch.assign(probs.begin(), probs.end());
    std::nth_element(scratch.begin(), scratch.begin() + (top_k - 1), scratch.end(),
                     std::greater<double>());
    kth = scratch[top_k - 1];
  }
  double m = kNegInf;
  for (int64_t i = 0; i < vocab; ++i)
    if (probs[i] >= kth) m = std::max(m, probs[i]);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    probs[i] = probs[i] >= kth && m > kNegInf ? std::exp(probs[i] - m) : 0.0;
    sum += probs[i];
  }
  for (int64_t i = 0; i < vocab; ++i) probs[i] /= sum;
  if (top_p < 1.0f) {
    order.clear();
    for (int64_t i = 0; i < vocab; ++i)
      if (probs[i] > 0) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return probs[a] != probs[b] ? probs[a] > probs[b] : a < b;
    });
    double cum = 0, kept = 0;
    for (int64_t id : order) {
      if (cum < static_cast<double>(top_p)) {
        cum += probs[id];
        kept += probs[id];
      } else {
        probs[id] = 0;
      }
    }
    for (int64_t i = 0; i < vocab; ++i) probs[i] /= kept;
  }
}

int64_t argmax(const float* row, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

std::mt19937_64 row_rng(uint64_t seed, uint64_t stream) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  return std::mt19937_64(seq);
}

int64_t draw(const std::vector<double>& probs, std::mt19937_64& rng) {
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  double total = 0;
  for (double p : probs) total += p;
  const double target = u * total;
  double cum = 0;
  int64_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last = static_cast<int64_t>(i);
    if (cum > target) return last;
  }
  return last;  // rounding: u * total at the very end
}

bool contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

bool hits_stop_string(const GenerationOptions& o, const std::vector<int64_t>& ids) {
  if (o.stop_strings.empty()) return false;
  const std::string text = o.decode_text(ids);
  for (const auto& s : o.stop_strings)
    if (text.find(s) != std::string::npos) return true;
  return false;
}

void check_options(const GenerationOptions& o, int64_t vocab) {
  if (o.max_new_tokens < 1)
    throw Error("max_new_tokens must be at least 1, got " + std::to_string(o.max_new_tokens));
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    throw Error("repetition_penalty must be a finite number > 0, got " +
                std::to_string(o.repetition_penalty));
  if (o.num_return_sequences < 1)
    throw Error("num_return_sequences must be at least 1, got " +
                std::to_string(o.num_return_sequences));
  switch (o.method) {
    case DecodingMethod::greedy:
      if (o.num_return_sequences != 1)
        throw Error("greedy decoding returns one sequence per prompt (num_return_sequences " +
                    std::to_string(o.num_return_sequences) + "); use sampling or beam search");
      break;
    case DecodingMethod::sample:
      if (!(o.temperature > 0) || !std::isfinite(o.temperature))
        throw Error("temperature must be a finite number > 0, got " +
                    std::to_string(o.temperature));
      if (o.top_k < 0) throw Error("top_k must be >= 0 (0 = off), got " + std::to_string(o.top_k));
      if (!(o.top_p > 0 && o.top_p <= 1))
        throw Error("top_p must be in (0, 1] (1 = off), got " + std::to_string(o.top_p));
      break;
    case DecodingMethod::beam:
      if (o.num_beams < 1)
        throw Error("num_beams must be at least 1, got " + std::to_string(o.num_beams));
      if (o.num_return_sequences > o.num_beams)
        throw Error("num_return_sequences " + std::to_string(o.num_return_sequences) +
                    " is more than num_beams " + std::to_string(o.num_beams));
      if (!std::isfinite(o.length_penalty)) throw Error("length_penalty must be a finite number");
      break;
  }
  for (int64_t id : o.eos_ids)
    if (id < 0 || id >= vocab)
      throw Error("eos id " + std::to_string(id) + " is out of range for the vocabulary of " +
                  std::to_string(vocab));
  if (o.pad_id < -1 || o.pad_id >= vocab)
    throw Error("pad id " + std::to_string(o.pad_id) + " is out of range for the vocabulary of " +
                std::to_string(vocab));
  if (!o.stop_strings.empty() && !o.decode_text)
    throw Error("stop strings need a tokenizer to decode the generated text");
  for (const auto& s : o.stop_strings)
    if (s.empty()) throw Error("a stop string must not be empty");
}

// Checks a model's logits: [rows, vocab] f32.
const float* logits_rows(const Tensor& t, int64_t rows, int64_t vocab, const char* call) {
  if (t.dtype() != DType::f32 || t.rank() != 2 || t.dim(0) != rows || t.dim(1) != vocab)
    throw Error(std::string("CausalLM::") + call + " returned " + dtype_name(t.dtype()) + " " +
                shape_str(t.shape()) + " logits, expected F32 [" + std::to_string(rows) + ", " +
                std::to_string(vocab) + "]");
  return t.data<float>();
}

// Times the model calls.
class Timed {
 public:
  Timed(CausalLM& lm, GenerationStats& st) : lm_(lm), st_(st) {}
  Tensor start(const std::vector<std::vector<int64_t>>& prompts) {
    const auto t0 = Clock::now();
    Tensor out = lm_.start(prompts);
    st_.prefill_ms += ms_between(t0, Clock::now());
    return out;
  }
  Tensor step(const std::vector<int64_t>& tokens) {
    const auto t0 = Clock::now();
    Tensor out = lm_.step(tokens);
    st_.decode_ms += ms_between(t0, Clock::now());
    ++st_.decode_steps;
    st_.decode_rows += static_cast<int64_t>(tokens.size());
    return out;
  }
  void select_rows(const std::vector<int64_t>& rows) {
    const auto t0 = Clock::now();
    lm_.select_rows(rows);
    st_.decode_ms += ms_between(t0, Clock::now());
  }

 private:
  CausalLM& lm_;
  GenerationStats& st_;
};

// ---------------------------------------------------------------------------------------------
// Greedy and sampling: one row per output sequence, each independent.
// ---------------------------------------------------------------------------------------------
std::vector<GenerationResult> generate_rows(CausalLM& lm,
                                            const std::vector<std::vector<int64_t>>& prompts,
                                            const GenerationOptions& o, int64_t pad,
                                            const OnToken& on_token, GenerationStats& st) {
  const int64_t vocab = lm.vocab_size();
  const int64_t n_prompts = static_cast<int64_t>(prompts.size());
  const int64_t n = o.num_return_sequences;
  const int64_t rows = n_prompts * n;
  const bool sample = o.method == DecodingMethod::sample;
  const bool prefix = lm.prompts_are_decoder_prefix();

  struct Row {
    std::vector<int64_t> history;  // what the repetition penalty looks at
    GeneratedSequence seq;
    bool done = false;
    std::mt19937_64 rng;
  };
  std::vector<Row> state(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / n;
    if (prefix && o.repetition_penalty != 1.0f) state[r].history = prompts[p];
    if (sample)
      state[r].rng = row_rng(o.seed, static_cast<uint64_t>((o.row_offset + p) * n + r % n));
  }

  Timed model(lm, st);
  Tensor logits = model.start(prompts);
  int64_t logit_rows = n_prompts;  // rows of `logits`: the prompts first, then every sequence
  std::vector<float> work(static_cast<size_t>(vocab));
  std::vector<double> logp, probs, scratch;
  std::vector<int64_t> order;
  std::vector<uint8_t> seen;
  std::vector<int64_t> next(static_cast<size_t>(rows), pad);
  int64_t remaining = rows;
  for (int64_t t = 0; t < o.max_new_tokens; ++t) {
    const float* all = logits_rows(logits, logit_rows, vocab, t == 0 ? "start" : "step");
    for (int64_t r = 0; r < rows; ++r) {
      Row& row = state[r];
      if (row.done) {
        next[r] = pad;
        continue;
      }
      const int64_t lr = logit_rows == rows ? r : r / n;
      std::copy(all + lr * vocab, all + (lr + 1) * vocab, work.begin());
      penalize(work.data(), vocab, row.history, o.repetition_penalty, seen);
      log_softmax_into(work.data(), vocab, logp);
      int64_t token;
      if (sample) {
        sampling_distribution_into(work.data(), vocab, o.temperature, o.top_k, o.top_p, probs,
                                   scratch, order);
        token = draw(probs, row.rng);
      } else {
        token = argmax(work.data(), vocab);
      }
      next[r] = token;
      row.seq.logprob += logp[token];
      ++st.new_tokens;
      if (contains(o.eos_ids, token)) {
        row.done = true;
        row.seq.finish = FinishReason::eos;
      } else {
        row.seq.ids.push_back(token);
        if (o.repetition_penalty != 1.0f) row.history.push_back(token);
        if (on_token) on_token(r / n, r % n, token);
        if (hits_stop_string(o, row.seq.ids)) {
          row.done = true;
          row.seq.finish = FinishReason::stop_string;
        } else if (t + 1 == o.max_new_tokens) {
          row.done = true;
          row.seq.finish = FinishReason::length;
        }
      }
      if (row.done) --remaining;
    }
    if (remaining == 0) break;
    if (logit_rows != rows) {  // several samples per prompt: one row each from now on
      std::vector<int64_t> dup(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) dup[r] = r / n;
      model.select_rows(dup);
      logit_rows = rows;
    }
    logits = model.step(next);
  }
  std::vector<GenerationResult> out(static_cast<size_t>(n_prompts));
  for (int64_t r = 0; r < rows; ++r) {
    state[r].seq.score = state[r].seq.logprob;
    out[r / n].sequences.push_back(std::move(state[r].seq));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Beam search: prompts x num_beams rows.
// ---------------------------------------------------------------------------------------------
struct Beam {
  std::vector<int64_t> ids;
  double logprob = 0;
  int64_t row = 0;  // its row in the model's current batch
};

struct Candidate {
  double logprob;
  int64_t beam, token;
};

// Best first; ties: the lower beam, then the lower token (a total order: deterministic).
bool better(const Candidate& a, const Candidate& b) {
  if (a.logprob != b.logprob) return a.logprob > b.logprob;
  if (a.beam != b.beam) return a.beam < b.beam;
  return a.token < b.token;
}

class Hypotheses {  // the best num_beams finished sequences of one prompt
 public:
  Hypotheses(int64_t capacity, double length_penalty)
      : capacity_(capacity), length_penalty_(length_penalty) {}
  size_t size() const { return hyps_.size(); }
  double score_of(double logprob, int64_t length) const {
    return logprob / std::pow(static_cast<double>(length), length_penalty_);
  }
  // Hugging Face's rule: added while fewer than num_beams, else only when strictly better than
  // the worst kept one (which is then dropped).
  void add(std::vector<int64_t> ids, double logprob, int64_t length, FinishReason why) {
    GeneratedSequence s;
    s.ids = std::move(ids);
    s.logprob = logprob;
    s.score = score_of(logprob, length);
    s.finish = why;
    if (static_cast<int64_t>(hyps_.size()) >= capacity_) {
      if (!(s.score > worst())) return;
      hyps_.erase(hyps_.begin() + worst_index());
    }
    hyps_.push_back(std::move(s));
  }
  double worst() const { return hyps_[worst_index()].score; }
  // Best first; equal scores keep the order they were added in.
  std::vector<GeneratedSequence> sorted() const {
    std::vector<GeneratedSequence> s = hyps_;
    std::stable_sort(
        s.begin(), s.end(),
        [](const GeneratedSequence& a, const GeneratedSequence& b) { return a.score > b.score; });
    return s;
  }

 private:
  size_t worst_index() const {
    size_t w = 0;
    for (size_t i = 1; i < hyps_.size(); ++i)
      if (hyps_[i].score <= hyps_[w].score) w = i;  // the later one on ties
    return w;
  }
  int64_t capacity_;
  double length_penalty_;
  std::vector<GeneratedSequence> hyps_;
};

std::vector<GenerationResult> generate_beams(CausalLM& lm,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& o, int64_t pad,
                                             GenerationStats& st) {
  const int64_t vocab = lm.vocab_size();
  const int64_t n_prompts = static_cast<int64_t>(prompts.size());
  const int64_t width = o.num_beams;
  const int64_t n_cand = std::min<int64_t>(2 * width, width * vocab);
  const int64_t per_beam = std::min<int64_t>(n_cand, vocab);
  const bool prefix = lm.prompts_are_decoder_prefix();
  const double lp = o.length_penalty;

  struct PromptState {
    std::vector<Beam> live;  // best first
    Hypotheses hyps;
    bool done = false;
  };
  std::vector<PromptState> ps;
  for (int64_t p = 0; p < n_prompts; ++p) {
    ps.push_back(PromptState{{Beam{{}, 0.0, p}}, Hypotheses(width, lp), false});
  }

  Timed model(lm, st);
  Tensor logits = model.start(prompts);
  int64_t rows_per_prompt = 1;  // of `logits`: 1 after start, num_beams after each step
  std::vector<float> work(static_cast<size_t>(vocab));
  std::vector<double> logp;
  std::vector<uint8_t> seen;
  std::vector<int64_t> history, idx(static_cast<size_t>(vocab));
  std::vector<Candidate> cands;
  std::vector<int64_t> select(static_cast<size_t>(n_prompts * width));
  std::vector<int64_t> tokens(static_cast<size_t>(n_prompts * width));
  for (int64_t t = 0; t < o.max_new_tokens; ++t) {
    const float* all =
        logits_rows(logits, n_prompts * rows_per_prompt, vocab, t == 0 ? "start" : "step");
    const bool last = t + 1 == o.max_new_tokens;
    for (int64_t p = 0; p < n_prompts; ++p) {
      PromptState& s = ps[p];
      if (s.done) continue;
      // The best per_beam continuations of each live beam, then the best n_cand of all.
      cands.clear();
      for (int64_t b = 0; b < static_cast<int64_t>(s.live.size()); ++b) {
        const Beam& beam = s.live[b];
        const float* row = all + beam.row * vocab;
        std::copy(row, row + vocab, work.begin());
        if (o.repetition_penalty != 1.0f) {
          history.clear();
          if (prefix) history = prompts[p];
          history.insert(history.end(), beam.ids.begin(), beam.ids.end());
          penalize(work.data(), vocab, history, o.repetition_penalty, seen);
        }
        log_softmax_into(work.data(), vocab, logp);
        std::iota(idx.begin(), idx.end(), int64_t{0});
        std::partial_sort(
            idx.begin(), idx.begin() + per_beam, idx.end(),
            [&](int64_t a, int64_t c) { return logp[a] != logp[c] ? logp[a] > logp[c] : a < c; });
        for (int64_t k = 0; k < per_beam; ++k) {
          const double v = beam.logprob + logp[idx[k]];
          if (v > kNegInf) cands.push_back(Candidate{v, b, idx[k]});
        }
      }
      const size_t top = std::min(cands.size(), static_cast<size_t>(n_cand));
      std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(top),
                        cands.end(), better);
      cands.resize(top);

      std::vector<Beam> next;
      for (size_t rank = 0; rank < cands.size(); ++rank) {
        const Candidate& c = cands[rank];
        const Beam& from = s.live[c.beam];
        std::vector<int64_t> ids = from.ids;
        const int64_t length = static_cast<int64_t>(ids.size()) + 1;
        if (contains(o.eos_ids, c.token)) {
          if (static_cast<int64_t>(rank) < width)
            s.hyps.add(std::move(ids), c.logprob, length, FinishReason::eos);
          continue;
        }
        ids.push_back(c.token);
        if (hits_stop_string(o, ids)) {
          if (static_cast<int64_t>(rank) < width)
            s.hyps.add(std::move(ids), c.logprob, length, FinishReason::stop_string);
          continue;
        }
        next.push_back(Beam{std::move(ids), c.logprob, from.row});
        if (static_cast<int64_t>(next.size()) == width) break;
      }
      s.live = std::move(next);

      if (last) {  // out of tokens: the running beams become hypotheses too
        for (auto& b : s.live) {
          const int64_t length = static_cast<int64_t>(b.ids.size());
          s.hyps.add(std::move(b.ids), b.logprob, length, FinishReason::length);
        }
        s.live.clear();
        s.done = true;
      } else if (s.live.empty()) {
        s.done = true;
      } else if (static_cast<int64_t>(s.hyps.size()) >= width) {
        const double best = s.live.front().logprob;
        const int64_t cur = t + 1;  // tokens in the running beams
        switch (o.early_stopping) {
          case EarlyStopping::first:
            s.done = true;
            break;
          case EarlyStopping::heuristic:
            s.done = s.hyps.worst() >= s.hyps.score_of(best, cur);
            break;
          case EarlyStopping::never: {
            // A running beam's future sum is <= best (log-probabilities are <= 0) and its
            // length in [cur + 1, max_new_tokens]: bound best / length^lp over that range.
            const int64_t len = lp > 0 ? o.max_new_tokens : cur + 1;
            s.done = s.hyps.worst() >= s.hyps.score_of(best, len);
            break;
          }
        }
      }
      if (s.done) s.live.clear();
    }
    bool all_done = true;
    for (const auto& s : ps) all_done = all_done && s.done;
    if (all_done) break;

    // Next batch: row p * width + j holds beam j of prompt p (a copy of its parent's row);
    // slots without a beam copy the prompt's first row and are fed pad.
    bool identity = rows_per_prompt == width;
    for (int64_t p = 0; p < n_prompts; ++p) {
      PromptState& s = ps[p];
      for (int64_t j = 0; j < width; ++j) {
        const int64_t r = p * width + j;
        if (j < static_cast<int64_t>(s.live.size())) {
          select[r] = s.live[j].row;
          tokens[r] = s.live[j].ids.back();
          s.live[j].row = r;
        } else {
          select[r] = rows_per_prompt == width ? r : p * rows_per_prompt;
          tokens[r] = pad;
        }
        identity = identity && select[r] == r;
      }
    }
    if (!identity) model.select_rows(select);
    rows_per_prompt = width;
    logits = model.step(tokens);
  }

  std::vector<GenerationResult> out(static_cast<size_t>(n_prompts));
  for (int64_t p = 0; p < n_prompts; ++p) {
    auto seqs = ps[p].hyps.sorted();
    if (static_cast<int64_t>(seqs.size()) > o.num_return_sequences)
      seqs.resize(static_cast<size_t>(o.num_return_sequences));
    for (const auto& s : seqs)
      st.new_tokens += static_cast<int64_t>(s.ids.size()) + (s.finish == FinishReason::eos ? 1 : 0);
    out[p].sequences = std::move(seqs);
  }
  return out;
}

}  // namespace

void apply_repetition_penalty(float* logits, int64_t vocab, const std::vector<int64_t>& history,
                              float penalty) {
  std::vector<uint8_t> seen;
  penalize(logits, vocab, history, penalty, seen);
}

std::vector<double> log_softmax(const float* logits, int64_t vocab) {
  std::vector<double> out;
  log_softmax_into(logits, vocab, out);
  return out;
}

std::vector<double> sampling_distribution(const float* logits, int64_t vocab, float temperature,
                                          int64_t top_k, float top_p) {
  std::vector<double> probs, scratch;
  std::vector<int64_t> order;
  sampling_distribution_into(logits, vocab, temperature, top_k, top_p, probs, scratch, order);
  return probs;
}

std::vector<GenerationResult> generate(CausalLM& lm,
                                       const std::vector<std::vector<int64_t>>& prompts,
                                       const GenerationOptions& options, const OnToken& on_token,
                                       GenerationStats* stats) {
  const int64_t vocab = lm.vocab_size();
  check_options(options, vocab);
  const int64_t limit = lm.max_positions();
  const bool prefix = lm.prompts_are_decoder_prefix();
  for (size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) throw Error("prompt " + std::to_string(p) + " is empty");
    const int64_t used = prefix ? static_cast<int64_t>(prompts[p].size()) : 0;
    if (used + options.max_new_tokens > limit)
      throw Error("prompt " + std::to_string(p) + ": " +
                  (prefix ? std::to_string(used) + " prompt tokens + " : std::string()) +
                  std::to_string(options.max_new_tokens) +
                  " new tokens exceed the model's maximum of " + std::to_string(limit) +
                  " positions");
  }
  GenerationStats local;
  GenerationStats& st = stats ? *stats : local;
  if (prompts.empty()) return {};
  const int64_t pad =
      options.pad_id >= 0 ? options.pad_id : (options.eos_ids.empty() ? 0 : options.eos_ids[0]);
  if (options.method == DecodingMethod::beam) return generate_beams(lm, prompts, options, pad, st);
  return generate_rows(lm, prompts, options, pad, on_token, st);
}

SequenceSampler::SequenceSampler(const GenerationOptions& o, uint64_t stream,
                                 std::vector<int64_t> history)
    : o_(o), history_(std::move(history)) {
  if (o_.repetition_penalty == 1.0f) history_.clear();
  if (o_.method == DecodingMethod::sample) rng_ = row_rng(o_.seed, stream);
}

int64_t SequenceSampler::next(const float* logits, int64_t vocab, double* logprob) {
  if (o_.method != DecodingMethod::sample && o_.repetition_penalty == 1.0f && !logprob)
    return argmax(logits, vocab);  // greedy as it is: no copy of the row
  work_.assign(logits, logits + vocab);
  penalize(work_.data(), vocab, history_, o_.repetition_penalty, seen_);
  int64_t token;
  if (o_.method == DecodingMethod::sample) {
    sampling_distribution_into(work_.data(), vocab, o_.temperature, o_.top_k, o_.top_p, probs_,
                               scratch_, order_);
    token = draw(probs_, rng_);
  } else {
    token = argmax(work_.data(), vocab);
  }
  if (logprob) {
    log_softmax_into(work_.data(), vocab, logp_);
    *logprob += logp_[static_cast<size_t>(token)];
  }
  if (o_.repetition_penalty != 1.0f) history_.push_back(token);
  return token;
}

}  // namespace tessera
