// Private helpers shared by the kernel translation units. Not part of the public interface:
// only kernels/*.cpp and the kernel tests include this file.
//
// Everything declared here is DEFINED in a non-ISA file (dispatch.cpp) or in exactly one ISA
// file, so no inline code compiled with ISA flags can be shared between translation units.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "kernels/kernels.h"

namespace tessera::kernels::detail {

// The tables of each ISA, defined in kernels/isa_<isa>.cpp. They do not check CPU support:
// callers go through kernel_table(), which does.
const KernelTable& kernel_table_avx512();
const KernelTable& kernel_table_avx2();
const KernelTable& kernel_table_generic();

// Replaces `out` by uninitialized, 64-byte aligned storage of `floats` floats. Defined in
// dispatch.cpp so that the ISA files never instantiate std::unique_ptr code themselves.
void allocate_packed(PackedWeights& out, int64_t n, int64_t k, int64_t nr, Isa isa, size_t floats);

// Scratch memory private to the calling thread: 64-byte aligned, at least `floats` floats,
// valid until the next call on the same thread with the same slot. Grows (never shrinks), so a
// steady-state forward pass does not allocate. Slots 0 and 1 are independent buffers (GEMM keeps
// its packed A in slot 1 on the calling thread while every thread of its team uses slot 0).
// Slot 2: a low-precision GEMM's converted A (bf16 pairs / u8 quads, row scales), written by
// the calling thread before the GEMM's parallel loop and read by every thread of its team.
constexpr int kScratchSlots = 3;
float* thread_scratch(size_t floats, int slot = 0);

// Thrown (std::invalid_argument) when an ISA's gemm is handed weights packed for another ISA.
[[noreturn]] void throw_packed_isa_mismatch(Isa kernel_isa, Isa packed_isa);

// Parses a TESSERA_ISA value ("generic", "avx2", "avx512"). Throws std::runtime_error naming
// the accepted values if `value` is unknown, or the supported ones if this CPU cannot run it.
Isa isa_from_string(const char* value);

// The kernels' thread pool (kernels/thread_pool.cpp), behind parallel_for (parallel.hpp).
// A job is fn(ctx, lo, hi) over the chunks [begin + c*grain, min(end, begin + (c+1)*grain)).
using ChunkFn = void (*)(const void* ctx, int64_t lo, int64_t hi);
constexpr int kMaxThreads = 256;  // participants of one job (more requested: capped)
// Runs every chunk exactly once with up to `threads` threads, the caller included; returns when
// all have run. Runs fn(ctx, begin, end) on the caller when another job holds the pool.
void run_chunks(int64_t begin, int64_t end, int64_t grain, int threads, ChunkFn fn,
                const void* ctx);
// True on a thread that is running chunks of a job (nested parallel_for calls run serially).
bool in_parallel_job();
// The pool's back-off (thread_pool.cpp), for tests: whether jobs now run on the caller alone;
// and the length of a first back-off in microseconds (default 10 ms), which also ends any
// back-off in progress and starts a new balance window.
bool pool_backing_off();
void set_pool_backoff_first_us(int64_t us);

// The AVX512-BF16 / AVX512-VNNI variant of the avx512 GEMM for bf16 / int8 weights
// (kernels/isa_avx512_vnni.cpp, compiled with -mavx512bf16 -mavx512vnni). gemm()'s contract;
// the weights' type picks the kernel. lowp_vnni_available: the CPU has the instructions for
// `type` (bf16: avx512_bf16; int8: avx512_vnni) and TESSERA_LOWP is not "widen" (read once).
bool lowp_vnni_available(WeightType type);
void gemm_avx512_vnni(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                      int64_t ldc, const Epilogue& ep);
// packed_rows() of bf16 / int8 weights (kernels/lowp.cpp).
void packed_rows_lowp(const PackedWeights& w, const int64_t* rows, int64_t count, float* out,
                      int64_t ldo);

// Holder of a backend's per-weights data (see PackedWeights::backend_slot()).
struct BackendSlot {
  std::mutex mutex;
  std::shared_ptr<void> data;  // owned by the backend that set it
};

// The oneDNN backend (kernels/onednn.cpp). onednn_gemm has gemm()'s contract.
bool onednn_built();
void onednn_gemm(int64_t m, const float* a, int64_t lda, const PackedWeights& w, float* c,
                 int64_t ldc, const Epilogue& ep);

}  // namespace tessera::kernels::detail
