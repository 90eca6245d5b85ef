// ISA detection and selection, thread count, PackedWeights storage, and the free functions that
// forward to the active ISA's table. Compiled with the baseline flags only: nothing here may
// execute an instruction the CPU might lack.
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"
#include "kernels/parallel.hpp"

namespace tessera::kernels {
namespace {

constexpr size_t kLine = 64;               // a cache line; also >= any vector width we use
constexpr size_t kHuge = size_t{2} << 20;  // an x86-64 huge page

struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
};

CpuFeatures detect_cpu() {
  // GCC's __builtin_cpu_supports reports AVX/AVX-512 features only when the OS saves their
  // registers (it checks XCR0 through xgetbv), unlike xsimd 8.1's detection.
  __builtin_cpu_init();
  CpuFeatures f;
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return f;
}

const CpuFeatures& cpu() {
  static const CpuFeatures features = detect_cpu();
  return features;
}

std::string supported_list() {
  std::string s;
  for (Isa isa : supported_isas()) {
    if (!s.empty()) s += ", ";
    s += isa_name(isa);
  }
  return s;
}

std::atomic<int> g_requested_isa{-1};  // request_isa(); -1: none

Isa choose_isa() {
  const int requested = g_requested_isa.load();
  if (requested >= 0) return static_cast<Isa>(requested);
  const char* env = std::getenv("TESSERA_ISA");
  if (env != nullptr && *env != '\0') {
    return detail::isa_from_string(env);
  }
  return supported_isas().front();
}

std::atomic<int> g_num_threads{0};   // 0: not set, use omp_get_max_threads()
thread_local int t_num_threads = 0;  // ScopedThreads; 0: none

// Per-thread scratch of detail::thread_scratch.
struct Scratch {
  float* data = nullptr;
  size_t capacity = 0;  // floats
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { free_aligned(data, capacity * sizeof(float)); }
};
thread_local Scratch t_scratch[detail::kScratchSlots];

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic:
      return "generic";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::generic:
      return true;  // SSE2 is part of x86-64
    case Isa::avx2:
      return cpu().avx2;
    case Isa::avx512:
      return cpu().avx512;
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::generic}) {
    if (isa_supported(isa)) isas.push_back(isa);
  }
  return isas;
}

bool isa_from_environment() {
  const char* env = std::getenv("TESSERA_ISA");
  return env != nullptr && *env != '\0';
}

Isa active_isa() {
  // A throwing initializer leaves the static uninitialized: every call then throws again.
  static const Isa isa = choose_isa();
  return isa;
}

bool request_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::runtime_error(std::string("tessera: kernels for ISA '") + isa_name(isa) +
                             "' cannot run on this CPU; supported here: " + supported_list());
  g_requested_isa.store(static_cast<int>(isa));
  return active_isa() == isa;
}

const KernelTable& kernel_table(Isa isa) {
  if (!isa_supported(isa)) {
    throw std::runtime_error(std::string("tessera: kernels for ISA '") + isa_name(isa) +
                             "' cannot run on this CPU; supported here: " + supported_list());
  }
  switch (isa) {
    case Isa::avx512:
      return detail::kernel_table_avx512();
    case Isa::avx2:
      return detail::kernel_table_avx2();
    case Isa::generic:
      break;
  }
  return detail::kernel_table_generic();
}

void set_num_threads(int n) {
  if (n < 1) {
    throw std::invalid_argument("tessera::kernels::set_num_threads: n must be >= 1, got " +
                                std::to_string(n));
  }
  g_num_threads.store(n, std::memory_order_relaxed);
}

ScopedThreads::ScopedThreads(int n) : previous_(t_num_threads) {
  if (n < 1)
    throw std::invalid_argument("tessera::kernels::ScopedThreads: n must be >= 1, got " +
                                std::to_string(n));
  t_num_threads = n;
}

ScopedThreads::~ScopedThreads() {
  t_num_threads = previous_;
}

int num_threads() {
  if (t_num_threads > 0) return t_num_threads;
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------
namespace {

// Blocks from kMapped bytes up come from mmap and are unmapped when freed. glibc's malloc maps
// big blocks too, but raises its threshold each time one is freed (up to 32 MiB); from then on a
// decode loop's per-step tensors (GPT-2's logits: 200 KB a step) come from the heap of the thread
// that made them, interleave with small long-lived blocks and keep the heap from shrinking:
// measured, a GPT-2-small session generating 256 tokens grew its thread's heap by 28 MiB, which
// stayed resident, so four sessions at once held twice their KV caches. Mapping from 64 KiB up
// costs a few microseconds per decode step (a step takes milliseconds) and keeps a session's
// memory its KV cache and arena.
constexpr size_t kMapped = size_t{64} << 10;
constexpr size_t kPage = 4096;

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// A mapped block's alignment: 2 MiB from 2 MiB up (huge pages), else a page.
size_t mapped_alignment(size_t bytes) {
  return bytes >= kHuge ? kHuge : kPage;
}

}  // namespace

void* allocate_aligned(size_t bytes, bool zeroed) {
  if (bytes == 0) bytes = 1;
  if (bytes < kMapped) {
    void* p = std::aligned_alloc(kLine, round_up(bytes, kLine));
    if (p == nullptr) throw std::bad_alloc();
    if (zeroed) std::memset(p, 0, bytes);
    return p;
  }
  // Mapped (and so zeroed): page aligned by mmap; 2 MiB alignment by mapping up to 2 MiB more
  // and unmapping what lies before the first boundary and after the block, so the block is its
  // own mapping and free_aligned needs nothing but its size.
  const size_t align = mapped_alignment(bytes);
  const size_t used = round_up(bytes, align);
  const size_t length = used + (align - kPage);
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  const uintptr_t p = round_up(b, align);
  if (p > b) munmap(base, p - b);
  if (b + length > p + used) munmap(reinterpret_cast<void*>(p + used), b + length - (p + used));
  // Huge pages where the system allows them (transparent_hugepage "madvise", Debian's default):
  // a forward pass streams hundreds of MiB of weights; with 4 KiB pages every 4 KiB is a TLB
  // miss and, in a VM, a two-level page walk. A hint: failure (THP "never") changes nothing.
  if (align == kHuge) madvise(reinterpret_cast<void*>(p), used, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(p);
}

void free_aligned(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes == 0) bytes = 1;
  if (bytes < kMapped)
    std::free(p);
  else
    munmap(p, round_up(bytes, mapped_alignment(bytes)));
}

// ---------------------------------------------------------------------------------------------
// PackedWeights
// ---------------------------------------------------------------------------------------------
PackedWeights::PackedWeights(int64_t n, int64_t k, int64_t nr, Isa isa, size_t floats,
                             WeightType type)
    : data_(static_cast<float*>(allocate_aligned(floats * sizeof(float))),
            Free{floats * sizeof(float)}),
      backend_(std::make_shared<detail::BackendSlot>()),
      n_(n),
      k_(k),
      nr_(nr),
      isa_(isa),
      type_(type),
      bytes_(floats * sizeof(float)) {}

void PackedWeights::Free::operator()(float* p) const {
  free_aligned(p, bytes);
}

// ---------------------------------------------------------------------------------------------
// Private helpers (kernels/internal.hpp)
// ---------------------------------------------------------------------------------------------
namespace detail {

void allocate_packed(PackedWeights& out, int64_t n, int64_t k, int64_t nr, Isa isa, size_t floats) {
  out = PackedWeights(n, k, nr, isa, floats);
}

float* thread_scratch(size_t floats, int slot) {
  Scratch& s = t_scratch[slot];
  if (floats > s.capacity) {
    const size_t capacity = (floats + 15) / 16 * 16;  // whole cache lines
    float* data = static_cast<float*>(allocate_aligned(capacity * sizeof(float)));
    free_aligned(s.data, s.capacity * sizeof(float));
    s.data = data;
    s.capacity = capacity;
  }
  return s.data;
}

void throw_packed_isa_mismatch(Isa kernel_isa, Isa packed_isa) {
  throw std::invalid_argument(std::string("tessera: gemm for ISA '") + isa_name(kernel_isa) +
                              "' was given weights packed for '" + isa_name(packed_isa) +
                              "'; pack with the same ISA (or call the free gemm(), which "
                              "dispatches on the weights' ISA)");
}

Isa isa_from_string(const char* value) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (std::strcmp(value, isa_name(isa)) != 0) continue;
    if (!isa_supported(isa)) {
      throw std::runtime_error(
          std::string("TESSERA_ISA=") + value +
          ": this CPU cannot run that ISA; supported here: " + supported_list());
    }
    return isa;
  }
  throw std::runtime_error(std::string("TESSERA_ISA=") + value +
                           " is not an ISA name; use one of: generic, avx2, avx512");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Free functions: the active ISA's table (gemm: the table of the weights' ISA)
// ---------------------------------------------------------------------------------------------
namespace {
const KernelTable& active_table() {
  static const KernelTable& table = kernel_table(active_isa());
  return table;
}
}  // namespace

PackedWeights pack_weights(const float* w, int64_t n, int64_t k, int64_t ldw, Isa isa) {
  if (w == nullptr || n < 1 || k < 1 || ldw < k) {
    throw std::invalid_argument(
        "tessera::kernels::pack_weights: need w != null, n >= 1, k >= 1, "
        "ldw >= k; got n=" +
        std::to_string(n) + " k=" + std::to_string(k) + " ldw=" + std::to_string(ldw));
  }
  PackedWeights out;
  kernel_table(isa).pack_weights(w, n, k, ldw, out);
  return out;
}

PackedWeights pack_weights_kn(const float* w, int64_t k, int64_t n, int64_t ldw, Isa isa) {
  if (w == nullptr || n < 1 || k < 1 || ldw < n) {
    throw std::invalid_argument(
        "tessera::kernels::pack_weights_kn: need w != null, k >= 1, n >= 1, "
        "ldw >= n; got k=" +
        std::to_string(k) + " n=" + std::to_string(n) + " ldw=" + std::to_string(ldw));
  }
  PackedWeights out;
  kernel_table(isa).pack_weights_kn(w, k, n, ldw, out);
  return out;
}

// Every ISA packs W [N, K] as panels of NR = panel_width() columns of C, each [K, NR] k-major:
//   packed[(p*K + kk)*NR + jj] = W[p*NR + jj, kk].
// Row n of W is therefore column n % NR of panel n / NR: K floats NR apart.
void packed_rows(const PackedWeights& w, const int64_t* rows, int64_t count, float* out,
                 int64_t ldo) {
  if (count <= 0) return;
  if (w.empty() || rows == nullptr || out == nullptr || ldo < w.k()) {
    throw std::invalid_argument(
        "tessera::kernels::packed_rows: need packed weights, rows and out != null, ldo >= k; "
        "got k=" +
        std::to_string(w.k()) + " ldo=" + std::to_string(ldo));
  }
  const int64_t k = w.k();
  const int64_t nr = w.panel_width();
  for (int64_t r = 0; r < count; ++r) {
    if (rows[r] < 0 || rows[r] >= w.n()) {
      throw std::invalid_argument("tessera::kernels::packed_rows: row " + std::to_string(rows[r]) +
                                  " (index " + std::to_string(r) + ") is outside [0, " +
                                  std::to_string(w.n()) + ")");
    }
  }
  if (w.type() != WeightType::f32) {
    detail::packed_rows_lowp(w, rows, count, out, ldo);
    return;
  }
  for (int64_t r = 0; r < count; ++r) {
    const float* src = w.data() + (rows[r] / nr) * k * nr + rows[r] % nr;  // stride nr
    float* dst = out + r * ldo;                                            // [K]
    for (int64_t kk = 0; kk < k; ++kk) dst[kk] = src[kk * nr];
  }
}

void gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c, int64_t ldc,
          const Epilogue& ep) {
  if (m <= 0) return;
  if (w.empty()) {
    throw std::invalid_argument("tessera::kernels::gemm: the weights are empty; pack them first");
  }
  if (lda < w.k() || ldc < w.n()) {
    throw std::invalid_argument("tessera::kernels::gemm: need lda >= k and ldc >= n; got lda=" +
                                std::to_string(lda) + " k=" + std::to_string(w.k()) +
                                " ldc=" + std::to_string(ldc) + " n=" + std::to_string(w.n()));
  }
  if (w.type() != WeightType::f32) {
    if (w.isa() == Isa::avx512 && detail::lowp_vnni_available(w.type())) {
      detail::gemm_avx512_vnni(m, a, lda, w, c, ldc, ep);
    } else {
      kernel_table(w.isa()).gemm(m, a, lda, w, c, ldc, ep);
    }
    return;
  }
  if (gemm_backend() == GemmBackend::onednn) {
    detail::onednn_gemm(m, a, lda, w, c, ldc, ep);
    return;
  }
  kernel_table(w.isa()).gemm(m, a, lda, w, c, ldc, ep);
}

// ---------------------------------------------------------------------------------------------
// GEMM backend selection
// ---------------------------------------------------------------------------------------------
namespace {
GemmBackend backend_from_environment() {
  const char* env = std::getenv("TESSERA_GEMM");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "tessera") == 0)
    return GemmBackend::tessera;
  if (std::strcmp(env, "onednn") == 0) {
    if (!detail::onednn_built()) {
      throw std::runtime_error(
          "TESSERA_GEMM=onednn: this build of Tessera has no oneDNN (libdnnl was not found "
          "when it was configured); use TESSERA_GEMM=tessera");
    }
    return GemmBackend::onednn;
  }
  throw std::runtime_error(std::string("TESSERA_GEMM=") + env +
                           " is not a GEMM backend; use one of: tessera, onednn");
}
std::atomic<int> g_backend{-1};  // -1: not chosen yet
}  // namespace

bool onednn_available() {
  return detail::onednn_built();
}

const char* gemm_backend_name(GemmBackend backend) {
  return backend == GemmBackend::onednn ? "onednn" : "tessera";
}

void set_gemm_backend(GemmBackend backend) {
  if (backend == GemmBackend::onednn && !detail::onednn_built()) {
    throw std::runtime_error(
        "tessera::kernels::set_gemm_backend(onednn): this build has no oneDNN (libdnnl was not "
        "found when it was configured)");
  }
  g_backend.store(static_cast<int>(backend), std::memory_order_relaxed);
}

GemmBackend gemm_backend() {
  int b = g_backend.load(std::memory_order_relaxed);
  if (b < 0) {
    static const GemmBackend from_env = backend_from_environment();  // read once
    int expected = -1;
    g_backend.compare_exchange_strong(expected, static_cast<int>(from_env));
    b = g_backend.load(std::memory_order_relaxed);
  }
  return static_cast<GemmBackend>(b);
}

void softmax_rows(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy) {
  active_table().softmax_rows(rows, n, x, ldx, y, ldy);
}

void add_layernorm_rows(int64_t rows, int64_t n, const float* x, int64_t ldx, const float* residual,
                        int64_t ldr, const float* gamma, const float* beta, float eps, float* y,
                        int64_t ldy, float* sum_out, int64_t ld_sum) {
  active_table().add_layernorm_rows(rows, n, x, ldx, residual, ldr, gamma, beta, eps, y, ldy,
                                    sum_out, ld_sum);
}

void activation(int64_t n, const float* x, float* y, Activation act) {
  active_table().activation(n, x, y, act);
}

void vector_math(MathFunction f, int64_t n, const float* x, float* y) {
  active_table().vector_math(f, n, x, y);
}

void add(int64_t n, const float* a, const float* b, float* y) {
  active_table().add(n, a, b, y);
}

void embedding(int64_t rows, const int64_t* ids, const float* table, int64_t dim, float scale,
               const int64_t* positions, const float* pos_table, float* out, int64_t ldo) {
  active_table().embedding(rows, ids, table, dim, scale, positions, pos_table, out, ldo);
}

void attention(const AttentionArgs& args) {
  active_table().attention(args);
}

void attention_many(const AttentionArgs* args, int64_t count) {
  if (count <= 0) return;
  if (count == 1) return attention(args[0]);
  const KernelTable& t = active_table();
  // Inside the job each attention() runs on its thread alone (no nested parallelism).
  detail::parallel_for(0, count, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) t.attention(args[i]);
  });
}

// ---------------------------------------------------------------------------------------------
// Cache sizes and GEMM blocking
// ---------------------------------------------------------------------------------------------
namespace {

std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// "48K", "1024K", "32M" (sysfs cache sizes) -> bytes; 0 when unparsable.
int64_t parse_cache_size(const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || v <= 0) return 0;
  if (*end == 'K') return v << 10;
  if (*end == 'M') return v << 20;
  if (*end == 'G') return v << 30;
  return *end == '\0' ? v : 0;
}

CacheSizes detect_cache_sizes() {
  // sysfs first: in VMs the CPUID leaves behind sysconf can be filled in oddly (a KVM guest
  // whose sysconf says L3 320 MiB where sysfs says 32 MiB); some guests have no sysfs entries.
  CacheSizes c;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = first_line(dir + "level"), type = first_line(dir + "type");
    const int64_t size = parse_cache_size(first_line(dir + "size"));
    if (level.empty() || size == 0) continue;
    if (level == "1" && type == "Data") c.l1d = size;
    if (level == "2") c.l2 = size;
    if (level == "3") c.l3 = size;
  }
  if (c.l1d == 0) c.l1d = std::max<long>(0, sysconf(_SC_LEVEL1_DCACHE_SIZE));
  if (c.l2 == 0) c.l2 = std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
  if (c.l3 == 0) c.l3 = std::max<long>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
  return c;
}

// The override of set_gemm_cache_sizes(); all 0: none.
std::atomic<int64_t> g_override_l1d{0}, g_override_l2{0}, g_override_l3{0};

}  // namespace

CacheSizes detected_cache_sizes() {
  static const CacheSizes sizes = detect_cache_sizes();
  return sizes;
}

CacheSizes gemm_cache_sizes() {
  const CacheSizes o{g_override_l1d.load(std::memory_order_relaxed),
                     g_override_l2.load(std::memory_order_relaxed),
                     g_override_l3.load(std::memory_order_relaxed)};
  if (o.l1d == 0 && o.l2 == 0 && o.l3 == 0) return detected_cache_sizes();
  return o;
}

// ---------------------------------------------------------------------------------------------
// The rnn_attention family's kernels
// ---------------------------------------------------------------------------------------------
int64_t rnn_gates(RnnCell cell) {
  return cell == RnnCell::gru ? 3 : 4;
}

PackedWeights pack_recurrent(const float* w_hh, RnnCell cell, int64_t hidden, int64_t ldw,
                             Isa isa) {
  if (w_hh == nullptr || hidden < 1 || ldw < hidden)
    throw std::invalid_argument(
        "tessera::kernels::pack_recurrent: need w_hh != null, hidden >= 1, ldw >= hidden; got "
        "hidden=" +
        std::to_string(hidden) + " ldw=" + std::to_string(ldw));
  PackedWeights out;
  kernel_table(isa).pack_recurrent(w_hh, cell, hidden, ldw, out);
  return out;
}

void rnn_cell(const PackedWeights& w_hh, const RnnCellArgs& args) {
  if (w_hh.n() != rnn_gates(args.cell) * args.hidden || w_hh.k() != args.hidden)
    throw std::invalid_argument(
        "tessera::kernels::rnn_cell: weights packed for another cell or size");
  kernel_table(w_hh.isa()).rnn_cell(w_hh, args);
}

int64_t rnn_layer_workspace(int64_t batch, int64_t hidden) {
  // Five pointer arrays (two floats per pointer), H zeros; rounded up to 16 floats (64 bytes)
  // so that workspaces laid end to end in an aligned buffer keep the pointer arrays aligned.
  return (10 * batch + hidden + 15) / 16 * 16;
}

void rnn_bidirectional(RnnCell cell, int64_t batch, int64_t seq, int64_t hidden,
                       const int64_t* lengths, const RnnDirectionArgs& forward,
                       const RnnDirectionArgs& backward) {
  if (!forward.w_hh || !backward.w_hh || forward.w_hh->isa() != backward.w_hh->isa())
    throw std::invalid_argument("tessera::kernels::rnn_bidirectional: weights of one ISA needed");
  kernel_table(forward.w_hh->isa())
      .rnn_bidirectional(cell, batch, seq, hidden, lengths, forward, backward);
}

void additive_attention(const AdditiveAttentionArgs& args) {
  active_table().additive_attention(args);
}

void set_gemm_cache_sizes(const CacheSizes& sizes) {
  if (sizes.l1d < 0 || sizes.l2 < 0 || sizes.l3 < 0)
    throw std::invalid_argument("set_gemm_cache_sizes: negative cache size");
  g_override_l1d.store(sizes.l1d, std::memory_order_relaxed);
  g_override_l2.store(sizes.l2, std::memory_order_relaxed);
  g_override_l3.store(sizes.l3, std::memory_order_relaxed);
}

GemmBlocking gemm_blocking(Isa isa) {
  return kernel_table(isa).gemm_blocking(gemm_cache_sizes());
}

}  // namespace tessera::kernels
