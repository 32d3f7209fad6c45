// The turns with an idempotency key that run on this replica, so that a retry with
// the same key waits for the first turn's end (an event) instead of polling the
// database, and so that a flood of retries cannot queue without bound.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace aichat::agent {

class RunningTurns {
 public:
  explicit RunningTurns(int max_waiters_per_key = 4) : max_waiters_(max_waiters_per_key) {}

  void Add(int64_t user_id, const std::string& key);
  // Runs `on_end` (on the thread that ends the turn) once the turn with this key
  // ends; returns the waiter's id. NOT_FOUND: no such turn runs here;
  // RESOURCE_EXHAUSTED: too many requests wait for it already.
  absl::StatusOr<uint64_t> Wait(int64_t user_id, const std::string& key,
                                std::function<void()> on_end);
  // Whether the waiter still waits (its on_end has not run).
  bool Waiting(int64_t user_id, const std::string& key, uint64_t waiter);
  // The waiter gave up (its client left, or its deadline passed): its on_end will
  // not run and its place is free. False when on_end ran or runs already.
  bool Forget(int64_t user_id, const std::string& key, uint64_t waiter);
  // The turn ended: its waiters run.
  void Remove(int64_t user_id, const std::string& key);

 private:
  using Key = std::pair<int64_t, std::string>;
  using Waiters = std::vector<std::pair<uint64_t, std::function<void()>>>;
  const int max_waiters_;
  absl::Mutex mu_;
  uint64_t next_waiter_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<Key, Waiters> turns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat::agent
