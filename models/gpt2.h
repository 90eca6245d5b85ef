// The `gpt2` family: a Hugging Face GPT-2 checkpoint as exported (GPT2Model / GPT2LMHeadModel).
//
// config.json: n_layer, n_embd, n_head, n_positions (or n_ctx), vocab_size, layer_norm_epsilon,
// activation_function (gelu_new | gelu_pytorch_tanh | gelu_fast -> tanh GELU, gelu -> erf GELU,
// relu), n_inner (default 4 n_embd), scale_attn_weights, scale_attn_by_inverse_layer_idx,
// bos_token_id, eos_token_id.
// Tensors, with or without the "transformer." prefix (Conv1D weights are [in, out]):
//   wte.weight [V, E]  wpe.weight [P, E]
//   h.N.ln_1.{weight,bias} [E]   h.N.attn.c_attn.{weight [E, 3E], bias [3E]}
//   h.N.attn.c_proj.{weight [E, E], bias}   h.N.ln_2.*   h.N.mlp.c_fc.{weight [E, I], bias [I]}
//   h.N.mlp.c_proj.{weight [I, E], bias [E]}   ln_f.*   lm_head.weight [V, E] (optional: tied
//   to wte when absent). Old checkpoints' h.N.attn.bias / h.N.attn.masked_bias buffers are ignored.
//
// Block (pre-LN):  x += c_proj(attn(ln_1(x)));  x += mlp.c_proj(gelu(c_fc(ln_2(x))))
// Output: logits = ln_f(x) · lm_headᵀ.
//
// `tessera run`: input_ids I64 [B, T], optional attention_mask [B, T] (1 = keep, 0 = padding,
// masked as keys) -> logits F32 [B, T, V]. Positions are 0..T-1 in every row (what HF GPT2Model
// does when no position_ids are given), so left padding shifts a row's positions. The logits of
// padded positions are computed but mean nothing (a query whose keys are all padding gets a zero
// attention output).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/generate/generation.h"
#include "engine/generate/rows.h"
#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "engine/graph/passes/passes.h"
#include "engine/io/model_dir.h"
#include "models/model.h"

namespace tessera::models {

struct Gpt2Config {
  int64_t n_layer = 0, n_embd = 0, n_head = 0, n_positions = 0, vocab_size = 0, n_inner = 0;
  float layer_norm_epsilon = 1e-5f;
  kernels::Activation activation = kernels::Activation::gelu_tanh;
  bool scale_attn_weights = true, scale_attn_by_inverse_layer_idx = false;
  int64_t bos_token_id = -1, eos_token_id = -1;
  bool tied_head = true;  // no lm_head.weight in the checkpoint

  int64_t head_dim() const { return n_embd / n_head; }
};

class Gpt2Model final : public Model {
 public:
  // Reads the config, checks every tensor's presence and shape, builds the graphs and runs the
  // graph passes (which pack the GEMM weights).
  explicit Gpt2Model(const ModelDir& dir, const LoadOptions& o = {});

  const Gpt2Config& config() const { return cfg_; }
  const char* family() const override { return "gpt2"; }
  TensorMap run(const TensorMap& inputs, NodeObserver* observer = nullptr) const override;
  const Graph& forward_graph() const override { return *forward_; }
  // The session (arena, memory plans) that runs the forward graph.
  GraphSession& forward_session() const override { return session(*forward_); }
  const std::vector<passes::Stats>& pass_stats() const override { return pass_stats_; }
  const Gpt2Model* gpt2() const override { return this; }
  // The graphs a generation session runs per start() and per step(): the blocks over the KV
  // cache, then the head on the last position (for the profiler's node counts).
  const Graph& cached_graph() const { return *cached_; }
  const Graph& head_graph() const { return *head_; }

  // A generation session whose KV cache holds the longest prompt plus max_new_tokens tokens.
  // Ragged prompts are left-padded into one batch (key padding masks the pads; each row's
  // positions count from its first real token), so every row shares one cache length.
  // start() throws Error naming n_positions when the longest prompt + max_new_tokens exceeds it;
  // step() throws when the cache is full. The model must outlive the session.
  std::unique_ptr<CausalLM> new_session(int64_t max_new_tokens,
                                        NodeObserver* observer = nullptr) const;

  // Building blocks of the session (public for tests): runs `ids` [B, T] at cache positions
  // [past_len, past_len + T) with per-token `positions` [B, T] and key padding [B, past_len + T]
  // (U8, 1 = padding); appends to `cache` and returns the final hidden states of the last
  // position, after ln_f, projected to logits [B, V].
  Tensor decode(const Tensor& ids, const Tensor& positions, const Tensor& key_padding,
                KVCache& cache, int64_t past_len, NodeObserver* observer = nullptr) const;

  // Continuous batching (engine/generate/rows.h): rows with KV caches of their own. A step runs
  // every row's token through one pass of the blocks (each GEMM over all rows at once) and each
  // row's attention over its own cache, so a row's logits are the same bits whatever rows it
  // shares the step with. Prompts prefill `prefill_chunk` tokens per call.
  std::unique_ptr<RowModel> new_rows(int64_t prefill_chunk = 64,
                                     NodeObserver* observer = nullptr) const;
  // Building block of the rows: like decode(), with row b of `ids` [B, T] (positions [B, T])
  // appended to rows[b]'s own cache (no padding).
  Tensor decode_rows(const Tensor& ids, const Tensor& positions,
                     std::vector<RunContext::RowCache> rows,
                     NodeObserver* observer = nullptr) const;

 private:
  Gpt2Config cfg_;
  std::shared_ptr<WeightSet> weights_;
  std::unique_ptr<Graph> forward_, cached_, head_;
  std::vector<passes::Stats> pass_stats_;
  // The graph sessions (arenas, memory plans) of callers that bind no SessionSet of their own
  // (engine/graph/executor.h); session(g) is the one a run of g on this thread uses.
  mutable SessionSet sessions_;
  GraphSession& session(const Graph& g) const { return SessionSet::current_or(sessions_).get(g); }
  // The head on the last position of hidden [B, T, E]: logits [B, V].
  Tensor last_logits(const Tensor& hidden, NodeObserver* observer) const;
};

}  // namespace tessera::models
