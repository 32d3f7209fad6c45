// A fixed set of threads for blocking work (libpq calls, password hashing), so
// that gRPC callback reactions never block.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aichat {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> task);
  // Runs `task` on the pool once `delay` has passed (a timer thread hands it
  // over; nothing blocks a worker while waiting). Dropped if the pool is
  // destroyed first.
  void SubmitAfter(absl::Duration delay, std::function<void()> task);
  size_t queued() const;

 private:
  void Run();
  void RunTimers();
  mutable absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  std::thread timer_thread_;
};

}  // namespace aichat
