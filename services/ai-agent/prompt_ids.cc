#include "services/ai-agent/prompt_ids.h"

namespace aichat::agent {

std::optional<int64_t> PromptIds::TryTake() {
  absl::MutexLock lock(&mu_);
  if (ids_.size() <= static_cast<size_t>(block_ / 2) && !refilling_) {
    refilling_ = true;
    workers_->Submit([this] {
      (void)Refill();  // a failure leaves the next turn to try again
    });
  }
  if (ids_.empty()) return std::nullopt;
  int64_t id = ids_.front();
  ids_.pop_front();
  return id;
}

absl::StatusOr<int64_t> PromptIds::Take() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto id = TryTake(); id.has_value()) return *id;
    {
      absl::MutexLock lock(&mu_);
      refilling_ = true;
    }
    if (auto st = Refill(); !st.ok()) return st;
  }
  return absl::UnavailableError("no prompt id available");
}

absl::Status PromptIds::Refill() {
  auto ids = store_->ReservePromptIds(block_);
  absl::MutexLock lock(&mu_);
  refilling_ = false;
  if (!ids.ok()) return ids.status();
  ids_.insert(ids_.end(), ids->begin(), ids->end());
  return absl::OkStatus();
}

}  // namespace aichat::agent
