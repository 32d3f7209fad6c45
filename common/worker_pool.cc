#include "common/worker_pool.h"

#include "absl/time/clock.h"

namespace aichat {

WorkerPool::WorkerPool(int threads) {
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { Run(); });
  }
  timer_thread_ = std::thread([this] { RunTimers(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  timer_thread_.join();
  for (auto& t : threads_) {
    t.join();
  }
}

void WorkerPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

void WorkerPool::SubmitAfter(absl::Duration delay, std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  timers_.emplace(absl::Now() + delay, std::move(task));
}

void WorkerPool::RunTimers() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    absl::Time next = timers_.empty() ? absl::Now() + absl::Seconds(1) : timers_.begin()->first;
    auto wake = [this, next]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || (!timers_.empty() && timers_.begin()->first < next);
    };
    mu_.AwaitWithDeadline(absl::Condition(&wake), next);
    absl::Time now = absl::Now();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      tasks_.push_back(std::move(timers_.begin()->second));
      timers_.erase(timers_.begin());
    }
  }
}

size_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return tasks_.size();
}

void WorkerPool::Run() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !tasks_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace aichat
