#include "services/ai-agent/running_turns.h"

#include "absl/strings/str_cat.h"

namespace aichat::agent {

void RunningTurns::Add(int64_t user_id, const std::string& key) {
  absl::MutexLock lock(&mu_);
  turns_.try_emplace(Key{user_id, key});
}

absl::Status RunningTurns::Wait(int64_t user_id, const std::string& key,
                                std::function<void()> on_end) {
  absl::MutexLock lock(&mu_);
  auto it = turns_.find(Key{user_id, key});
  if (it == turns_.end()) return absl::NotFoundError("not running here");
  if (static_cast<int>(it->second.size()) >= max_waiters_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many requests are waiting for the turn with this idempotency_key (at most ",
        max_waiters_, ")"));
  }
  it->second.push_back(std::move(on_end));
  return absl::OkStatus();
}

void RunningTurns::Remove(int64_t user_id, const std::string& key) {
  std::vector<std::function<void()>> waiters;
  {
    absl::MutexLock lock(&mu_);
    auto it = turns_.find(Key{user_id, key});
    if (it == turns_.end()) return;
    waiters = std::move(it->second);
    turns_.erase(it);
  }
  for (auto& w : waiters) w();
}

}  // namespace aichat::agent
