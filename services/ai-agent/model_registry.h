// The model configurations, cached in memory (they change rarely and every turn
// needs them): resolves what a turn asks for to a configuration and the prices of
// the real model behind it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "services/ai-agent/agent_store.h"

namespace aichat::agent {

struct ResolvedModel {
  ModelRecord config;  // the row asked for (maybe an alias)
  Prices prices;       // of the real model: the row whose name is config.provider_model, if any
};

class ModelRegistry {
 public:
  ModelRegistry(AgentStore* store, absl::Duration ttl = absl::Seconds(2));

  // `requested` empty: the conversation's model, else the default.
  // INVALID_ARGUMENT for an unknown model, FAILED_PRECONDITION for a disabled one.
  absl::StatusOr<ResolvedModel> Resolve(const std::string& requested,
                                        const std::string& conversation_model);
  absl::StatusOr<std::vector<ModelRecord>> List();
  // Forget the cache (after an upsert or delete on this replica).
  void Invalidate();

 private:
  absl::StatusOr<std::shared_ptr<const std::vector<ModelRecord>>> Snapshot();

  AgentStore* store_;
  absl::Duration ttl_;
  absl::Mutex mu_;
  std::shared_ptr<const std::vector<ModelRecord>> models_ ABSL_GUARDED_BY(mu_);
  absl::Time loaded_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace aichat::agent
