// The one threading primitive of the kernels: every OpenMP region of kernels/ is here.
#pragma once

#include <omp.h>

#include <cstdint>

#include "kernels/kernels.h"

namespace tessera::kernels::detail {

// Calls fn(lo, hi) on disjoint sub-ranges covering [begin, end).
//
// The range is cut into ceil((end - begin) / grain) chunks; thread `i` of `nth` gets one
// contiguous run of chunks (a static schedule). Callers must make each index's result
// independent of how the range is cut (all kernels do: one output element, one owner, a
// reduction order fixed by the problem's sizes), which is what keeps results bit-identical
// for any thread count.
//
// Runs fn(begin, end) on the calling thread when there is a single chunk, when num_threads()
// is 1, or when called from inside a parallel region (no nested parallelism).
//
// Instantiated only with lambdas of an ISA file's anonymous namespace, so every instantiation
// (and the OpenMP outlined function inside it) has internal linkage: no ODR trap.
template <class Fn>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const Fn& fn) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (end - begin + grain - 1) / grain;
  const int64_t threads = chunks < num_threads() ? chunks : num_threads();
  if (threads <= 1 || omp_in_parallel()) {
    fn(begin, end);
    return;
  }
#pragma omp parallel num_threads(static_cast <int>(threads))
  {
    const int64_t tid = omp_get_thread_num();
    const int64_t nth = omp_get_num_threads();
    const int64_t c0 = chunks * tid / nth;
    const int64_t c1 = chunks * (tid + 1) / nth;
    if (c0 < c1) {
      const int64_t lo = begin + c0 * grain;
      const int64_t hi = begin + c1 * grain < end ? begin + c1 * grain : end;
      fn(lo, hi);
    }
  }
}

}  // namespace tessera::kernels::detail
