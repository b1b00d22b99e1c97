// The CPU thread pool every CPU kernel uses.
//
// parallel_for(n, fn) splits [0, n) into contiguous chunks and runs fn(begin, end) on the pool's
// workers and on the calling thread, then returns when all chunks are done. Threads take chunks
// from a shared counter, 4 per thread by default; a caller whose items cost about the same and
// whose threads may start late (a worker waking from sleep) asks for more, finer chunks, so that
// the last chunk taken leaves the other threads less time to wait. Decode calls it a few
// hundred times per token, so a job is published with one atomic generation bump and workers spin
// briefly before sleeping: a wake-up through a condition variable alone costs tens of
// microseconds, a large share of a small GEMV. A parallel_for issued from inside a worker runs
// serially on that worker (no nested fan-out, no deadlock).
//
// The thread count is settable (set_num_threads, or DEEPSEEK_NUM_THREADS in the environment),
// at most kMaxThreads (core/limits.hpp); the default is std::thread::hardware_concurrency().
#pragma once

#include "deepseek/core/checked.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/limits.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace deepseek {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return num_threads_; }

  // fn(begin, end) over [0, n) in chunks of at least `grain` items, at most 4 per thread or
  // max_chunks, whichever is more.
  template <class F>
  void parallel_for(int64_t n, F&& fn, int64_t grain = 1, int64_t max_chunks = 0) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    max_chunks = std::max<int64_t>(max_chunks, int64_t(num_threads_) * 4);
    int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, max_chunks);
    if (num_threads_ == 1 || chunks <= 1 || in_worker()) {
      fn(int64_t(0), n);
      return;
    }
    std::lock_guard<std::mutex> submit(submit_mutex_);  // one job at a time from any thread
    Job job;
    job.n = n;
    job.chunks = chunks;
    job.ctx = &fn;
    job.call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<F>*>(ctx))(b, e); };
    job.remaining.store(chunks, std::memory_order_relaxed);
    job.next.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    in_worker() = true;  // a parallel_for issued by fn on this thread runs inline
    run_chunks(job);
    in_worker() = false;
    while (job.remaining.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
    // Workers that saw this generation hold no reference once remaining hits 0 and they have
    // left run_chunks; active_ counts them so the job's stack frame outlives every access.
    while (active_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

 private:
  struct Job {
    int64_t n = 0, chunks = 0;
    void* ctx = nullptr;
    void (*call)(void*, int64_t, int64_t) = nullptr;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> remaining{0};
  };

  // True on pool workers, and on a submitting thread while it runs chunks.
  static bool& in_worker() {
    static thread_local bool flag = false;
    return flag;
  }

  static void run_chunks(Job& job) {
    for (;;) {
      const int64_t c = job.next.fetch_add(1, std::memory_order_relaxed);
      if (c >= job.chunks) return;
      const int64_t b = job.n * c / job.chunks, e = job.n * (c + 1) / job.chunks;
      job.call(job.ctx, b, e);
      job.remaining.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void worker_loop() {
    in_worker() = true;
    uint64_t seen = 0;
    for (;;) {
      // Spin a little for the next job before sleeping.
      for (int i = 0; i < 20000 && generation_.load(std::memory_order_acquire) == seen; ++i) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        seen = generation_.load(std::memory_order_acquire);
        if (stop_) return;
        job = job_;
        if (job) active_.fetch_add(1, std::memory_order_acq_rel);
      }
      if (job) {
        run_chunks(*job);
        active_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_, submit_mutex_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0};
  Job* job_ = nullptr;
  bool stop_ = false;
};

namespace detail {
inline int default_thread_count() {
  if (const char* env = std::getenv("DEEPSEEK_NUM_THREADS"))
    return int(parse_integer(env, 1, kMaxThreads, "DEEPSEEK_NUM_THREADS"));
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}
inline std::unique_ptr<ThreadPool>& pool_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
inline std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace detail

inline ThreadPool& thread_pool() {
  std::lock_guard<std::mutex> lock(detail::pool_mutex());
  auto& p = detail::pool_slot();
  if (!p) p = std::make_unique<ThreadPool>(detail::default_thread_count());
  return *p;
}

// Replaces the pool; call it while no parallel work is running.
inline void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw Error("thread count " + std::to_string(n) + " is out of range [1, " + std::to_string(kMaxThreads) + "] (kMaxThreads)");
  std::lock_guard<std::mutex> lock(detail::pool_mutex());
  detail::pool_slot() = std::make_unique<ThreadPool>(n);
}
inline int num_threads() { return thread_pool().size(); }

template <class F>
void parallel_for(int64_t n, F&& fn, int64_t grain = 1, int64_t max_chunks = 0) {
  thread_pool().parallel_for(n, std::forward<F>(fn), grain, max_chunks);
}

}  // namespace deepseek
