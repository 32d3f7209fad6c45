// A per-user limit on the messages users append themselves, kept in memory by
// each replica (so N replicas allow up to N times the rate; it bounds what one
// client can make one replica and its database do, not a quota). Services are
// not limited here: the ai-agent's turns have their own rate in the usage service.
//
// The rule is GCRA, a token bucket kept as one time per user: `per_minute`
// appends a minute on average, up to `burst` at once.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aichat::conversation {

class AppendRateLimiter {
 public:
  // per_minute = 0 admits everything.
  AppendRateLimiter(int per_minute, int burst, std::function<absl::Time()> clock = &absl::Now);

  // Counts an append of `user_id`: OK, or RESOURCE_EXHAUSTED saying when to retry.
  absl::Status Admit(int64_t user_id);

 private:
  const int per_minute_;
  const int burst_;
  const absl::Duration interval_;   // between appends at the steady rate
  const absl::Duration tolerance_;  // how far ahead of the steady rate a burst may run
  const std::function<absl::Time()> clock_;

  absl::Mutex mu_;
  // When the user's bucket is full again ("theoretical arrival time"); users
  // whose bucket is full have no entry once a sweep has passed.
  absl::flat_hash_map<int64_t, absl::Time> full_at_ ABSL_GUARDED_BY(mu_);
  absl::Time next_sweep_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat::conversation
