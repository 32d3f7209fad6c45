#include "services/ai-agent/model_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace aichat::agent {

ModelRegistry::ModelRegistry(AgentStore* store, absl::Duration ttl) : store_(store), ttl_(ttl) {}

void ModelRegistry::Invalidate() {
  absl::MutexLock lock(&mu_);
  loaded_at_ = absl::InfinitePast();
}

absl::StatusOr<std::shared_ptr<const std::vector<ModelRecord>>> ModelRegistry::Snapshot() {
  {
    absl::MutexLock lock(&mu_);
    if (models_ != nullptr && absl::Now() - loaded_at_ < ttl_) return models_;
  }
  auto list = store_->ListModels();
  if (!list.ok()) {
    // Serve the last known configuration while the database is unreachable.
    absl::MutexLock lock(&mu_);
    if (models_ != nullptr) return models_;
    return list.status();
  }
  auto fresh = std::make_shared<const std::vector<ModelRecord>>(*std::move(list));
  absl::MutexLock lock(&mu_);
  models_ = fresh;
  loaded_at_ = absl::Now();
  return fresh;
}

absl::StatusOr<std::vector<ModelRecord>> ModelRegistry::List() {
  auto snap = Snapshot();
  if (!snap.ok()) return snap.status();
  return **snap;
}

absl::StatusOr<ResolvedModel> ModelRegistry::Resolve(const std::string& requested,
                                                     const std::string& conversation_model) {
  auto snap = Snapshot();
  if (!snap.ok()) return snap.status();
  const auto& models = **snap;
  std::string name = !requested.empty() ? requested : conversation_model;
  const ModelRecord* found = nullptr;
  for (const auto& m : models) {
    if (name.empty() ? m.is_default : m.name == name) {
      found = &m;
      break;
    }
  }
  if (found == nullptr) {
    if (name.empty()) {
      return absl::FailedPreconditionError("no default model is configured");
    }
    return absl::InvalidArgumentError(absl::StrCat("model: unknown model \"", name, "\""));
  }
  if (!found->enabled) {
    return absl::FailedPreconditionError(absl::StrCat("model \"", found->name, "\" is disabled"));
  }
  ResolvedModel r{*found, found->prices};
  // An alias is priced as the real model it points to, when that is configured too.
  if (found->provider_model != found->name) {
    for (const auto& m : models) {
      if (m.name == found->provider_model) {
        r.prices = m.prices;
        break;
      }
    }
  }
  return r;
}

}  // namespace aichat::agent
