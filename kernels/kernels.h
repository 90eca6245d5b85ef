// Tessera kernels: the public interface.
//
// kernels/ knows nothing of the engine: raw pointers, sizes, leading dimensions (in elements).
// Every kernel body is a template over the xsimd architecture (one header per kernel family,
// kernels/*_body.hpp), compiled once per ISA in its own translation unit (kernels/isa_*.cpp)
// and chosen once at start-up (see active_isa()).
//
// Determinism: every output element is computed by exactly one thread, with a reduction order
// that depends only on the problem's sizes, never on the thread count. Results are therefore
// bit-identical for any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace tessera::kernels {

namespace detail {
struct BackendSlot;  // per-weights cache of a GEMM backend (kernels/onednn.cpp)
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// ISA selection
// ---------------------------------------------------------------------------------------------
enum class Isa : uint8_t { generic, avx2, avx512 };

const char* isa_name(Isa isa);
// True when this CPU (and OS) can run code compiled for `isa`.
bool isa_supported(Isa isa);
// The ISA used by the free functions below: the best one the CPU supports, unless the
// environment variable TESSERA_ISA (generic|avx2|avx512) names another. Chosen once, cached.
// Throws std::runtime_error if TESSERA_ISA names an unknown or unsupported ISA.
Isa active_isa();
// True when TESSERA_ISA chose active_isa() (for logging; the kernels print nothing).
bool isa_from_environment();
// All ISAs this CPU can run, best first (tests iterate over them).
std::vector<Isa> supported_isas();
// Asks for `isa` as active_isa() (a library's load option, before any kernel ran): takes effect
// when the ISA has not been chosen yet, over TESSERA_ISA. Returns whether active_isa() is `isa`
// now (false: another one was chosen earlier, and stays). Throws std::runtime_error when this
// CPU cannot run `isa`.
bool request_isa(Isa isa);

// Thread count used by every kernel's parallel loops (default: omp_get_max_threads()).
void set_num_threads(int n);
// The count for kernels called from this thread: the innermost ScopedThreads', else the above.
int num_threads();
// Sets this thread's kernel thread count for the guard's lifetime (a library session's calls).
class ScopedThreads {
 public:
  explicit ScopedThreads(int n);  // n >= 1
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_;
};

// ---------------------------------------------------------------------------------------------
// Element-wise activations
// ---------------------------------------------------------------------------------------------
enum class Activation : uint8_t {
  none,
  relu,       // max(x, 0)
  gelu_erf,   // x * 0.5 * (1 + erf(x / sqrt(2)))            (PyTorch F.gelu default)
  gelu_tanh,  // x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2 "gelu_new")
};

// ---------------------------------------------------------------------------------------------
// GEMM: C[M,N] = epilogue(A[M,K] · Wᵀ), W given as [N,K] row-major (a PyTorch Linear weight).
// ---------------------------------------------------------------------------------------------
// W is packed once (at load) into the layout the micro-kernel of one ISA streams.
// A PackedWeights is immutable after packing and may be shared by any number of threads.
// Memory for large arrays: 64-byte aligned; from 2 MiB up, 2 MiB aligned and marked for
// transparent huge pages (madvise MADV_HUGEPAGE). From 64 KiB up it is mapped from the kernel
// (mmap) and unmapped when freed, so tensors never fragment the heap and their memory goes back
// to the system at once (kernels/dispatch.cpp says why). `zeroed`: the memory reads as zeros
// (mapped memory already does; only heap blocks are cleared). Release with free_aligned and the
// same `bytes` (the size tells how the block was made; nullptr: nothing). Thread-safe. Throws
// std::bad_alloc.
void* allocate_aligned(size_t bytes, bool zeroed = false);
void free_aligned(void* p, size_t bytes);

// The element type of packed GEMM weights (the activations of every GEMM are fp32 in and out):
//   f32   fp32 weights, fp32 FMAs.
//   bf16  weights stored as bfloat16; each GEMM rounds its A to bf16 (nearest even) and sums
//         the products in fp32: with AVX512-BF16 (vdpbf16ps) where the CPU has it, else the
//         bf16 values widened to fp32 inside the micro-kernel (exact) and summed with FMAs in
//         the same order (the products of two bf16 are exact in fp32), so every ISA gives the
//         same bits for normal numbers (vdpbf16ps flushes denormals to zero).
//   int8  weights quantized symmetrically per output channel (row n of W):
//         s_w[n] = max_k |W[n,k]| / 127 (1 for an all-zero row), q = round_even(W / s_w) in
//         [-127, 127]. A is quantized per row, asymmetric u8 as ONNX's DynamicQuantizeLinear:
//         lo = min(0, min a), hi = max(0, max a), s_a = (hi - lo) / 255 (1 if 0),
//         z = clamp(round_even(-lo / s_a), 0, 255), q_a = clamp(round_even(a / s_a) + z, 0, 255).
//         acc = sum_k q_a q_w in int32 (exact: AVX512-VNNI vpdpbusd, else 16-bit multiplies
//         vpmaddwd on widened bytes: no saturation anywhere), then
//         C = float(acc - z * colsum_w[n]) * s_a * s_w[n] and the epilogue (bias, act, residual).
//         Exact integer sums: every ISA and thread count gives the same bits.
enum class WeightType : uint8_t { f32, bf16, int8 };
const char* weight_type_name(WeightType t);  // "f32", "bf16", "int8"

// bfloat16 <-> fp32: round to nearest even; NaN stays NaN (quiet), infinities stay.
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t b);

// Quantizes W per output channel as WeightType::int8 says. kn = false: W is [n, k] (row stride
// ldw >= k), q is [n, k] dense; kn = true: W is [k, n] (row stride ldw >= n; Hugging Face
// Conv1D), q is [k, n] dense. scales: [n]. Throws std::invalid_argument on bad sizes or a
// non-finite weight (naming its row and column).
void quantize_weights_int8(const float* w, int64_t n, int64_t k, int64_t ldw, bool kn, int8_t* q,
                           float* scales);

// One row's dynamic quantization, as the int8 GEMM does it (WeightType::int8): q [k] u8, the
// scale and zero point. Exposed for tests.
void quantize_row_u8(const float* x, int64_t k, uint8_t* q, float* scale, int32_t* zero_point);

class PackedWeights {
 public:
  PackedWeights() = default;
  int64_t n() const { return n_; }  // output features (rows of W)
  int64_t k() const { return k_; }  // input features (columns of W)
  Isa isa() const { return isa_; }
  const float* data() const { return data_.get(); }
  int64_t panel_width() const { return nr_; }  // columns of C per packed panel
  size_t bytes() const { return bytes_; }
  bool empty() const { return data_ == nullptr; }
  WeightType type() const { return type_; }
  // k values per 32-bit word of a panel: 1 (f32), 2 (bf16), 4 (int8); words() per column.
  int64_t group() const { return type_ == WeightType::f32 ? 1 : type_ == WeightType::bf16 ? 2 : 4; }
  int64_t words() const { return (k_ + group() - 1) / group(); }
  // int8: the per-channel scales [panels * NR] (0 past n) and the column sums of the quantized
  // weights [panels * NR] (int32), stored after the panels. Null for other types.
  const float* scales() const;
  const int32_t* column_sums() const;

  // Implementation detail, used by the packing routines. `floats` 32-bit words in all.
  PackedWeights(int64_t n, int64_t k, int64_t nr, Isa isa, size_t floats,
                WeightType type = WeightType::f32);
  float* mutable_data() { return data_.get(); }
  // Implementation detail: where another GEMM backend (oneDNN) keeps these weights in its own
  // layout, prepared at first use. Thread-safe; shared by moved-from copies.
  detail::BackendSlot* backend_slot() const { return backend_.get(); }

 private:
  struct Free {  // frees with the block's size (free_aligned)
    Free() : bytes(0) {}
    explicit Free(size_t b) : bytes(b) {}
    size_t bytes;
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> data_;
  std::shared_ptr<detail::BackendSlot> backend_;
  int64_t n_ = 0, k_ = 0, nr_ = 0;
  Isa isa_ = Isa::generic;
  WeightType type_ = WeightType::f32;
  size_t bytes_ = 0;
};

// Packs W [n, k] (row stride ldw >= k) for the given ISA's GEMM. n, k >= 1.
PackedWeights pack_weights(const float* w, int64_t n, int64_t k, int64_t ldw, Isa isa);
inline PackedWeights pack_weights(const float* w, int64_t n, int64_t k, int64_t ldw) {
  return pack_weights(w, n, k, ldw, active_isa());
}

// Packs a weight stored TRANSPOSED, as [k, n] row-major (row stride ldw >= n): Hugging Face
// GPT-2's Conv1D layout, y = x · w. The result is identical (bit for bit, same layout) to
// pack_weights() of its transpose [n, k]. n, k >= 1.
PackedWeights pack_weights_kn(const float* w, int64_t k, int64_t n, int64_t ldw, Isa isa);
inline PackedWeights pack_weights_kn(const float* w, int64_t k, int64_t n, int64_t ldw) {
  return pack_weights_kn(w, k, n, ldw, active_isa());
}

// The same, packed as `type` (bf16: each weight rounded to nearest even; int8: quantized per
// output channel by quantize_weights_int8). kn: W given as [k, n] (see pack_weights_kn). Every
// ISA packs W as panels of NR = panel_width() columns of C, each [words, NR] of 32-bit words,
// word (kw, j) = the group() consecutive k values kw*group() .. of column j, lowest k in the
// lowest bits (zero past k and past n); int8 adds scales() and column_sums().
PackedWeights pack_weights_as(const float* w, int64_t n, int64_t k, int64_t ldw, bool kn,
                              WeightType type, Isa isa);
inline PackedWeights pack_weights_as(const float* w, int64_t n, int64_t k, int64_t ldw, bool kn,
                                     WeightType type) {
  return pack_weights_as(w, n, k, ldw, kn, type, active_isa());
}
// bf16 weights as stored (bf16 bits, a bf16 checkpoint): no fp32 detour. Layout as above.
PackedWeights pack_weights_bf16(const uint16_t* w, int64_t n, int64_t k, int64_t ldw, bool kn,
                                Isa isa);
// int8 weights already quantized (a quantized checkpoint): q as quantize_weights_int8 writes it
// (row stride ldq), scales [n] finite and > 0 (else std::invalid_argument naming the channel).
PackedWeights pack_weights_int8(const int8_t* q, const float* scales, int64_t n, int64_t k,
                                int64_t ldq, bool kn, Isa isa);

// out[r, :] = W[rows[r], :] for r < count: rows of the ORIGINAL W [n, k], copied out of the
// packed layout (k floats each, row stride ldo >= k). Lets a model gather tied embeddings from
// its packed LM head instead of keeping a second copy of the table. Throws
// std::invalid_argument if w is empty, ldo < k, or some rows[r] is outside [0, n).
void packed_rows(const PackedWeights& w, const int64_t* rows, int64_t count, float* out,
                 int64_t ldo);
// (bf16 and int8 weights: the rows as the GEMM sees them, bf16 widened, int8 q * s_w.)

// Applied to each element of the tile before it is stored, in this order:
//   v = acc + bias[j];  v = act(v);  v = v + residual[i * ld_residual + j];  C[i, j] = v.
struct Epilogue {
  const float* bias = nullptr;  // [N] or null
  Activation act = Activation::none;
  const float* residual = nullptr;  // [M, N] with row stride ld_residual, or null. May alias C
                                    // exactly (same pointer and stride): each element is read
                                    // before it is written.
  int64_t ld_residual = 0;
};

// GEMM backend used by gemm(): Tessera's own kernels (default) or oneDNN's matmul primitive
// (primitives created once per shape and cached; the weights reordered once into oneDNN's
// layout, at first use, and cached in the PackedWeights). The initial value comes from the
// environment variable TESSERA_GEMM (tessera|onednn), read once; set_gemm_backend() overrides
// it. Throws std::runtime_error for an unknown TESSERA_GEMM value, or when oneDNN is asked for
// but this build has none (onednn_available()). Determinism across thread counts is promised
// for the tessera backend only.
enum class GemmBackend : uint8_t { tessera, onednn };
bool onednn_available();
void set_gemm_backend(GemmBackend backend);
GemmBackend gemm_backend();
const char* gemm_backend_name(GemmBackend backend);

// ---------------------------------------------------------------------------------------------
// Cache blocking. The blocked GEMM sizes its blocks from the caches of the CPU it runs on:
//   KC (K block): the A micro-panel KC x MR floats fills a quarter of L1d;
//   NC (columns of an item): the weight block KC x NC fills a quarter of L2;
//   MC (rows of an item): the A block and the accumulators, MC x (KC + NC), a quarter of L2.
// (32 KiB L1d, 1 MiB L2, AVX-512: KC 256, NC 256, MC 128; 48 KiB L1d: KC 384, NC 160, MC 120.)
// Blocking never changes results: every C element is summed in k order in one chain.
// ---------------------------------------------------------------------------------------------
struct CacheSizes {
  int64_t l1d = 0, l2 = 0, l3 = 0;  // bytes per core (L3: the reported size); 0 = unknown
};
// What the CPU reports, read once: /sys/devices/system/cpu/cpu0/cache, else sysconf (which
// reads CPUID). Unknown sizes stay 0; the GEMM then assumes 32 KiB L1d and 512 KiB L2.
CacheSizes detected_cache_sizes();
// The sizes the GEMM blocks for: detected_cache_sizes() unless overridden (tests, benchmarks
// and tuning experiments). An override with every field 0 restores detection. Must not be
// called while a GEMM runs.
CacheSizes gemm_cache_sizes();
void set_gemm_cache_sizes(const CacheSizes& sizes);
struct GemmBlocking {
  int64_t mr, nr;      // register tile (compile-time, per ISA)
  int64_t kc, mc, nc;  // cache blocks (from gemm_cache_sizes())
};
// The blocking `isa`'s GEMM uses now, for matrices of at least KC x MC x NC.
GemmBlocking gemm_blocking(Isa isa);

// a: [M, K] row stride lda >= K.  c: [M, N] row stride ldc >= N; must not overlap a.
// M >= 0 (M = 0 does nothing). w.isa() must be an ISA this CPU supports; the kernel of that ISA
// runs (for bf16 / int8 weights packed for avx512: its AVX512-BF16 / AVX512-VNNI variant where
// the CPU has those, unless TESSERA_LOWP=widen). No alignment is required of any pointer. The
// oneDNN backend serves f32 weights only; bf16 and int8 weights always run Tessera's kernels.
// A's rows (bf16: rounded; int8: quantized) are converted once per call into thread scratch.
void gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c, int64_t ldc,
          const Epilogue& ep = {});

// ---------------------------------------------------------------------------------------------
// Row kernels (each row independent; rows of x and y have strides ldx, ldy; in place allowed
// when x == y and ldx == ldy).
// ---------------------------------------------------------------------------------------------
// y[r, :] = softmax(x[r, :]) over n >= 1 columns. A row whose entries are all -inf gives zeros.
void softmax_rows(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy);

// s = x + residual (residual may be null: s = x);  y = (s - mean(s)) / sqrt(var(s) + eps) * gamma +
// beta (biased variance, as PyTorch). gamma/beta [n], may be null (1 and 0). If sum_out is not
// null, s is also stored there (row stride ld_sum): the pre-LN residual stream. y may alias x or
// residual (same stride); sum_out may alias x or residual.
void add_layernorm_rows(int64_t rows, int64_t n, const float* x, int64_t ldx, const float* residual,
                        int64_t ldr, const float* gamma, const float* beta, float eps, float* y,
                        int64_t ldy, float* sum_out = nullptr, int64_t ld_sum = 0);

// y[i] = act(x[i]), i < n. In place allowed.
void activation(int64_t n, const float* x, float* y, Activation act);

// The kernels' own polynomial approximations (used by softmax, attention and GELU), exposed
// for tests and for models: y[i] = f(x[i]), i < n. In place allowed. Their maximum errors are
// stated in kernels/math_body.hpp and checked by the tests; NaN maps to NaN.
enum class MathFunction : uint8_t { exp, erf, erfc, tanh };
void vector_math(MathFunction f, int64_t n, const float* x, float* y);

// y[i] = a[i] + b[i]. In place allowed (y == a or y == b).
void add(int64_t n, const float* a, const float* b, float* y);

// out[r, :] = table[ids[r], :] * scale + (pos_table ? pos_table[positions[r], :] : 0)
// ids[r] in [0, vocab) and positions[r] in [0, max_positions) are preconditions (the engine
// validates them; the kernel does not). dim >= 1. positions may be null only if pos_table is.
void embedding(int64_t rows, const int64_t* ids, const float* table, int64_t dim, float scale,
               const int64_t* positions, const float* pos_table, float* out, int64_t ldo);

// Sinusoidal positional table of "Attention Is All You Need":
//   pe[p, 2i] = sin(p / 10000^(2i/dim)),  pe[p, 2i+1] = cos(p / 10000^(2i/dim)).
// Computed in double, stored as float. out: [positions, dim].
void sinusoidal_positions(int64_t positions, int64_t dim, float* out);

// ---------------------------------------------------------------------------------------------
// Attention: out = softmax(scale · Q Kᵀ + mask) V, per batch b and head h.
// ---------------------------------------------------------------------------------------------
// Element (b, t, h, d) of Q lives at q[b*q_sb + t*q_st + h*q_sh + d] (d contiguous); the same for
// K, V (with s for keys) and out. This lets Q/K/V be read straight out of a fused projection
// ([B, T, 3E]: q_sh = D, k = q + E, v = q + 2E) or a KV cache ([B, S_max, E]).
//
// Masking of key s for query t (all that apply are combined):
//   causal:       key allowed only if s <= t + causal_offset
//   key_padding:  key_padding[b*kp_sb + s] != 0  => key not allowed
//   mask_bool:    mask_bool[(b*H + h)*m_sbh + t*m_st + s] != 0 => not allowed
//                 (m_sbh = 0 broadcasts one [T, S] mask over batch and heads)
//   mask_add:     added to the score (same indexing as mask_bool); -inf means not allowed
// A query whose keys are all not allowed produces a zero output row (PyTorch would give NaN).
//
// The kernel never materializes an [T, S] matrix: it walks tiles of keys with a running max and
// sum (online softmax). Its workspace is O(threads * tile).
struct AttentionArgs {
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  const float* q = nullptr;
  int64_t q_sb = 0, q_st = 0, q_sh = 0;
  const float* k = nullptr;
  int64_t k_sb = 0, k_ss = 0, k_sh = 0;
  const float* v = nullptr;
  int64_t v_sb = 0, v_ss = 0, v_sh = 0;
  float* out = nullptr;
  int64_t o_sb = 0, o_st = 0, o_sh = 0;
  float scale = 1.0f;
  bool causal = false;
  int64_t causal_offset = 0;
  const uint8_t* key_padding = nullptr;
  int64_t kp_sb = 0;
  const uint8_t* mask_bool = nullptr;
  const float* mask_add = nullptr;
  int64_t m_sbh = 0, m_st = 0;
};
void attention(const AttentionArgs& args);
// Several independent attentions (e.g. the rows of a continuous batch, each over its own KV
// cache): with more than one, the threads split the problems (each runs on one thread; the
// result of each is the same bits as attention() gives it alone).
void attention_many(const AttentionArgs* args, int64_t count);

// ---------------------------------------------------------------------------------------------
// Recurrent cells (GRU, LSTM: PyTorch's nn.GRU / nn.LSTM maths and gate orders) and additive
// attention (Bahdanau): the kernels of the `rnn_attention` family.
// ---------------------------------------------------------------------------------------------
// GRU (gates r, z, n; G = 3):   r = σ(x_r + W_hr h + b_hr),  z = σ(x_z + W_hz h + b_hz),
//   n = tanh(x_n + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
// LSTM (gates i, f, g, o; G = 4): a = x + W_hh h + b_hh;  i, f, o = σ(a_i, a_f, a_o),
//   g = tanh(a_g);  c' = f * c + i * g;  h' = o * tanh(c')
// x is the input part W_ih x_t + b_ih, computed for all time steps by one GEMM beforehand.
enum class RnnCell : uint8_t { gru, lstm };
int64_t rnn_gates(RnnCell cell);  // 3 (GRU) or 4 (LSTM)

// Packs W_hh [G*H, H] (row stride ldw >= H; PyTorch's weight_hh_l*) for rnn_cell(): panels of
// W = panel_width() hidden units, each [H, G, W] k-major (every gate of W units side by side, so
// one pass over k accumulates all G gates of those units in registers; the last panel is padded
// with zeros). The panels are read front to back once per call: a batch-1 step streams the
// matrix exactly once. n() = G*H, k() = H. Throws std::invalid_argument on bad sizes.
PackedWeights pack_recurrent(const float* w_hh, RnnCell cell, int64_t hidden, int64_t ldw, Isa isa);
inline PackedWeights pack_recurrent(const float* w_hh, RnnCell cell, int64_t hidden, int64_t ldw) {
  return pack_recurrent(w_hh, cell, hidden, ldw, active_isa());
}

// One time step of `rows` independent rows, each given by pointers (rows of a ragged batch, of a
// beam, or of a [B, S, ...] sequence at different positions):
//   h_out[r][0, H) = cell(x[r][0, G*H), h[r][0, H) (, c[r])),  c_out[r] (LSTM) the new cell state.
// h_out[r] must not overlap any h[s] (every h is read while outputs are written); c_out[r] may be
// c[r] itself (read, then written, element by element). b_hh may be null (zero). W_hh h and the
// gate non-linearities are one pass: per panel of W units the G accumulators of up to 4 rows stay
// in registers, the non-linearity is applied and h' stored while they are hot. Parallel over
// panels for large H (each unit computed by one thread, k summed in order: bit-identical for any
// thread count).
struct RnnCellArgs {
  RnnCell cell = RnnCell::gru;
  int64_t rows = 0, hidden = 0;
  const float* const* x = nullptr;  // [rows] -> G*H floats
  const float* const* h = nullptr;  // [rows] -> H floats
  float* const* h_out = nullptr;    // [rows] -> H floats
  const float* const* c = nullptr;  // LSTM only: [rows] -> H floats
  float* const* c_out = nullptr;    // LSTM only
  const float* b_hh = nullptr;      // [G*H] or null
};
void rnn_cell(const PackedWeights& w_hh, const RnnCellArgs& args);

// A whole bidirectional layer's recurrence over a right-padded batch [B, S] of lengths
// lengths[b] in [1, S] (packed-sequence semantics): the forward direction runs t = 0..len-1, the
// backward one t = len-1..0 (each row's backward direction starts at its last real token), both
// from zero states. Direction d writes h_t to out_d + (b*S + t)*ld_out (H floats) for the real
// positions only (padding positions are left as they are). The two directions run at once, one
// per thread (when the kernels have 2 threads), each step a rnn_cell() over the rows still running.
// c_state (LSTM): [B, H] per direction, the final cell state of each row on return.
// workspace: at least rnn_layer_workspace(batch, hidden) floats per direction, 8-byte aligned
// (pointer arrays are kept at its start); that size is a multiple of 16 floats, so workspaces
// laid end to end from a 64-byte aligned buffer are all aligned.
struct RnnDirectionArgs {
  const PackedWeights* w_hh = nullptr;
  const float* b_hh = nullptr;  // [G*H] or null
  const float* x = nullptr;     // [B, S, G*H] input gates of every position (row stride G*H)
  float* out = nullptr;         // h_t at out + (b*S + t)*ld_out
  int64_t ld_out = 0;
  float* c_state = nullptr;  // LSTM: [B, H]
  float* workspace = nullptr;
};
int64_t rnn_layer_workspace(int64_t batch, int64_t hidden);
void rnn_bidirectional(RnnCell cell, int64_t batch, int64_t seq, int64_t hidden,
                       const int64_t* lengths, const RnnDirectionArgs& forward,
                       const RnnDirectionArgs& backward);

// Additive attention of one decoder step, fused: for each row r (source row s = src_rows ?
// src_rows[r] : r, with len = lengths[s] >= 1 real positions)
//   e_j = v · tanh(query[r] + keys[s, j])  (j < len),  alpha = softmax(e),
//   context[r] = sum_j alpha_j memory[s, j]
// query [rows, A] (W s_{i-1}, row stride ldq), keys [B0, S, A] (U h, computed once per source),
// memory [B0, S, D], v [A]. alpha [rows, S] (row stride ld_alpha): the weights, 0 at padding.
// context [rows, D] (row stride ldc). Rows are independent (parallel over rows).
struct AdditiveAttentionArgs {
  int64_t rows = 0, src_len = 0, attention_dim = 0, memory_dim = 0;
  const float* query = nullptr;
  int64_t ldq = 0;
  const float* keys = nullptr;        // [B0, S, A]
  const float* memory = nullptr;      // [B0, S, D]
  const float* v = nullptr;           // [A]
  const int64_t* lengths = nullptr;   // [B0]
  const int64_t* src_rows = nullptr;  // [rows] or null (identity)
  float* alpha = nullptr;
  int64_t ld_alpha = 0;
  float* context = nullptr;
  int64_t ldc = 0;
};
void additive_attention(const AdditiveAttentionArgs& args);

// ---------------------------------------------------------------------------------------------
// Per-ISA entry points (tests and benchmarks call every ISA the machine can run directly).
// ---------------------------------------------------------------------------------------------
struct KernelTable {
  Isa isa;
  int64_t gemm_panel_width;  // NR of this ISA's GEMM micro-kernel
  void (*pack_weights)(const float* w, int64_t n, int64_t k, int64_t ldw, PackedWeights& out);
  void (*gemm)(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
               int64_t ldc, const Epilogue& ep);
  void (*softmax_rows)(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy);
  void (*add_layernorm_rows)(int64_t rows, int64_t n, const float* x, int64_t ldx,
                             const float* residual, int64_t ldr, const float* gamma,
                             const float* beta, float eps, float* y, int64_t ldy, float* sum_out,
                             int64_t ld_sum);
  void (*activation)(int64_t n, const float* x, float* y, Activation act);
  void (*add)(int64_t n, const float* a, const float* b, float* y);
  void (*embedding)(int64_t rows, const int64_t* ids, const float* table, int64_t dim, float scale,
                    const int64_t* positions, const float* pos_table, float* out, int64_t ldo);
  void (*attention)(const AttentionArgs& args);
  // pack_weights for W given as [k, n] row-major (see pack_weights_kn()).
  void (*pack_weights_kn)(const float* w, int64_t k, int64_t n, int64_t ldw, PackedWeights& out);
  void (*vector_math)(MathFunction f, int64_t n, const float* x, float* y);
  GemmBlocking (*gemm_blocking)(const CacheSizes& caches);  // see gemm_blocking()
  // The rnn_attention family's kernels (see pack_recurrent(), rnn_cell(), additive_attention()).
  int64_t rnn_panel_width;  // W of pack_recurrent's panels
  void (*pack_recurrent)(const float* w_hh, RnnCell cell, int64_t hidden, int64_t ldw,
                         PackedWeights& out);
  void (*rnn_cell)(const PackedWeights& w_hh, const RnnCellArgs& args);
  void (*rnn_bidirectional)(RnnCell cell, int64_t batch, int64_t seq, int64_t hidden,
                            const int64_t* lengths, const RnnDirectionArgs& forward,
                            const RnnDirectionArgs& backward);
  void (*additive_attention)(const AdditiveAttentionArgs& args);
};
// The table of one ISA. Throws std::runtime_error if the CPU cannot run it.
const KernelTable& kernel_table(Isa isa);

}  // namespace tessera::kernels
