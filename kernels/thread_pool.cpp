// The kernels' thread pool: the engine behind detail::parallel_for (kernels/parallel.hpp).
//
// Why not an OpenMP static split: a fork/join region that hands each thread a fixed share waits
// for its slowest thread. On a machine shared with other busy processes one of our threads is
// often descheduled for a whole time slice (milliseconds), and every region then takes that
// long: measured on 2 cores with one spinning process, 2 threads ran 3.3x slower than idle and
// slower than 1 thread. Here, as in ONNX Runtime's pool, work is cut into many chunks that
// threads claim as they become free:
//   * each participant starts on its own contiguous share of the chunks (the cache locality of a
//     static split when every thread runs), then takes what is left of the others' shares;
//   * the caller works too, and waits only for chunks that were claimed: a worker that wakes up
//     late finds nothing left and does not hold the region back;
//   * workers spin for a short while between regions (the gaps of a forward pass are
//     microseconds), then sleep on a futex;
//   * a worker that the OS descheduled while it held a chunk still holds the caller back until
//     it runs again (a time slice of whatever took its core: milliseconds, measured as a whole
//     forward pass at 2 threads 2-4x slower than at 1 on a 2-core VM). The caller times its own
//     chunks and its wait for the claimed ones, and keeps a balance over a window of jobs: what
//     the caller alone would have taken (all chunks at its pace) minus what the jobs took. A
//     single stall is tolerated while the window's earlier jobs paid for it (on a shared core
//     threads still win on average); when the balance falls below -2 ms, or ends a 50 ms window
//     negative, the pool backs off: jobs run on the caller alone for a while (10 ms, doubling on
//     every failed retry up to 0.5 s), then threads are tried again. On a machine where the
//     other cores are taken, N threads then cost about what one does; where they are free,
//     nothing changes. TESSERA_POOL_BACKOFF=0 turns this off.
// What a chunk computes never depends on which thread runs it (parallel.hpp's contract), so
// results stay bit-identical for any thread count and any interleaving.
//
// One job at a time: a parallel_for from a second application thread while the pool is busy runs
// on its own thread (no oversubscription of the cores by concurrent callers).
#include <immintrin.h>  // _mm_pause (SSE2: baseline x86-64)
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/internal.hpp"
#include "kernels/kernels.h"

namespace tessera::kernels::detail {
namespace {

// How long an idle worker spins before it sleeps: long enough to bridge the serial code between
// two kernels of a forward pass (a few microseconds), short enough not to burn a core another
// process could use when the engine is idle.
constexpr auto kSpin = std::chrono::microseconds(100);
// Spinning threads call sched_yield() every this many pauses. On an idle machine it returns at
// once (~1 us); when our threads share a core with each other or with another process (a busy
// machine: with autogroup scheduling the kernel often gives the whole process one core), it hands
// the core to the thread that has work instead of burning the rest of a time slice.
constexpr int kPausesPerYield = 32;

// Set while this thread runs chunks of a job (worker or caller): nested calls run serially.
thread_local bool t_in_job = false;

using Clock = std::chrono::steady_clock;

// Back-off when threads lost time against the caller alone (see the top). Per threaded job the
// balance gains (chunks at the caller's mean pace) - (the job's wall time); a worker that is
// merely slow, or descheduled for less than it contributes, keeps its place. The pool backs off
// when the balance drops below -kLossMax, or when a window of kWindow wall time ends with it
// negative; a window that ends positive starts the next at zero and resets the back-off step.
constexpr auto kLossMax = std::chrono::milliseconds(2);
constexpr auto kWindow = std::chrono::milliseconds(50);
constexpr auto kBackoffFirst = std::chrono::milliseconds(10);
constexpr auto kBackoffMax = std::chrono::milliseconds(500);

bool backoff_enabled() {
  const char* env = std::getenv("TESSERA_POOL_BACKOFF");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(busy_);
      stop_.store(true, std::memory_order_seq_cst);
      generation_.fetch_add(1, std::memory_order_seq_cst);
      generation_.notify_all();
    }
    for (std::thread& t : workers_) t.join();
  }

  // Runs the job with `threads` participants (the caller and threads - 1 workers), or serially
  // when another job holds the pool.
  void run(int64_t begin, int64_t end, int64_t grain, int threads, ChunkFn fn, const void* ctx) {
    std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
    if (!lock.owns_lock()) {
      t_in_job = true;
      fn(ctx, begin, end);
      t_in_job = false;
      return;
    }
    if (backoff_ && Clock::now() < solo_until_) {  // backing off: the caller alone
      t_in_job = true;
      fn(ctx, begin, end);
      t_in_job = false;
      return;
    }
    grow(threads - 1);

    // Publish the job. No worker reads these fields now: users_ is 0 and open_ is false.
    begin_ = begin;
    end_ = end;
    grain_ = grain;
    fn_ = fn;
    ctx_ = ctx;
    chunks_ = (end - begin + grain - 1) / grain;
    participants_ = threads;
    for (int p = 0; p < threads; ++p) {
      shares_[p].next.store(chunks_ * p / threads, std::memory_order_relaxed);
      shares_[p].end = chunks_ * (p + 1) / threads;
    }
    done_.store(0, std::memory_order_relaxed);
    open_.store(true, std::memory_order_seq_cst);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();

    const Clock::time_point t0 = Clock::now();
    t_in_job = true;
    const int64_t own = work(0);
    t_in_job = false;

    // Every chunk was claimed; wait for the claimed ones to finish.
    const Clock::time_point t1 = Clock::now();
    wait_until([&] { return done_.load(std::memory_order_acquire) == chunks_; });
    if (backoff_) adapt(t0, t1, Clock::now(), own);
    // Close the job, then wait for the workers that entered it to leave (they find no chunk).
    open_.store(false, std::memory_order_seq_cst);
    wait_until([&] { return users_.load(std::memory_order_seq_cst) == 0; });
  }

  bool backing_off() {
    std::lock_guard<std::mutex> lock(busy_);
    return backoff_ && Clock::now() < solo_until_;
  }

  void set_backoff_first(Clock::duration first) {
    std::lock_guard<std::mutex> lock(busy_);
    backoff_first_ = backoff_step_ = first;
    solo_until_ = Clock::time_point{};
    balance_ = window_wall_ = Clock::duration::zero();
  }

 private:
  struct alignas(64) Share {
    std::atomic<int64_t> next{0};  // next chunk index of this participant's share
    int64_t end = 0;               // one past its last chunk
  };

  template <class Pred>
  static void wait_until(const Pred& pred) {
    for (int spins = 1; !pred(); ++spins) {
      _mm_pause();
      if (spins % kPausesPerYield == 0) sched_yield();  // a descheduled worker holds a chunk
    }
  }

  // After a threaded job: the caller ran `own` chunks in [t0, t1), then waited until t2.
  void adapt(Clock::time_point t0, Clock::time_point t1, Clock::time_point t2, int64_t own) {
    // The caller alone: all chunks at its mean pace. A caller that ran no chunk (a worker took
    // them all) counts the job as even.
    const Clock::duration wall = t2 - t0;
    const Clock::duration solo = own > 0 ? (t1 - t0) * chunks_ / own : wall;
    if (window_wall_ == Clock::duration::zero()) window_start_ = t0;
    balance_ += solo - wall;
    window_wall_ += wall;
    const bool window_over = t2 - window_start_ >= kWindow;
    if (balance_ < -Clock::duration(kLossMax) || (window_over && balance_ < Clock::duration(0))) {
      solo_until_ = t2 + backoff_step_;
      backoff_step_ = std::min<Clock::duration>(2 * backoff_step_, kBackoffMax);
      balance_ = window_wall_ = Clock::duration::zero();
    } else if (window_over) {
      backoff_step_ = backoff_first_;
      balance_ = window_wall_ = Clock::duration::zero();
    }
  }

  // Claims and runs chunks: participant p's own share first, then the others'. Returns how many.
  int64_t work(int p) {
    const int n = participants_;
    int64_t ran = 0;
    for (int i = 0; i < n; ++i) {
      Share& s = shares_[(p + i) % n];
      for (;;) {
        const int64_t c = s.next.fetch_add(1, std::memory_order_relaxed);
        if (c >= s.end) break;
        const int64_t lo = begin_ + c * grain_;
        const int64_t hi = lo + grain_ < end_ ? lo + grain_ : end_;
        fn_(ctx_, lo, hi);
        done_.fetch_add(1, std::memory_order_release);
        ++ran;
      }
    }
    return ran;
  }

  void grow(int want) {
    while (static_cast<int>(workers_.size()) < want) {
      const int index = static_cast<int>(workers_.size()) + 1;  // participant index
      const uint32_t seen = generation_.load(std::memory_order_seq_cst);
      workers_.emplace_back([this, index, seen] { worker_loop(index, seen); });
    }
  }

  void worker_loop(int index, uint32_t seen) {
    for (;;) {
      // Wait for a new generation: spin, then sleep.
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 1; generation_.load(std::memory_order_acquire) == seen; ++i) {
        _mm_pause();
        if (i % kPausesPerYield != 0) continue;
        sched_yield();
        if (std::chrono::steady_clock::now() > spin_until) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          generation_.wait(seen, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_acquire)) return;
      // Enter the job, unless it closed already (Dekker with run(): both sides seq_cst).
      users_.fetch_add(1, std::memory_order_seq_cst);
      if (open_.load(std::memory_order_seq_cst) &&
          generation_.load(std::memory_order_seq_cst) == seen && index < participants_) {
        t_in_job = true;
        work(index);
        t_in_job = false;
      }
      users_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  std::mutex busy_;  // held by the caller for the whole job
  std::vector<std::thread> workers_;
  std::atomic<uint32_t> generation_{0};  // bumped per job; workers sleep on it (futex)
  std::atomic<int> sleepers_{0};
  std::atomic<int> users_{0};  // workers inside the current job
  std::atomic<bool> open_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> done_{0};  // chunks finished

  // The current job (written only while no worker can read it).
  int64_t begin_ = 0, end_ = 0, grain_ = 1, chunks_ = 0;
  ChunkFn fn_ = nullptr;
  const void* ctx_ = nullptr;
  int participants_ = 0;

  // Back-off state (read and written only by the caller holding busy_).
  const bool backoff_ = backoff_enabled();
  Clock::time_point solo_until_{};
  Clock::duration backoff_first_ = kBackoffFirst;
  Clock::duration backoff_step_ = kBackoffFirst;
  Clock::duration balance_{0};      // solo estimate - wall, over the current window
  Clock::duration window_wall_{0};  // wall time of the window's threaded jobs
  Clock::time_point window_start_{};
  std::unique_ptr<Share[]> shares_{new Share[kMaxThreads]};
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

bool pool_backing_off() {
  return pool().backing_off();
}

void set_pool_backoff_first_us(int64_t us) {
  pool().set_backoff_first(std::chrono::microseconds(us));
}

bool in_parallel_job() {
  return t_in_job;
}

void run_chunks(int64_t begin, int64_t end, int64_t grain, int threads, ChunkFn fn,
                const void* ctx) {
  pool().run(begin, end, grain, threads < kMaxThreads ? threads : kMaxThreads, fn, ctx);
}

}  // namespace tessera::kernels::detail
