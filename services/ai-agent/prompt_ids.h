// Prompt ids handed out ahead, a block at a time: a turn needs its prompt's id
// before anything is written, so that the user message (in conversation) can name
// the prompt while the prompt row (here) is inserted at the same moment. One read
// of the id sequence per block, off the turn's path while ids are on hand.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/worker_pool.h"
#include "services/ai-agent/agent_store.h"

namespace aichat::agent {

class PromptIds {
 public:
  PromptIds(AgentStore* store, WorkerPool* workers, int block = 64)
      : store_(store), workers_(workers), block_(block) {}

  // An id if one is on hand (never blocks); a refill starts when few are left.
  std::optional<int64_t> TryTake();
  // Waits for a refill when none is on hand: on a worker thread only.
  absl::StatusOr<int64_t> Take();

 private:
  absl::Status Refill();

  AgentStore* store_;
  WorkerPool* workers_;
  const int block_;
  absl::Mutex mu_;
  std::deque<int64_t> ids_ ABSL_GUARDED_BY(mu_);
  bool refilling_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace aichat::agent
