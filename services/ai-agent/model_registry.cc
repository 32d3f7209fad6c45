#include "services/ai-agent/model_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace aichat::agent {

ModelRegistry::ModelRegistry(AgentStore* store, WorkerPool* refresher, absl::Duration ttl)
    : store_(store), refresher_(refresher), ttl_(ttl) {}

absl::Status ModelRegistry::Load() {
  auto list = store_->ListModels();
  absl::MutexLock lock(&mu_);
  refreshing_ = false;
  // On failure the last known configuration keeps serving.
  if (!list.ok()) return list.status();
  models_ = std::make_shared<const std::vector<ModelRecord>>(*std::move(list));
  loaded_at_ = absl::Now();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const std::vector<ModelRecord>>> ModelRegistry::Snapshot() {
  {
    absl::MutexLock lock(&mu_);
    if (models_ != nullptr) {
      if (absl::Now() - loaded_at_ >= ttl_ && !refreshing_ && refresher_ != nullptr) {
        refreshing_ = true;
        refresher_->Submit([this] { (void)Load(); });
      }
      return models_;
    }
  }
  if (auto st = Load(); !st.ok()) return st;
  absl::MutexLock lock(&mu_);
  return models_;
}

int32_t ModelRegistry::LargestContextBudget() {
  auto snap = Snapshot();
  int32_t largest = 1;
  if (!snap.ok()) return largest;
  for (const auto& m : **snap) {
    if (m.enabled) largest = std::max(largest, m.context_window - m.max_output_tokens);
  }
  return largest;
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
