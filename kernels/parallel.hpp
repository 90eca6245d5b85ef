// The one threading primitive of the kernels: every parallel loop of kernels/ goes through here.
#pragma once

#include <omp.h>

#include <cstdint>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"

namespace tessera::kernels::detail {

// Calls fn(lo, hi) on disjoint sub-ranges covering [begin, end).
//
// The range is cut into ceil((end - begin) / grain) chunks of `grain` indices (the last one
// shorter), handed out by the thread pool of kernels/thread_pool.cpp: each thread starts on its
// own contiguous share and then takes chunks left in the others' shares, so a thread that the OS
// descheduled (a busy machine) does not hold the others back. fn may be called several times on
// one thread, once per chunk. Callers must make each index's result independent of how the range
// is cut and of which thread runs it (all kernels do: one output element, one owner, a reduction
// order fixed by the problem's sizes), which is what keeps results bit-identical for any thread
// count.
//
// Runs fn(begin, end) on the calling thread when there is a single chunk, when num_threads()
// is 1, or when called from inside a job or an OpenMP parallel region (no nested parallelism).
//
// Instantiated only with lambdas of an ISA file's anonymous namespace, so every instantiation
// (and the trampoline below) has internal linkage: no ODR trap.
template <class Fn>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const Fn& fn) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (end - begin + grain - 1) / grain;
  const int64_t threads = chunks < num_threads() ? chunks : num_threads();
  if (threads <= 1 || in_parallel_job() || omp_in_parallel()) {
    fn(begin, end);
    return;
  }
  run_chunks(
      begin, end, grain, static_cast<int>(threads),
      [](const void* ctx, int64_t lo, int64_t hi) { (*static_cast<const Fn*>(ctx))(lo, hi); }, &fn);
}

}  // namespace tessera::kernels::detail
