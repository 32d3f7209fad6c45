#include "services/user/hash_gate.h"

namespace aichat::user {

std::unique_ptr<HashGate::Permit> HashGate::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (held_ >= max_) {
    return nullptr;
  }
  ++held_;
  return std::make_unique<Permit>(this);
}

int HashGate::in_flight() const {
  absl::MutexLock lock(&mu_);
  return held_;
}

void HashGate::Release() {
  absl::MutexLock lock(&mu_);
  --held_;
}

}  // namespace aichat::user
