// The model configurations, cached in memory (they change rarely and every turn
// needs them): resolves what a turn asks for to a configuration and the prices of
// the real model behind it. Once loaded, a lookup never waits on the database:
// a stale snapshot is refreshed in the background (on `refresher`) while it serves.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/worker_pool.h"
#include "services/ai-agent/agent_store.h"

namespace aichat::agent {

struct ResolvedModel {
  ModelRecord config;  // the row asked for (maybe an alias)
  Prices prices;       // of the real model: the row whose name is config.provider_model, if any
};

class ModelRegistry {
 public:
  ModelRegistry(AgentStore* store, WorkerPool* refresher, absl::Duration ttl = absl::Seconds(2));

  // Reads the configuration now (blocking): at start-up and after a change made
  // on this replica.
  absl::Status Load();

  // `requested` empty: the conversation's model, else the default.
  // INVALID_ARGUMENT for an unknown model, FAILED_PRECONDITION for a disabled one.
  // Blocks only if nothing was ever loaded.
  absl::StatusOr<ResolvedModel> Resolve(const std::string& requested,
                                        const std::string& conversation_model);
  absl::StatusOr<std::vector<ModelRecord>> List();
  // The largest context a turn may send to any enabled model (context window less
  // the answer's tokens): what a turn reads before it knows its model.
  int32_t LargestContextBudget();

 private:
  absl::StatusOr<std::shared_ptr<const std::vector<ModelRecord>>> Snapshot();

  AgentStore* store_;
  WorkerPool* refresher_;
  absl::Duration ttl_;
  absl::Mutex mu_;
  std::shared_ptr<const std::vector<ModelRecord>> models_ ABSL_GUARDED_BY(mu_);
  absl::Time loaded_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool refreshing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace aichat::agent
