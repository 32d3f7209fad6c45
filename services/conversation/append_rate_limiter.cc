#include "services/conversation/append_rate_limiter.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace aichat::conversation {
namespace {
// Entries of users whose bucket refilled are dropped at most this often, so the
// map holds about the users active in the last interval x burst.
constexpr absl::Duration kSweepEvery = absl::Minutes(1);
}  // namespace

AppendRateLimiter::AppendRateLimiter(int per_minute, int burst, std::function<absl::Time()> clock)
    : per_minute_(per_minute),
      burst_(std::max(burst, 1)),
      interval_(per_minute > 0 ? absl::Minutes(1) / per_minute : absl::ZeroDuration()),
      tolerance_(interval_ * (burst_ - 1)),
      clock_(std::move(clock)) {}

absl::Status AppendRateLimiter::Admit(int64_t user_id) {
  if (per_minute_ <= 0) return absl::OkStatus();
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  if (now >= next_sweep_) {
    for (auto it = full_at_.begin(); it != full_at_.end();) {
      if (it->second <= now) {
        full_at_.erase(it++);
      } else {
        ++it;
      }
    }
    next_sweep_ = now + kSweepEvery;
  }
  auto [it, inserted] = full_at_.try_emplace(user_id, now);
  const absl::Time full_at = std::max(it->second, now);
  const absl::Time allowed_at = full_at - tolerance_;
  if (now < allowed_at) {
    const int64_t retry_s = absl::ToInt64Seconds(absl::Ceil(allowed_at - now, absl::Seconds(1)));
    return absl::ResourceExhaustedError(absl::StrCat("too many messages: users may append ",
                                                     per_minute_, " a minute (", burst_,
                                                     " at once); retry in ", retry_s, " s"));
  }
  it->second = full_at + interval_;
  return absl::OkStatus();
}

}  // namespace aichat::conversation
