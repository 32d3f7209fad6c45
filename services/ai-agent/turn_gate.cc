#include "services/ai-agent/turn_gate.h"

#include "absl/strings/str_cat.h"

namespace aichat::agent {
namespace {
constexpr absl::Duration kWindow = absl::Minutes(1);
}  // namespace

absl::Status TurnGate::Check(int64_t user_id, int32_t rpm, absl::Time now) {
  absl::MutexLock lock(&mu_);
  Prune(now);
  auto it = refused_.find(user_id);
  if (it == refused_.end() || it->second.until <= now || it->second.rpm != rpm) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(it->second.message);
}

void TurnGate::RateLimited(int64_t user_id, int32_t rpm, const std::string& message,
                           std::optional<absl::Time> retry_at, absl::Time now) {
  // Never longer than the window: whatever usage says, a minute frees the rate.
  absl::Time until = std::min(retry_at.value_or(now), now + kWindow);
  if (until <= now) return;
  absl::MutexLock lock(&mu_);
  refused_[user_id] = Refusal{until, rpm, message};
}

absl::Status TurnGate::AdmitWithoutUsage(int64_t user_id, int32_t rpm, absl::Time now) {
  absl::MutexLock lock(&mu_);
  Prune(now);
  auto& times = local_[user_id];
  while (!times.empty() && times.front() <= now - kWindow) times.pop_front();
  if (rpm > 0 && static_cast<int32_t>(times.size()) >= rpm) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "rate limit of ", rpm,
        " requests per minute reached (enforced by this replica while the usage service is "
        "unreachable)"));
  }
  times.push_back(now);
  return absl::OkStatus();
}

// Forget what can no longer refuse anything, at most once a second.
void TurnGate::Prune(absl::Time now) {
  if (now < next_prune_) return;
  next_prune_ = now + absl::Seconds(1);
  absl::erase_if(refused_, [now](const auto& kv) { return kv.second.until <= now; });
  absl::erase_if(local_, [now](const auto& kv) {
    return kv.second.empty() || kv.second.back() <= now - kWindow;
  });
}

}  // namespace aichat::agent
