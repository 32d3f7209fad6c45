// What a replica remembers of the limits, so that refused turns cost little and the
// rate limit holds while usage cannot be reached:
//  * a refusal from usage (rate or budget) is remembered until it can change, and
//    the same user's next turns are refused before anything is read or written;
//  * while usage is unreachable (turns admitted without a reservation), each
//    replica still enforces the user's request rate on its own.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace aichat::agent {

class TurnGate {
 public:
  // RESOURCE_EXHAUSTED when an earlier rate refusal of this user still holds.
  absl::Status Check(int64_t user_id, int32_t requests_per_minute, absl::Time now);
  // Usage refused a turn of this user by its rate; it may be retried from `retry_at`.
  void RateLimited(int64_t user_id, int32_t requests_per_minute, const std::string& message,
                   std::optional<absl::Time> retry_at, absl::Time now);
  // Usage is unreachable: admit within the user's rate on this replica (a sliding
  // minute). RESOURCE_EXHAUSTED beyond it.
  absl::Status AdmitWithoutUsage(int64_t user_id, int32_t requests_per_minute, absl::Time now);

 private:
  struct Refusal {
    absl::Time until;
    int32_t rpm = 0;  // a token with another rate is not bound by it
    std::string message;
  };
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  absl::flat_hash_map<int64_t, Refusal> refused_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, std::deque<absl::Time>> local_ ABSL_GUARDED_BY(mu_);
  absl::Time next_prune_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace aichat::agent
