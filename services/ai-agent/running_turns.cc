#include "services/ai-agent/running_turns.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace aichat::agent {

void RunningTurns::Add(int64_t user_id, const std::string& key) {
  absl::MutexLock lock(&mu_);
  turns_.try_emplace(Key{user_id, key});
}

absl::StatusOr<uint64_t> RunningTurns::Wait(int64_t user_id, const std::string& key,
                                            std::function<void()> on_end) {
  absl::MutexLock lock(&mu_);
  auto it = turns_.find(Key{user_id, key});
  if (it == turns_.end()) return absl::NotFoundError("not running here");
  if (static_cast<int>(it->second.size()) >= max_waiters_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many requests are waiting for the turn with this idempotency_key (at most ",
        max_waiters_, ")"));
  }
  const uint64_t id = next_waiter_++;
  it->second.emplace_back(id, std::move(on_end));
  return id;
}

bool RunningTurns::Waiting(int64_t user_id, const std::string& key, uint64_t waiter) {
  absl::MutexLock lock(&mu_);
  auto it = turns_.find(Key{user_id, key});
  if (it == turns_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(),
                     [waiter](const auto& w) { return w.first == waiter; });
}

bool RunningTurns::Forget(int64_t user_id, const std::string& key, uint64_t waiter) {
  absl::MutexLock lock(&mu_);
  auto it = turns_.find(Key{user_id, key});
  if (it == turns_.end()) return false;
  return std::erase_if(it->second, [waiter](const auto& w) { return w.first == waiter; }) > 0;
}

void RunningTurns::Remove(int64_t user_id, const std::string& key) {
  Waiters waiters;
  {
    absl::MutexLock lock(&mu_);
    auto it = turns_.find(Key{user_id, key});
    if (it == turns_.end()) return;
    waiters = std::move(it->second);
    turns_.erase(it);
  }
  for (auto& w : waiters) w.second();
}

}  // namespace aichat::agent
